"""One streamed request, timed per chunk.

Definitions follow `vllm bench serve`: TTFT is the time from sending the request to the first streamed
token (reasoning tokens count); ITL is the gap between consecutive streamed chunks; TPOT is
(E2E - TTFT) / (output tokens - 1); token counts come from the server's `usage`, never from chunk counts
(speculative decoding sends several tokens per chunk).
"""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import aiohttp
import orjson
from pydantic import BaseModel


class RequestResult(BaseModel):
    scenario: str = ""
    index: int = 0
    start: float = 0.0                 # monotonic seconds when the request was sent
    ttft: float | None = None          # seconds
    e2e: float | None = None
    chunk_times: list[float] = []      # monotonic receive time of each content chunk
    prompt_tokens: int | None = None
    output_tokens: int | None = None
    cached_tokens: int | None = None
    server_timings: dict | None = None  # llama-server's per-response `timings`
    error: str | None = None
    status: int | None = None
    probe: list[float] = []             # per-chunk values of `probe_key` (a server that stamps its chunks)
    probe_arrival: float | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def itl(self) -> list[float]:
        t = self.chunk_times
        return [b - a for a, b in zip(t, t[1:], strict=False)]

    @property
    def tpot(self) -> float | None:
        if self.ttft is None or self.e2e is None or not self.output_tokens or self.output_tokens < 2:
            return None
        return (self.e2e - self.ttft) / (self.output_tokens - 1)

    @property
    def prefill_tok_s(self) -> float | None:
        if self.ttft and self.prompt_tokens:
            new = self.prompt_tokens - (self.cached_tokens or 0)
            return new / self.ttft if new > 0 else None
        return None


async def _on_sent(_session, ctx, _params) -> None:
    # the request body has reached the socket: TTFT counts from here, not from building the request
    if ctx.trace_request_ctx is not None:
        ctx.trace_request_ctx.sent = time.monotonic()


def trace_config() -> aiohttp.TraceConfig:
    tc = aiohttp.TraceConfig()
    tc.on_request_chunk_sent.append(_on_sent)
    return tc


def _content(delta: dict) -> bool:
    return bool(delta.get("content") or delta.get("reasoning_content") or delta.get("reasoning")
                or delta.get("tool_calls"))


class _StallWatch:
    """Cancels the request's task when nothing has been read for `limit` seconds. It wakes once per `limit`, and
    each read only notes its time, where a socket-read timeout would move a timer on every chunk."""

    __slots__ = ("limit", "last", "fired", "task", "handle")

    def __init__(self, limit: float) -> None:
        self.limit, self.last, self.fired = limit, time.monotonic(), False
        self.task = asyncio.current_task()
        self.handle = asyncio.get_running_loop().call_later(limit, self._check)

    def _check(self) -> None:
        idle = time.monotonic() - self.last
        if idle >= self.limit:
            self.fired = True
            self.task.cancel()
        else:
            self.handle = asyncio.get_running_loop().call_later(self.limit - idle, self._check)

    def close(self) -> None:
        self.handle.cancel()


async def _read_events(r: aiohttp.ClientResponse, res: RequestResult, probe_key: str | None,
                       watch: _StallWatch) -> None:
    # one await per read from the socket (not one per line): what arrived together is stamped together
    buf = b""
    while True:
        data = await r.content.readany()
        watch.last = now = time.monotonic()
        if data:
            *lines, buf = (buf + data).split(b"\n")
        else:   # end of stream: a last line without its newline still counts
            lines, buf = [buf], b""
        for line in lines:
            if _event(line, now, res, probe_key):
                return
        if not data:
            res.error = "stream ended without [DONE]"
            return


def _event(line: bytes, now: float, res: RequestResult, probe_key: str | None) -> bool:
    """Take one SSE line received at `now` into `res`; True when the stream is over ([DONE] or an error)."""
    line = line.strip()
    if not line or line.startswith(b":"):
        return False
    if not line.startswith(b"data:"):
        if line.startswith((b"event:", b"id:", b"retry:")):
            return False
        res.error = f"malformed SSE line: {line[:80]!r}"
        return True
    data = line[5:].strip()
    if data == b"[DONE]":
        res.e2e = now - res.start
        if res.output_tokens is None:
            res.error = "no usage in the stream (server did not report token counts)"
        return True
    try:
        event = orjson.loads(data)  # a few microseconds less per chunk than json, at 20k chunks/s
    except orjson.JSONDecodeError:
        res.error = f"malformed SSE data: {data[:80]!r}"
        return True
    if "error" in event:
        res.error = f"server error: {str(event['error'])[:200]}"
        return True
    for choice in event.get("choices") or []:
        if _content(choice.get("delta") or {}) or choice.get("text"):
            if res.ttft is None:
                res.ttft = now - res.start
            res.chunk_times.append(now)
            if probe_key:
                res.probe.append(event.get(probe_key, 0.0))
                if res.probe_arrival is None:   # a pydantic assignment costs a microsecond: only the first
                    res.probe_arrival = event.get("rigbench_arrival")
    usage = event.get("usage")
    if usage:
        res.prompt_tokens = usage.get("prompt_tokens")
        res.output_tokens = usage.get("completion_tokens")
        details = usage.get("prompt_tokens_details") or {}
        res.cached_tokens = details.get("cached_tokens")
    if "timings" in event:
        res.server_timings = event["timings"]
        if res.cached_tokens is None and "cache_n" in event["timings"]:
            res.cached_tokens = event["timings"]["cache_n"]
    return False


async def stream(session: aiohttp.ClientSession, url: str, payload: dict, **kw) -> RequestResult:
    """POST `payload` with stream=true to `url` (a /v1/chat/completions or /v1/completions URL).

    A keep-alive connection the server has closed fails before the request is sent; that one case is retried
    once (nothing reached the server), any other failure is the result.
    """
    res = await _stream_once(session, url, payload, **kw)
    if res.status is None and res.error and res.error.startswith("connection") and "write request" in res.error:
        res = await _stream_once(session, url, payload, **kw)
    return res


async def _stream_once(session: aiohttp.ClientSession, url: str, payload: dict, *, scenario: str = "",
                       index: int = 0, timeout: float = 600.0, stall_timeout: float = 60.0,
                       probe_key: str | None = None) -> RequestResult:
    body = {**payload, "stream": True, "stream_options": {"include_usage": True}}
    res = RequestResult(scenario=scenario, index=index)
    res.start = time.monotonic()
    sent = SimpleNamespace(sent=None)
    watch = _StallWatch(stall_timeout)
    try:
        # one timer for the whole request and one lazy stall watch: no timer moved per chunk (aiohttp's
        # socket-read timeout re-arms one on every read, a few microseconds a chunk at 20k chunks/s)
        async with asyncio.timeout(timeout):
            async with session.post(url, data=orjson.dumps(body), headers={"Content-Type": "application/json"},
                                    timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
                                    trace_request_ctx=sent) as r:
                if sent.sent is not None:  # sessions made by bench.load.session() trace the send
                    res.start = sent.sent
                res.status = r.status
                if r.status != 200:
                    text = (await r.text())[:200].replace("\n", " ")
                    res.error = f"HTTP {r.status}: {text}"
                    return res
                await _read_events(r, res, probe_key, watch)
    except TimeoutError:
        res.error = f"timeout: no end of stream within {timeout:.0f} s"
    except (aiohttp.ClientError, ConnectionError, OSError) as e:
        res.error = f"connection: {type(e).__name__}: {str(e)[:160]}"
    except asyncio.CancelledError:
        if watch.fired and watch.task.uncancel() == 0:   # our own watch, not a caller's cancel
            res.error = f"stall: no data for {stall_timeout:.0f} s"
            return res
        res.error = "cancelled"
        raise
    finally:
        watch.close()
    return res
