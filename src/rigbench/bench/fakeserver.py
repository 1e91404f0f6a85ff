"""A local OpenAI-style streaming server with a known token schedule and injectable faults.

It measures rigbench's own load generator (benchmarks/loadgen_accuracy.py) and exercises its fault
handling (tests). Each streamed chunk carries `rigbench_t`, the server's monotonic clock when it was
written, and the first carries `rigbench_arrival`, when the request arrived; on Linux both processes read
the same CLOCK_MONOTONIC, so client and server times compare directly.

The model name picks the behaviour: `ok` (default), `http500`, `http429`, `malformed` (a broken SSE line
after 3 tokens), `stall` (3 tokens then silence), `noend` (closes without [DONE]), `text200` (HTTP 200 with a
plain-text body, what a misconfigured proxy in front of an engine answers), `json` (one JSON chat completion
to a streamed request, as some servers answer), `empty` (HTTP 200, an event stream with no event), `die` (the
process exits on this request), `donehang` (the whole stream and [DONE], then the body is never ended).
`max_tokens` tokens are sent `interval_ms` apart after `ttft_ms` (request fields; a proxy that drops unknown
fields gets the server's defaults, `--ttft-ms` and `--interval-ms`); with `keepalive_ms` an SSE comment is sent
that often until the first token.

Usage: python -m rigbench.bench.fakeserver --port 8099
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import itertools
import json
import math
import os
import time

from aiohttp import web


def _chunk(i: int, now: float, arrival: float | None = None, last: bool = False) -> bytes:
    # formatted by hand rather than json.dumps: the server must stay cheap per chunk at 20k chunks/s
    extra = f',"rigbench_arrival":{arrival!r}' if arrival is not None else ""
    finish = ',"finish_reason":"length"' if last else ""
    return (f'data: {{"id":"fake","object":"text_completion","choices":[{{"index":0,"text":"t{i} ",'
            f'"delta":{{"content":"t{i} "}}{finish}}}],"rigbench_t":{now!r}{extra}}}\n\n').encode()


DEFAULTS = {"ttft_ms": 20.0, "interval_ms": 10.0}


async def completions(request: web.Request) -> web.StreamResponse:
    arrival = time.monotonic()
    body = await request.json()
    mode = body.get("model") or "ok"
    n = int(body.get("max_tokens", 16))
    ttft = float(body.get("ttft_ms", DEFAULTS["ttft_ms"])) / 1000
    interval = float(body.get("interval_ms", DEFAULTS["interval_ms"])) / 1000
    if mode == "die":
        os._exit(3)
    if mode == "text200":
        return web.Response(text="<html>bad gateway page</html>", content_type="text/plain")
    if mode == "json":
        return web.json_response({"id": "fake", "object": "chat.completion", "created": 0, "model": mode,
                                  "choices": [{"index": 0, "finish_reason": "stop", "message": {
                                      "role": "assistant", "content": " ".join(f"t{i}" for i in range(n))}}],
                                  "usage": {"prompt_tokens": _prompt_tokens(body), "completion_tokens": n,
                                            "total_tokens": _prompt_tokens(body) + n}})
    if mode.startswith("http"):
        code = int(mode[4:])
        return web.json_response({"error": {"message": f"injected {code}"}}, status=code)
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    if mode == "empty":
        return resp
    start = arrival + ttft
    if keepalive := float(body.get("keepalive_ms", 0)) / 1000:   # SSE comments while the "prompt" is computed,
        while time.monotonic() + keepalive < start:               # as llama-server sends every 30 s
            await asyncio.sleep(keepalive)
            await resp.write(b":\n\n")
    faulty = mode in ("malformed", "stall", "noend") and n > 3   # the fault comes after 3 tokens
    usage = {"prompt_tokens": _prompt_tokens(body), "completion_tokens": n}
    tail = b"" if faulty else b"data: " + json.dumps({"choices": [], "usage": usage}).encode() + b"\n\ndata: [DONE]\n\n"
    chunked = resp.headers.get("Transfer-Encoding") == "chunked"   # HTTP/1.1; HTTP/1.0 ends at close
    s = _Stream(request.transport, chunked, arrival, start, interval, min(n, 3) if faulty else n, n, tail)
    if s.stop:
        await request.app[TICKER].run(s)
    else:
        await resp.write(tail)
    if faulty and mode == "malformed":
        await resp.write(b"data: {this is not json\n\n")
    elif (faulty and mode == "stall") or mode == "donehang":
        await asyncio.sleep(3600)
    return resp


class _Stream:
    """One response's token schedule: the ticker writes its chunks straight to the connection."""

    __slots__ = ("transport", "chunked", "arrival", "start", "interval", "stop", "n", "tail", "i", "done")

    def __init__(self, transport, chunked: bool, arrival: float, start: float, interval: float, stop: int, n: int,
                 tail: bytes) -> None:
        self.transport, self.chunked, self.arrival, self.start, self.interval = (transport, chunked, arrival, start,
                                                                                 interval)
        self.stop, self.n, self.tail, self.i = stop, n, tail, 0
        self.done: asyncio.Future | None = None

    def send(self) -> float | None:
        """Write chunk i, stamped now; the next chunk's due time, or None when this stream is finished."""
        t = self.transport
        if t is None or t.is_closing() or self.i >= self.stop:   # finished, or the client went away
            return None
        i = self.i
        data = _chunk(i, time.monotonic(), self.arrival if i == 0 else None, i == self.n - 1)
        self.i = i = i + 1
        if i == self.stop:
            data += self.tail
        # HTTP/1.1 responses without a length are chunked (aiohttp frames the headers and the end; the body is ours)
        t.write(b"%x\r\n%s\r\n" % (len(data), data) if self.chunked else data)
        return self.start + i * self.interval if i < self.stop else None


class _Ticker:
    """One timer per event loop writes every stream's due chunks in one pass, so a chunk costs a heap entry and a
    socket write rather than a sleeping task, a timer and an awaited write: the server is a fixture, and the CPU it
    does not use is the client's, the thing measured. Most of what is left per chunk is the kernel's send."""

    def __init__(self) -> None:
        self.heap: list[tuple[float, int, _Stream]] = []
        self.seq = itertools.count()
        self.timer: asyncio.TimerHandle | None = None
        self.wake = math.inf

    async def run(self, s: _Stream) -> None:
        s.done = asyncio.get_running_loop().create_future()
        self._add(s.start, s)
        try:
            await s.done
        finally:
            s.stop = s.i   # cancelled (client gone): the ticker drops it at its next due time

    def _add(self, due: float, s: _Stream) -> None:
        heapq.heappush(self.heap, (due, next(self.seq), s))
        if due < self.wake:
            self._arm(due)

    def _arm(self, due: float) -> None:
        if self.timer:
            self.timer.cancel()
        self.wake = due
        self.timer = asyncio.get_running_loop().call_later(max(0.0, due - time.monotonic()), self._tick)

    def _tick(self) -> None:
        self.timer, self.wake = None, math.inf
        heap = self.heap
        # the loop's timers are 1 ms coarse (libuv): what falls due within half of that goes out in this pass
        horizon = time.monotonic() + 0.0005
        later = []   # one chunk per stream per pass: a stream that fell behind catches up over the next passes,
        while heap and heap[0][0] <= horizon:   # and new requests are read in between
            s = heapq.heappop(heap)[2]
            try:
                due = s.send()
            except (OSError, RuntimeError):   # a write to a connection just reset: that stream ends, the rest go on
                due = None
            if due is None:
                if s.done and not s.done.done():
                    s.done.set_result(None)
            else:
                later.append((due, next(self.seq), s))
        for e in later:
            heapq.heappush(heap, e)
        if heap:
            self._arm(heap[0][0])


def _prompt_tokens(body: dict) -> int:
    return len(str(body.get("prompt", body.get("messages", ""))).split())


async def models(_request: web.Request) -> web.Response:
    return web.json_response({"object": "list", "data": [{"id": "ok", "object": "model", "owned_by": "fake"}]})


TICKER = web.AppKey("ticker", _Ticker)


def app() -> web.Application:
    a = web.Application()

    async def start_ticker(a: web.Application) -> None:
        a[TICKER] = _Ticker()

    a.on_startup.append(start_ticker)
    a.router.add_post("/v1/completions", completions)
    a.router.add_post("/v1/chat/completions", completions)
    a.router.add_get("/v1/models", models)
    a.router.add_get("/health", lambda r: web.json_response({"status": "ok"}))
    return a


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8099)
    ap.add_argument("--ttft-ms", type=float, default=20.0, help="first token delay when a request gives none")
    ap.add_argument("--interval-ms", type=float, default=10.0, help="token interval when a request gives none")
    a = ap.parse_args()
    DEFAULTS.update(ttft_ms=a.ttft_ms, interval_ms=a.interval_ms)
    try:  # uvloop keeps the server's own scheduling jitter out of the measurement
        import uvloop
        loop = uvloop.new_event_loop()
    except ImportError:
        loop = None
    web.run_app(app(), host=a.host, port=a.port, print=None, access_log=None, backlog=1024, loop=loop)


if __name__ == "__main__":
    main()
