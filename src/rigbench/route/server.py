"""The router's HTTP server (Starlette on uvicorn; aiohttp to the upstreams, whose C parser costs a fraction of
httpx's pure-Python one per request: benchmarks/router_overhead.py measured 1.2 ms added TTFT with httpx).

OpenAI routes are relayed byte for byte: the request body goes upstream as the client sent it (unless an
upstream's `model` is set) and the response's bytes come back as the upstream wrote them, so streaming
chunks, tool calls and reasoning content pass through unchanged. `/v1/messages` is translated to OpenAI chat
(route/anthropic.py) unless the upstream serves it itself. Every reply carries `x-rigbench-route` (which
upstream and why), and a swap or fallback says so in its own header and in the log.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from rigbench.errors import RigbenchError
from rigbench.route import anthropic, record
from rigbench.route.accounting import Accounting
from rigbench.route.config import RouteConfig, Upstream
from rigbench.route.policy import Decision, Policy, estimate_prompt_tokens
from rigbench.route.upstreams import Managed, Upstreams

log = logging.getLogger("rigbench.route")
_PROMPT = re.compile(rb'"prompt_tokens":\s*(\d+)')
_COMPLETION = re.compile(rb'"completion_tokens":\s*(\d+)')
_PASS_REQUEST = ("content-type", "accept", "authorization", "user-agent")
_DROP_RESPONSE = {"content-length", "transfer-encoding", "connection", "keep-alive", "date", "server"}


class _Retry(Exception):
    """An upstream answered with an error another upstream may not have (5xx, 429)."""


def _tokens(tail: bytes) -> tuple[int, int] | None:
    p, c = _PROMPT.findall(tail), _COMPLETION.findall(tail)
    return (int(p[-1]), int(c[-1])) if p and c else None


class Router:
    def __init__(self, cfg: RouteConfig, log_dir: Path = Path(".rigbench/logs"), url: str = ""):
        self.cfg = cfg
        self.policy = Policy(cfg)
        self.upstreams = Upstreams(cfg, log_dir)
        self.acct = Accounting(cfg.db, list(cfg.upstreams), cfg.model_dump(mode="json"), url)
        self.client: aiohttp.ClientSession | None = None
        self.gateway = None      # a recording gateway (route.gateway.Gateway): requests under /t/TOKEN/ are its

    # ---- the app ----
    def app(self) -> _App:
        return _App(self, {
            "/v1/chat/completions": ("POST", self.openai),
            "/v1/completions": ("POST", self.openai),
            "/v1/messages": ("POST", self.messages),
            "/v1/messages/count_tokens": ("POST", self.count_tokens),
            "/v1/models": ("GET", self.models),
            "/health": ("GET", self.health),
        })

    async def startup(self) -> None:
        self.client = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent", "Accept-Encoding"))

    async def shutdown(self) -> None:
        if self.client is not None:
            await self.client.close()
        await asyncio.to_thread(self.upstreams.close)

    def close(self, status: str = "done", error: str | None = None) -> None:
        self.upstreams.close()
        self.acct.close(status, error)

    # ---- handlers ----
    async def openai(self, request: Request) -> Response:
        t0 = time.monotonic()
        raw = await request.body()
        body = _json_body(raw)
        if body is None:
            return JSONResponse({"error": {"message": "the request body is not a JSON object"}}, 400)
        d = self.policy.decide(body, self._client_escalates(request))
        path = request.scope["path"]      # not request.url: that builds a whole URL from the headers
        recorded = "rigbench.session" in request.scope

        def prepare(m: Managed) -> tuple[str, bytes, str | None, bool]:
            update = {"model": m.cfg.model} if m.cfg.model and body.get("model") != m.cfg.model else {}
            ask = recorded and body.get("stream") and not m.cfg.usage_in_stream and not (
                body.get("stream_options") or {}).get("include_usage")
            if ask:      # the gateway needs the tokens; the agent did not ask for the usage chunk: kept from it
                update["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
            return path, (orjson.dumps({**body, **update}) if update else raw), None, bool(ask)

        return await self._forward(request, d, prepare, t0, "openai", body=body, size=len(raw))

    async def messages(self, request: Request) -> Response:
        t0 = time.monotonic()
        raw = await request.body()
        body = _json_body(raw)
        if body is None or not isinstance(body.get("messages"), list):
            return JSONResponse(anthropic.error_body(400, "the body is not a Messages request (JSON with messages)"),
                                400)
        oa = anthropic.to_openai(body)
        d = self.policy.decide(oa, self._client_escalates(request))
        mode = "anthropic-stream" if body.get("stream") else "anthropic-json"

        def prepare(m: Managed) -> tuple[str, bytes, str | None, bool]:
            if m.cfg.anthropic:
                return ("/v1/messages", (orjson.dumps({**body, "model": m.cfg.model}) if m.cfg.model else raw), None,
                        False)
            return "/v1/chat/completions", orjson.dumps({**oa, "model": m.cfg.model or oa.get("model")}), mode, False

        return await self._forward(request, d, prepare, t0, "anthropic", model=body.get("model"), body=body,
                                   size=len(raw))

    async def count_tokens(self, request: Request) -> Response:
        """Forwarded to an upstream that serves the Messages API (llama-server counts with its tokenizer);
        otherwise the upstream's /tokenize with the chat translated (vLLM), or an estimate where neither answers."""
        t0 = time.monotonic()
        raw = await request.body()
        body = _json_body(raw) or {}
        status, out, ctype = 200, b"", "application/json"
        try:
            m, _ = await self.upstreams.acquire(self.cfg.default)
        except RigbenchError:
            m = None
        if m is not None:
            try:
                if m.cfg.anthropic:
                    async with self.client.post(m.base + "/v1/messages/count_tokens", data=raw,
                                                headers=self._headers(request, m)) as r:
                        status, out, ctype = r.status, await r.read(), r.headers.get("content-type", ctype)
                else:
                    oa = anthropic.to_openai(body)
                    async with self.client.post(m.base + "/tokenize", json={"model": m.cfg.model or oa.get("model"),
                                                "messages": oa["messages"]}, headers=self._headers(request, m)) as r:
                        got = await r.json(content_type=None) if r.status == 200 else {}
                    if isinstance(got, dict) and isinstance(got.get("count"), int):
                        out = orjson.dumps({"input_tokens": got["count"]})
            except (aiohttp.ClientError, TimeoutError, ValueError):
                out = b""
            finally:
                self.upstreams.release(m)
        if not out:
            status, out = 200, orjson.dumps({"input_tokens": estimate_prompt_tokens(anthropic.to_openai(body))})
        if (session := request.scope.get("rigbench.session")) is not None:
            self.gateway.record(session, record.Turn(api="count_tokens", model=body.get("model"), status=status,
                                                     request_bytes=len(raw), response_bytes=len(out),
                                                     **session.times(t0)),
                                head=out, tail=b"", whole=out, content_type=ctype, events=0, error=None)
        return Response(out, status, media_type=ctype.split(";")[0])

    async def models(self, _request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": n, "object": "model", "owned_by": "rigbench-route"}
                                                        for n in self.cfg.upstreams]})

    async def health(self, _request: Request) -> Response:
        return JSONResponse({"status": "ok", "running": self.upstreams.running(), "totals": self.acct.summary()})

    # ---- forwarding ----
    def _client_escalates(self, request: Request) -> bool:
        esc = self.cfg.escalation
        return bool(esc and esc.header in request.headers)

    def _chain(self, first: str) -> list[str]:
        chain = [first]
        while (nxt := self.cfg.fallback.get(chain[-1])) and nxt not in chain:
            chain.append(nxt)
        return chain

    def _headers(self, request: Request, m: Managed) -> dict[str, str]:
        h = {k: v for k in _PASS_REQUEST if (v := request.headers.get(k)) is not None}
        if m.cfg.api_key:
            h["authorization"] = f"Bearer {m.cfg.api_key}"
        h["accept-encoding"] = "identity"   # bytes pass through as the upstream wrote them
        return h

    async def _forward(self, request: Request, d: Decision, prepare: Callable, t0: float, api: str,
                       model: str | None = None, body: dict | None = None, size: int = 0) -> Response:
        fallback_from, last_error = None, "no upstream"
        session = request.scope.get("rigbench.session")
        path = request.scope["path"]
        turn = None if session is None else record.Turn(
            api=record.API_OF_PATH.get(path, path), model=(body or {}).get("model"),
            stream=bool((body or {}).get("stream")), request_bytes=size, **session.times(t0))
        if turn is not None:
            session.pending[id(turn)] = turn
        for name in self._chain(d.upstream):
            try:
                m, swap = await self.upstreams.acquire(name)
            except RigbenchError as e:
                last_error, fallback_from = f"{name}: {e}", name
                log.warning("route: %s could not be started (%s); falling back", name, e)
                continue
            upstream_path, content, mode, strip = prepare(m)
            resp, kept_back = None, None
            try:
                resp = await self._post(m, upstream_path, content, self._headers(request, m))
                if (resp.status >= 500 or resp.status == 429) and name != self._chain(d.upstream)[-1]:
                    await resp.read()
                    raise _Retry(f"HTTP {resp.status}")
                chunks = resp.content.iter_any()
                first = await anext(chunks, b"")
                status, reply = resp.status, None
                if mode == "anthropic-json":
                    # the whole reply is translated at once: read and translate it before the status goes out, so
                    # a reply that is not JSON is answered as the error it is (502), not as a 200 carrying one
                    first = first + b"".join([c async for c in chunks])
                    chunks = _nothing()
                    status, reply = _anthropic_reply(first, resp.status, model)
            except (aiohttp.ClientError, TimeoutError, _Retry) as e:
                if resp is not None:
                    resp.release()
                self.upstreams.release(m)
                last_error = f"{name}: {type(e).__name__} {e}".strip()
                self.acct.record(name, ttft=None, e2e=time.monotonic() - t0, prompt_tokens=0, output_tokens=0,
                                 error=last_error[:300], route=d.header(), api=api, escalated=d.escalated,
                                 triggered=False, fallback_from=fallback_from, swap=swap, start=t0)
                log.warning("route: %s failed (%s); %s", name, last_error,
                            "falling back" if self.cfg.fallback.get(name) else "no fallback")
                fallback_from = name
                continue
            route = d.header() if name == d.upstream else f"{name}; fallback from {fallback_from}; {d.header()}"
            headers = {k.lower(): v for k, v in resp.headers.items() if k.lower() not in _DROP_RESPONSE}
            if turn is None:    # a gateway is transparent: what a router behind it says reaches the agent
                headers.update({"x-rigbench-route": route, "x-rigbench-upstream": name})
            if swap:
                headers["x-rigbench-swap"] = swap
            if mode:
                headers.pop("content-encoding", None)
                headers["content-type"] = "text/event-stream" if mode == "anthropic-stream" else "application/json"
            info = dict(route=route, api=api, escalated=d.escalated, triggered=d.triggered,
                        fallback_from=fallback_from, swap=swap, start=t0)
            if turn is not None:
                turn.status, turn.stream_usage_added = status, strip
                if strip and "text/event-stream" in headers.get("content-type", ""):
                    chunks, first, kept_back = _stripped(first, chunks)
            body = self._relay(m, resp, first, chunks, t0, info, mode, model, path, reply,
                               turn=turn, session=session, kept_back=kept_back)
            return Relay(status, headers, body)
        msg = f"no upstream answered ({last_error})"
        hdrs = {"x-rigbench-route": d.header()}
        if turn is not None:
            turn.status, turn.seconds = 502, round(time.monotonic() - t0, 4)
            turn.fault = f"the engine did not answer: {last_error}"
            self.gateway.record(session, turn, head=b"", tail=b"", whole=None, content_type="", events=0, error=None)
        if api == "anthropic":
            return JSONResponse(anthropic.error_body(529, msg), 529, headers=hdrs)
        return JSONResponse({"error": {"message": msg, "type": "upstream_error"}}, 502, headers=hdrs)

    async def _post(self, m: Managed, path: str, content: bytes, headers: dict) -> aiohttp.ClientResponse:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=m.cfg.timeout_s)
        try:
            return await self.client.post(m.base + path, data=content, headers=headers, timeout=timeout)
        except aiohttp.ServerDisconnectedError:
            # a kept-alive connection the upstream closed as it was reused (llama-server's cpp-httplib closes idle
            # ones after CPPHTTPLIB_KEEPALIVE_TIMEOUT_SECOND, 5 s): once more, on a new connection
            return await self.client.post(m.base + path, data=content, headers=headers, timeout=timeout)

    async def _relay(self, m: Managed, resp: aiohttp.ClientResponse, first: bytes, chunks: AsyncIterator[bytes],
                     t0: float,
                     info: dict, mode: str | None, model: str | None, path: str,
                     reply: bytes | None = None, turn: record.Turn | None = None,
                     session=None, kept_back: list[bytes] | None = None) -> AsyncIterator[bytes]:
        """The upstream's bytes on to the client (translated to Anthropic events in anthropic-stream mode; `reply`:
        the whole translated answer in anthropic-json mode), accounted from the upstream's own bytes. With a
        gateway `turn`, the reply's head and tail (all of a JSON reply) are kept for its record."""
        # llama-server answers a streamed request at once and sends an SSE comment (`:`) every 30 s while it
        # computes a long prompt: the first token is the first chunk with more than comments
        ttft = time.monotonic() - t0 if not _only_comments(first) else None
        head = first[:_HEAD] if turn is not None else b""
        error = None
        events = first.count(b"data:")
        prev, last = b"", first
        ctype = resp.headers.get("content-type", "")
        whole = [first] if (mode == "anthropic-json" or resp.status >= 400 or
                            (turn is not None and "text/event-stream" not in ctype)) else None
        size, before = len(first), b""
        tr = anthropic.StreamTranslator(model) if mode == "anthropic-stream" and resp.status < 400 else None
        buf = b""
        try:
            if tr is not None:
                out, buf = _translate(tr, first)
                if out:
                    yield out
            elif whole is None:
                yield first
            async for chunk in chunks:
                events += chunk.count(b"data:")
                if ttft is None and not _only_comments(chunk):
                    ttft = time.monotonic() - t0
                if turn is not None:
                    size += len(chunk)
                    before = (before + prev)[-65536:]
                    if len(head) < _HEAD:
                        head += chunk[:_HEAD - len(head)]
                prev, last = last, chunk
                if tr is not None:
                    out, buf = _translate(tr, buf + chunk)
                    if out:
                        yield out
                elif whole is not None:
                    whole.append(chunk)
                else:
                    yield chunk
            if tr is not None:
                out, _ = _translate(tr, buf + b"\n\n")
                yield out + b"".join(tr.finish())
            elif whole is not None:
                data = b"".join(whole)
                prev, last = b"", data
                yield (reply if reply is not None else _anthropic_reply(data, resp.status, model)[1]) if mode else data
        except (aiohttp.ClientError, TimeoutError) as e:
            error = f"{type(e).__name__} mid-stream: {e}"[:300]
        finally:
            if error is None and not resp.content.at_eof():
                error = "the client left mid-stream"
            if resp.content.at_eof():
                resp.release()   # read to the end: the connection goes back to the pool
            else:
                resp.close()     # the client left mid-stream: the upstream stops generating
            self.upstreams.release(m)
            e2e = time.monotonic() - t0
            ttft = e2e if ttft is None else ttft
            toks = _tokens(prev + last)
            if resp.status >= 400 and error is None:
                error = f"HTTP {resp.status}"
            p, c = toks if toks else (0, max(0, events - 1))
            self.acct.record(m.name, ttft=ttft, e2e=e2e, prompt_tokens=p, output_tokens=c, error=error, **info)
            if turn is not None:
                turn.ttft_s, turn.seconds = round(ttft, 4), round(e2e, 4)
                turn.decode_s = round(e2e - ttft, 4)
                turn.response_bytes = size if whole is None else len(b"".join(whole))
                turn.client_left = error == "the client left mid-stream"
                tail = before[-4096:] + prev + last + b"".join(kept_back or ())   # the usage chunk kept from it
                self.gateway.record(session, turn, head=head, tail=tail,
                                    whole=b"".join(whole) if whole is not None else None, content_type=ctype,
                                    events=events, error=error, translated=mode is not None)
            if self.cfg.log_requests:
                log.info("route: %s -> %s (%s) %d, ttft %.1f ms, %.2f s, %d/%d tokens%s", path, m.name,
                         info["route"], resp.status, ttft * 1000, e2e, p, c, f", {error}" if error else "")


class _App:
    """The router as a bare ASGI app: a path names its handler, nothing in between. Starlette's app wraps every
    request in three middleware layers and a route scan; the router only needs its six paths, and every layer is
    time added to every request (benchmarks/router_overhead.py). Handlers get Starlette's Request and return its
    Responses (or a Relay)."""

    def __init__(self, router: Router, routes: dict[str, tuple[str, Callable]]):
        self.router, self.routes = router, routes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            if scope["path"].startswith("/t/") and self.router.gateway is not None:
                token, _, rest = scope["path"][3:].partition("/")
                session = self.router.gateway.sessions.get(token)
                if session is None:
                    await JSONResponse({"error": {"message": f"no open session {token!r} on this gateway: the task "
                                                             f"it belonged to has ended"}}, 404)(scope, receive, send)
                    return
                scope = {**scope, "path": "/" + rest, "rigbench.session": session}
            route = self.routes.get(scope["path"])
            if route is None:
                resp = JSONResponse({"error": {"message": f"no route {scope['path']}; the router serves "
                                                          f"{', '.join(self.routes)}"}}, 404)
            elif scope["method"] != route[0]:
                resp = JSONResponse({"error": {"message": f"{scope['path']} takes {route[0]}"}}, 405,
                                    headers={"allow": route[0]})
            else:
                try:
                    resp = await route[1](Request(scope, receive))
                except Exception as e:   # a bug, not the client's fault: logged whole, answered in one line
                    log.exception("route: %s failed", scope["path"])
                    resp = JSONResponse({"error": {"message": f"router error: {type(e).__name__}: {e}"}}, 500)
            await resp(scope, receive, send)
        elif scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    try:
                        await self.router.startup()
                    except Exception as e:
                        await send({"type": "lifespan.startup.failed", "message": str(e)})
                        return
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await self.router.shutdown()
                    await send({"type": "lifespan.shutdown.complete"})
                    return


class Relay:
    """An ASGI response that sends the upstream's bytes on as they come. Starlette's StreamingResponse starts a
    task group per request to watch for a disconnect (ASGI spec 2.3, uvicorn's); this starts a plain task, and
    only once the first chunk is out, so the time to first token pays for none of it."""

    def __init__(self, status: int, headers: dict[str, str], body: AsyncIterator[bytes]):
        self.status, self.headers, self.body = status, headers, body
        self.gone = self.done = False

    async def __call__(self, scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": self.status,
                    "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in self.headers.items()]})
        watcher = None
        try:
            async for chunk in self.body:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                if watcher is None:
                    watcher = asyncio.create_task(self._watch(receive, asyncio.current_task()))
            self.done = True
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not self.gone:
                raise
            asyncio.current_task().uncancel()   # the client left: the relay's cleanup ran, nothing more to send
        finally:
            if watcher is not None:
                watcher.cancel()
            await self.body.aclose()

    async def _watch(self, receive, task: asyncio.Task) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        if not self.done:   # uvicorn also answers `http.disconnect` once the response is complete
            self.gone = True
            task.cancel()


def _json_body(raw: bytes) -> dict | None:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return body if isinstance(body, dict) else None


def _translate(tr: anthropic.StreamTranslator, buf: bytes) -> tuple[bytes, bytes]:
    """Feed complete SSE events of an OpenAI stream to the translator; returns (Anthropic events, the rest)."""
    buf = buf.replace(b"\r\n", b"\n")
    *events, rest = buf.split(b"\n\n")
    out: list[bytes] = []
    for ev in events:
        for line in ev.split(b"\n"):
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]" or not data:
                continue
            try:
                out += tr.feed(orjson.loads(data))
            except orjson.JSONDecodeError:
                continue
    return b"".join(out), rest


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield


_HEAD = 65536     # bytes of a streamed reply's start kept for its record (Anthropic's usage is in its first event)


def _only_comments(chunk: bytes) -> bool:
    """Whether an SSE chunk holds only comment lines (`:` keep-alives) and blank lines."""
    return all(not line.strip() or line.startswith(b":") for line in chunk.split(b"\n"))


def _stripped(first: bytes, chunks: AsyncIterator[bytes]) -> tuple[AsyncIterator[bytes], bytes, list[bytes]]:
    """An OpenAI stream without the usage-only chunk the gateway asked for (record.strip_usage_chunk): the
    stream's other events, the first complete ones now, and a list that receives what was kept back (the
    gateway's record reads the tokens from it)."""
    kept_back: list[bytes] = []
    out, rest, dropped = record.strip_usage_chunk(first)
    kept_back += dropped

    async def more() -> AsyncIterator[bytes]:
        buf = rest
        async for chunk in chunks:
            done, buf, dropped = record.strip_usage_chunk(buf + chunk)
            kept_back.extend(dropped)
            if done:
                yield done
        if buf:
            yield buf

    return more(), out, kept_back


def _anthropic_reply(data: bytes, status: int, model: str | None) -> tuple[int, bytes]:
    """(status, body) of an OpenAI reply as a Messages one: the upstream's status, or 502 where its body is not
    JSON; an upstream error as an Anthropic error."""
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError:
        return 502, orjson.dumps(anthropic.error_body(502, f"the upstream answered {status} with no JSON"))
    if status >= 400:
        msg = ((body.get("error") or {}).get("message") if isinstance(body, dict) else None) or str(body)[:300]
        return status, orjson.dumps(anthropic.error_body(status, msg))
    return status, orjson.dumps(anthropic.from_openai(body, model))


def listen_socket(host: str, port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind((host, port))
    except OSError as e:
        s.close()
        raise RigbenchError(f"cannot listen on {host}:{port} ({e.strerror}); pick another port "
                            f"(0 = any free one)") from None
    s.listen(2048)
    return s


def _uvicorn(app, host: str):
    import uvicorn

    try:
        import httptools  # noqa: F401
        http = "httptools"
    except ImportError:
        http = "h11"
    return uvicorn.Server(uvicorn.Config(app, host=host, loop="uvloop", http=http, lifespan="on",
                                         access_log=False, log_level="warning", timeout_keep_alive=60,
                                         proxy_headers=False))


def serve(cfg: RouteConfig, on_ready: Callable[[str, Router], None] | None = None,
          log_dir: Path = Path(".rigbench/logs")) -> None:
    """Run the router in this thread until Ctrl-C / SIGTERM; planned upstreams are stopped on the way out."""
    sock = listen_socket(cfg.host, cfg.port)
    url = f"http://{cfg.host}:{sock.getsockname()[1]}"
    router = Router(cfg, log_dir, url)
    server = _uvicorn(router.app(), cfg.host)
    try:
        if on_ready:
            on_ready(url, router)
        server.run(sockets=[sock])
    except KeyboardInterrupt:   # Ctrl-C or SIGTERM: how a router is meant to stop, so its run ends `done`
        pass
    finally:
        sock.close()
        router.close()


class Background:
    """The router (or a translating endpoint) serving from a thread: `.url`, `.base_url`, `.stop()`."""

    def __init__(self, cfg: RouteConfig, log_dir: Path = Path(".rigbench/logs")):
        self.sock = listen_socket(cfg.host, cfg.port)
        self.url = f"http://{cfg.host}:{self.sock.getsockname()[1]}"
        self.base_url = self.url + "/v1"
        self.router = Router(cfg, log_dir, self.url)
        self.server = _uvicorn(self.router.app(), cfg.host)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True,
                                       name="rigbench-route")

    def start(self, timeout: float = 30) -> Background:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RigbenchError("the router did not start; see the log above")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()
        self.router.close()

    def __enter__(self) -> Background:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_background(cfg: RouteConfig, log_dir: Path = Path(".rigbench/logs")) -> Background:
    return Background(cfg, log_dir).start()


def serve_translating(upstream_url: str, host: str = "127.0.0.1", port: int = 0, model: str | None = None,
                      api_key: str | None = None, db: str | None = "none") -> Background:
    """Start an endpoint in a background thread that serves `/v1/messages` (translated, route/anthropic.py) and the
    OpenAI routes (passed through) in front of one OpenAI-compatible upstream. Returns a `Background`: `.url`,
    `.stop()`, usable as a context manager. `db="none"` keeps no accounting; give a store URL to keep it."""
    cfg = RouteConfig(host=host, port=port, default="upstream", db=db, log_requests=False,
                      upstreams={"upstream": Upstream(url=upstream_url, model=model, api_key=api_key)})
    return start_background(cfg)
