"""A local OpenAI-style streaming server with a known token schedule and injectable faults.

It measures rigbench's own load generator (benchmarks/loadgen_accuracy.py) and exercises its fault
handling (tests). Each streamed chunk carries `rigbench_t`, the server's monotonic clock when it was
written, and the first carries `rigbench_arrival`, when the request arrived; on Linux both processes read
the same CLOCK_MONOTONIC, so client and server times compare directly.

The model name picks the behaviour: `ok` (default), `http500`, `http429`, `malformed` (a broken SSE line
after 3 tokens), `stall` (3 tokens then silence), `noend` (closes without [DONE]), `text200` (HTTP 200 with a
plain-text body, what a misconfigured proxy in front of an engine answers), `json` (one JSON chat completion
to a streamed request, as some servers answer), `empty` (HTTP 200, an event stream with no event), `die` (the
process exits on this request). `max_tokens` tokens are sent `interval_ms` apart after `ttft_ms` (request
fields; a proxy that drops unknown fields gets the server's defaults, `--ttft-ms` and `--interval-ms`); with
`keepalive_ms` an SSE comment is sent that often until the first token.

Usage: python -m rigbench.bench.fakeserver --port 8099
"""

from __future__ import annotations

import argparse
import asyncio
import json
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
    for i in range(n):
        due = start + i * interval
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        if mode in ("malformed", "stall", "noend") and i == 3:
            if mode == "malformed":
                await resp.write(b"data: {this is not json\n\n")
            elif mode == "stall":
                await asyncio.sleep(3600)
            return resp
        await resp.write(_chunk(i, time.monotonic(), arrival if i == 0 else None, i == n - 1))
    usage = {"prompt_tokens": _prompt_tokens(body), "completion_tokens": n}
    await resp.write(b"data: " + json.dumps({"choices": [], "usage": usage}).encode() + b"\n\ndata: [DONE]\n\n")
    return resp


def _prompt_tokens(body: dict) -> int:
    return len(str(body.get("prompt", body.get("messages", ""))).split())


async def models(_request: web.Request) -> web.Response:
    return web.json_response({"object": "list", "data": [{"id": "ok", "object": "model", "owned_by": "fake"}]})


def app() -> web.Application:
    a = web.Application()
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
