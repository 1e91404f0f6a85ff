"""The recording gateway: every agent an eval runs (the built-in one, Claude Code, aider, ...) talks to the engine
through it, and every request it makes becomes a `turn` event of its task's trace.

It is the router (`route.server`) with one upstream, the engine, and sessions: a task attempt opens one and
hands its agent base URLs under `/t/TOKEN/` (OpenAI: `.../t/TOKEN/v1`, Anthropic: `.../t/TOKEN`). The agent
gets the engine's bytes as the engine sent them (the one change: a usage chunk the gateway asks a server for,
which the agent did not ask for, is kept from it); the gateway keeps each reply's head and tail and reads the
tokens from the engine's own usage/timings (`route.record`). Records are written to the store by a thread of
their own, off the request path.
"""

from __future__ import annotations

import logging
import queue
import secrets
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from rigbench.route import record as rec
from rigbench.route.config import RouteConfig, Upstream
from rigbench.route.server import Background

log = logging.getLogger("rigbench.route")
Writer = Callable[[str, dict, float], None]   # (kind, data, seconds into the task): a task trace's event writer


class Session:
    """One task attempt's traffic: its turns in the order they ended, and when the last reply ended."""

    def __init__(self, token: str, write: Writer, t0: float):
        self.token, self.write, self.t0 = token, write, t0
        self.turns: list[rec.Turn] = []
        self.last_end = t0
        self.inflight = 0
        self.pending: dict[int, rec.Turn] = {}   # model requests sent on and not answered yet
        self.closed = False

    def times(self, arrived: float) -> dict:
        """The start of a turn: when it arrived in the task, and how long since the last reply (or the start)."""
        self.inflight += 1
        return {"sent_t": round(arrived - self.t0, 4), "gap_s": round(max(0.0, arrived - self.last_end), 4),
                "seconds": 0.0}

    @property
    def model_turns(self) -> list[rec.Turn]:
        return [t for t in self.turns if t.generates]

    def totals(self) -> tuple[int, int, int]:
        """(turns, prompt tokens, output tokens) over the requests that asked the model for a reply."""
        turns = self.model_turns
        return (len(turns), sum(t.prompt_tokens or 0 for t in turns), sum(t.output_tokens or 0 for t in turns))

    def blame(self, agent_reads_json: bool) -> str | None:
        """Why the harness, not the model, is to blame for a task that was not solved: the agent's last request to
        the model failed (a server error, a prompt over the context, a broken stream), or, for an agent that may
        not read it, the engine answered streamed requests with a JSON body."""
        turns = self.model_turns
        if turns and turns[-1].fault:
            n = sum(1 for t in turns if t.fault)
            return turns[-1].fault + (f" ({n} of {len(turns)} requests failed)" if len(turns) > 1 else "")
        odd = [t for t in turns if t.anomaly]
        if odd and not agent_reads_json:
            return f"{odd[0].anomaly} ({len(odd)} of {len(turns)} requests)"
        return None


class Gateway:
    """A recording gateway in front of one engine, serving from a thread; `open()` a session per task."""

    def __init__(self, engine_url: str, api_key: str | None = None, host: str = "127.0.0.1",
                 log_dir: Path = Path(".rigbench/logs")):
        base = engine_url.rstrip("/").removesuffix("/v1")
        self.engine = base
        self.n_ctx, llama = _llama_props(base, api_key)
        upstream = Upstream(url=base, api_key=api_key if api_key and api_key != "rigbench" else None,
                            anthropic=speaks_messages(base), usage_in_stream=llama)
        cfg = RouteConfig(host=host, port=0, default="engine", db="none", log_requests=False,
                          upstreams={"engine": upstream})
        self.server = Background(cfg, log_dir)
        self.server.router.gateway = self
        self.sessions: dict[str, Session] = {}
        self._writes: queue.Queue = queue.Queue()
        self._writer = threading.Thread(target=self._write_loop, daemon=True, name="gateway-writer")

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> Gateway:
        self._writer.start()
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()
        self._writes.put(None)
        self._writer.join(30)

    def __enter__(self) -> Gateway:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- sessions ----
    def open(self, write: Writer, t0: float | None = None) -> Session:
        s = Session(secrets.token_urlsafe(12), write, time.monotonic() if t0 is None else t0)
        self.sessions[s.token] = s
        return s

    def base(self, s: Session) -> str:
        """The base URL an agent is given for its session (OpenAI clients add /v1, or are given it with it)."""
        return f"{self.url}/t/{s.token}"

    def close(self, s: Session, wait: float = 5.0) -> Session:
        """End a session once its requests in flight are recorded (an agent can exit while the gateway is still
        closing its last reply) and every record is written."""
        deadline = time.monotonic() + wait
        while s.inflight > 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        self.sessions.pop(s.token, None)
        s.closed = True
        now = time.monotonic()
        for turn in list(s.pending.values()):   # cut off by the time limit or the agent's exit: no reply to read
            # not a fault: a task out of time while the model works is the model's (or the rig's) timeout; the
            # tokens the server computed for it are unknown
            turn.client_left, turn.seconds = True, round(now - s.t0 - turn.sent_t, 4)
            s.turns.append(turn)
            self._writes.put((s, turn))
        s.pending.clear()
        self._writes.join()
        return s

    # ---- records (called on the router's event loop) ----
    def record(self, s: Session, turn: rec.Turn, *, head: bytes, tail: bytes, whole: bytes | None,
               content_type: str, events: int, error: str | None, translated: bool = False) -> None:
        s.inflight = max(0, s.inflight - 1)
        s.pending.pop(id(turn), None)
        if s.closed:        # answered after its task ended: recorded as cut off already
            return
        rec.fill(turn, head=head, tail=tail, whole=whole, content_type=content_type, events=events,
                 transport_error=error, translated=translated)
        s.last_end = max(s.last_end, s.t0 + turn.sent_t + turn.seconds)
        s.turns.append(turn)
        self._writes.put((s, turn))

    def _write_loop(self) -> None:
        while True:
            item = self._writes.get()
            try:
                if item is None:
                    return
                s, turn = item
                s.write("turn", turn.model_dump(exclude_none=True), round(turn.sent_t + turn.seconds, 4))
            except Exception:      # a store that refuses one record must not stop the others
                log.exception("gateway: a turn could not be stored")
            finally:
                self._writes.task_done()


_speaks: dict[str, bool] = {}


def speaks_messages(base: str) -> bool:
    """Whether the server at `base` has a /v1/messages route: an empty request is refused as bad (400/422)
    rather than not found (404/405). An engine's answer is kept, so it is asked once, not once per task."""
    if base in _speaks:
        return _speaks[base]
    try:
        r = httpx.post(f"{base}/v1/messages", json={}, timeout=10)
    except httpx.HTTPError:
        return False  # not answering: translate (asked again next time)
    _speaks[base] = r.status_code not in (404, 405)
    return _speaks[base]


def _llama_props(base: str, api_key: str | None) -> tuple[int | None, bool]:
    """(the server's context per slot, whether it is llama-server) from llama-server's /props; (None, False) for
    a server without it."""
    try:
        r = httpx.get(base + "/props", timeout=5, headers={"Authorization": f"Bearer {api_key or 'rigbench'}"})
        settings = r.json()["default_generation_settings"]
        return int(settings["n_ctx"]), True
    except (httpx.HTTPError, KeyError, TypeError, ValueError):
        return None, False
