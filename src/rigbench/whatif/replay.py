"""The measured twin of `predict`: a stored run's turns sent, shape for shape, to a live server.

Each turn is a completion request whose prompt is token ids of real code: the tokens it shares with what the
server held (the recorded shared prefix: its previous prompt and reply) are those very tokens, the rest are new,
so a prefix cache reuses exactly what it reused for the agent. The output length is forced (`max_tokens` with
`ignore_eos`, `min_tokens` for vLLM), turns go in the recorded order, and the recorded tool time is waited
out between them (or, with `idle=False`, added without waiting). Every turn is stored as it finishes.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
from pydantic import BaseModel

from rigbench import store
from rigbench.bench.prompts import ServerUnreachable, Tokenizer, source_text
from rigbench.errors import RigbenchError
from rigbench.monitor import recorded
from rigbench.whatif.trace import RunTrace, TaskTrace


class ReplayError(RigbenchError):
    pass


class TurnMeasure(BaseModel):
    prompt_tokens: int
    sent_shared: int                  # tokens sent that repeat the previous prompt's start
    cached_tokens: int | None         # what the server says it reused
    output_tokens: int
    asked_output: int
    e2e_s: float
    prompt_ms: float | None = None    # the server's own timings, when it reports them
    predicted_ms: float | None = None
    tool_s: float


class TaskMeasure(BaseModel):
    task: str
    turns: list[TurnMeasure]
    model_s: float
    tools_s: float
    agent_s: float                    # model + tools (waited out, or added with --no-idle)
    short_outputs: int = 0            # turns where the server stopped before the forced length


class ReplayResult(BaseModel):
    run: int                          # the replay's own run id in the store
    source_run: int
    url: str
    idle: bool
    tasks: list[TaskMeasure]


class _Tokens:
    """Fresh token ids of real code, from the server's own tokenizer."""

    def __init__(self, tok: Tokenizer, seed: int):
        self.tok, self.seed, self.pool, self.pos = tok, seed, [], 0

    def take(self, n: int) -> list[int]:
        while len(self.pool) - self.pos < n:
            self.seed += 1
            ids = self.tok.encode(source_text(max(16_000, 4 * n), self.seed))
            if not ids:
                raise ReplayError("the server has no /tokenize endpoint (llama-server and vLLM have one); replay "
                                  "needs it to send prompts of exact length")
            self.pool += ids
        out = self.pool[self.pos:self.pos + n]
        self.pos += n
        return out


def server_context(client: httpx.Client, base: str) -> int | None:
    """llama-server's context per slot from /props (None for a server that does not say)."""
    try:
        r = client.get(base + "/props")
        if r.status_code == 200:
            s = r.json().get("default_generation_settings", {})
            return s.get("n_ctx") or None
    except httpx.HTTPError:
        pass
    return None


def _check(trace: RunTrace, n_ctx: int | None) -> None:
    need = max((t.prompt_tokens + t.output_tokens for task in trace.tasks for t in task.turns), default=0)
    if n_ctx and need > n_ctx:
        raise ReplayError(f"the server holds {n_ctx:,} tokens per slot but run {trace.run} needs {need:,} "
                          f"(longest prompt + output); restart it with a larger -c (and -np 1)")


class _Server:
    """One turn at a time: llama-server's own /completion (it returns the generated token ids, so the next prompt can
    repeat the reply exactly), else the OpenAI /v1/completions (vLLM), whose reply text is tokenized back."""

    def __init__(self, client: httpx.Client, base: str, model: str, tok: Tokenizer):
        self.client, self.base, self.model, self.tok, self.native = client, base, model, tok, True

    def _post(self, path: str, body: dict) -> httpx.Response:
        try:
            return self.client.post(self.base + path, json=body)
        except httpx.HTTPError as e:
            raise ReplayError(f"the server stopped answering mid-replay ({type(e).__name__}: {e}); finished tasks "
                              f"are stored") from None

    def send(self, prompt: list[int], output: int) -> dict:
        """{e2e, prompt_tokens, output_tokens, reply (token ids), timings} of one forced-length completion."""
        t0 = time.monotonic()
        if self.native:
            r = self._post("/completion", {"prompt": prompt, "n_predict": output, "ignore_eos": True,
                                           "cache_prompt": True, "temperature": 0.0, "return_tokens": True,
                                           "stream": False})
            if r.status_code == 404:
                self.native = False
                return self.send(prompt, output)
        else:
            r = self._post("/v1/completions", {"model": self.model, "prompt": prompt, "max_tokens": output,
                                               "temperature": 0.0, "ignore_eos": True, "min_tokens": output,
                                               "stream": False})
        e2e = time.monotonic() - t0
        if r.status_code != 200:
            raise ReplayError(f"the server refused a turn of {len(prompt):,} prompt tokens: HTTP {r.status_code} "
                              f"{r.text[:200]}")
        d = r.json()
        if self.native:
            reply = d.get("tokens") or []
            return {"e2e": e2e, "prompt_tokens": d.get("tokens_evaluated") or len(prompt),
                    "output_tokens": d.get("tokens_predicted") or len(reply), "reply": reply,
                    "timings": d.get("timings") or {}}
        usage = d.get("usage") or {}
        text = ((d.get("choices") or [{}])[0].get("text")) or ""
        return {"e2e": e2e, "prompt_tokens": usage.get("prompt_tokens") or len(prompt),
                "output_tokens": usage.get("completion_tokens") or 0, "reply": self.tok.encode(text) or [],
                "timings": d.get("timings") or {}}


def replay(trace: RunTrace, url: str, db, model: str = "default", idle: bool = True, seed: int = 0,
           progress: Callable[[str], None] | None = None) -> ReplayResult:
    base = url.rstrip("/").removesuffix("/v1")
    client = httpx.Client(timeout=httpx.Timeout(3600, connect=10))
    try:
        client.get(base + "/health")
    except httpx.HTTPError as e:
        raise ServerUnreachable(f"no server at {url} ({type(e).__name__}); start one (`rigbench serve`) or check "
                                f"--url") from None
    _check(trace, server_context(client, base))
    tok = Tokenizer(base, model)
    tokens, server = _Tokens(tok, seed), _Server(client, base, model, tok)
    run_id = store.new_run(db, "replay", url=url, model=model,
                           config={"source_run": trace.run, "idle": idle, "seed": seed})
    out: list[TaskMeasure] = []
    last: list[int] = []                 # the server's previous prompt, across tasks as in the recorded run
    try:
        with recorded(db, run_id, url):
            for task in (t for t in trace.tasks if t.turns):
                m, last = _task(task, server, tokens, last, idle, db, run_id, progress)
                out.append(m)
    except BaseException as e:
        store.finish_run(db, run_id, "interrupted" if isinstance(e, KeyboardInterrupt) else "failed", str(e)[:500])
        raise
    finally:
        client.close()
    store.finish_run(db, run_id, "done")
    return ReplayResult(run=run_id, source_run=trace.run, url=url, idle=idle, tasks=out)


def _task(task: TaskTrace, server: _Server, tokens: _Tokens, last: list[int], idle: bool, db, run_id: int,
          progress) -> tuple[TaskMeasure, list[int]]:
    attempt = store.start_task(db, run_id, task.task)
    turns: list[TurnMeasure] = []
    t_start = time.monotonic()
    for i, turn in enumerate(task.turns, 1):
        shared = min(turn.shared_prefix, len(last))
        prompt = last[:shared] + tokens.take(turn.prompt_tokens - shared)
        d = server.send(prompt, max(1, turn.output_tokens))
        timings = d["timings"]
        tm = TurnMeasure(prompt_tokens=d["prompt_tokens"], sent_shared=shared, cached_tokens=timings.get("cache_n"),
                         output_tokens=d["output_tokens"], asked_output=max(1, turn.output_tokens),
                         e2e_s=round(d["e2e"], 4), prompt_ms=timings.get("prompt_ms"),
                         predicted_ms=timings.get("predicted_ms"), tool_s=turn.tool_s)
        turns.append(tm)
        store.add_event(db, run_id, task.task, attempt, i, round(time.monotonic() - t_start, 4), "replay_turn",
                        tm.model_dump())
        last = prompt + d["reply"]     # the server now holds this prompt and its reply
        if progress:
            progress(f"{task.task} turn {i}/{len(task.turns)}: {tm.prompt_tokens:,} prompt "
                     f"({tm.cached_tokens if tm.cached_tokens is not None else '?'} reused), {tm.output_tokens} out "
                     f"in {tm.e2e_s:.2f} s")
        if idle and turn.tool_s > 0:
            time.sleep(turn.tool_s)
    model_s = sum(t.e2e_s for t in turns)
    tools = sum(t.tool_s for t in turns)
    agent = time.monotonic() - t_start if idle else model_s + tools
    short = sum(t.output_tokens < t.asked_output for t in turns)
    store.finish_task(db, run_id, task.task, attempt, status="done", wall_s=round(agent, 3), turns=len(turns),
                      tokens_in=sum(t.prompt_tokens for t in turns), tokens_out=sum(t.output_tokens for t in turns),
                      detail=f"model {model_s:.1f} s, tools {tools:.1f} s"
                             + (f"; {short} turns stopped short of their output length" if short else ""))
    return TaskMeasure(task=task.task, turns=turns, model_s=round(model_s, 3), tools_s=round(tools, 3),
                       agent_s=round(agent, 3), short_outputs=short), last
