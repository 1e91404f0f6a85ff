"""One streamed request, timed per chunk.

Definitions follow `vllm bench serve`: TTFT is the time from sending the request to the first streamed
token (reasoning tokens count), or, for a reply that streams no text at all, to its first event with a choice
(llama-server holds back a token that ends inside a UTF-8 character, so a one-token reply can be all held
back; vllm bench serve stamps TTFT on that event too); ITL is the gap between consecutive streamed chunks;
TPOT is (E2E - TTFT) / (output tokens - 1); token counts come from the server's `usage`, never from chunk
counts (speculative decoding sends several tokens per chunk).
"""

from __future__ import annotations

import asyncio
import socket
from time import monotonic
from urllib.parse import urlsplit

import httptools
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
    first_choice: float | None = None   # monotonic time of the first event with a choice, text or not

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


def _content(delta: dict) -> bool:
    return bool(delta.get("content") or delta.get("reasoning_content") or delta.get("reasoning")
                or delta.get("tool_calls"))


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
        if res.ttft is None and res.output_tokens and res.first_choice is not None:
            res.ttft = res.first_choice - res.start
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
    choices = event.get("choices") or ()
    if choices and res.first_choice is None:
        res.first_choice = now
    for choice in choices:
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


class _Conn(asyncio.Protocol):
    """One keep-alive connection. Its `data_received` stamps each read from the socket and keeps the bytes; httptools
    (llhttp, the parser behind uvicorn and aiohttp) takes the HTTP framing off. Nothing runs per chunk beyond that:
    the request's task wakes once, when the response is over, and reads the SSE events from what was kept, each
    with the time its bytes arrived."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.done: asyncio.Future | None = None     # set for each request by begin()

    def begin(self, stall_timeout: float) -> None:
        loop = asyncio.get_running_loop()
        self.parser = httptools.HttpResponseParser(self)
        self.now = 0.0                                # monotonic time of the last read from the socket
        self.stamps: list[float] = []
        self.chunks: list[bytes] = []
        self.status: int | None = None
        self.keep_alive = False
        self.framed = False                           # the body has a length or chunked framing (not "until close")
        self.complete = self.stalled = False
        self.error: str | None = None
        self.done = loop.create_future()
        self.read_any = False
        self.stall_limit = stall_timeout
        self.sent = monotonic()
        self.stall = loop.call_later(stall_timeout, self._check_stall)
        self.grace: asyncio.TimerHandle | None = None

    # asyncio.Protocol
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.now = monotonic()
        self.read_any = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as e:
            self._finish(f"connection: bad HTTP from the server: {str(e)[:120]}")

    def eof_received(self) -> None:
        return None   # close our side as well

    def connection_lost(self, exc: BaseException | None) -> None:
        self.closed = True
        if self.done is not None and not self.done.done():
            if self.status is not None and not self.framed:   # a body that ends when the connection does
                self._finish()
            else:
                why = f"{type(exc).__name__}: {str(exc)[:120]}" if exc else "the server closed the connection"
                self._finish(f"connection: {why} {'mid-response' if self.status else 'before answering'}")

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() in (b"transfer-encoding", b"content-length"):
            self.framed = True

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.keep_alive = self.parser.should_keep_alive()   # read here: llhttp resets it once the message is over

    def on_body(self, body: bytes) -> None:
        self.stamps.append(self.now)
        self.chunks.append(body)
        if body.endswith(_DONE_TAILS) and self.grace is None:   # a server that sends [DONE] and never ends the body
            self.grace = asyncio.get_running_loop().call_later(1.0, self._finish)

    def on_message_complete(self) -> None:
        self.complete = True
        self._finish()

    def _finish(self, error: str | None = None) -> None:
        if not self.done.done():
            self.error = error
            self.done.set_result(None)

    def _check_stall(self) -> None:
        # one timer a request that wakes once per `stall_timeout`, where a socket-read timeout moves on every chunk
        idle = monotonic() - (self.now or self.sent)
        if idle >= self.stall_limit:
            self.stalled = True
            self._finish()
        else:
            self.stall = asyncio.get_running_loop().call_later(self.stall_limit - idle, self._check_stall)

    def end(self) -> None:
        self.stall.cancel()
        if self.grace:
            self.grace.cancel()

    @property
    def reusable(self) -> bool:
        return self.complete and not self.closed and self.keep_alive

    def close(self) -> None:
        self.closed = True
        if self.transport:
            self.transport.abort()


_DONE_TAILS = (b"[DONE]\n", b"[DONE]\n\n", b"[DONE]\r\n", b"[DONE]\r\n\r\n")


class Session:
    """Keep-alive connections to the servers a load talks to, and the headers every request carries."""

    def __init__(self, headers: dict[str, str] | None = None) -> None:
        self.headers = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self.idle: dict[tuple[str, str, int], list[_Conn]] = {}

    async def connect(self, scheme: str, host: str, port: int) -> tuple[_Conn, bool]:
        """An idle connection to (scheme, host, port), or a new one; True when it was used before."""
        idle = self.idle.get((scheme, host, port))
        while idle:
            c = idle.pop()
            if not c.closed and not c.transport.is_closing():
                return c, True
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(10):
                _, c = await loop.create_connection(_Conn, host, port, ssl=scheme == "https" or None)
        except TimeoutError:
            raise ConnectionError(f"no connection to {host}:{port} within 10 s") from None
        sock = c.transport.get_extra_info("socket")
        if sock is not None:   # each request is one small write: send it now
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return c, False

    def release(self, key: tuple[str, str, int], c: _Conn) -> None:
        if c.reusable:
            self.idle.setdefault(key, []).append(c)
        else:
            c.close()

    async def close(self) -> None:
        for conns in self.idle.values():
            for c in conns:
                c.close()
        self.idle.clear()

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()


async def stream(session: Session, url: str, payload: dict, **kw) -> RequestResult:
    """POST `payload` with stream=true to `url` (a /v1/chat/completions or /v1/completions URL).

    A kept-alive connection the server has closed fails before any byte comes back; that one case is retried
    once on a new connection, any other failure is the result.
    """
    res, retry = await _stream_once(session, url, payload, **kw)
    if retry:
        res, _ = await _stream_once(session, url, payload, **kw)
    return res


async def _stream_once(session: Session, url: str, payload: dict, *, scenario: str = "", index: int = 0,
                       timeout: float = 600.0, stall_timeout: float = 60.0,
                       probe_key: str | None = None) -> tuple[RequestResult, bool]:
    body = orjson.dumps({**payload, "stream": True, "stream_options": {"include_usage": True}})
    res = RequestResult(scenario=scenario, index=index)
    u = urlsplit(url)
    key = (u.scheme, u.hostname or "", u.port or (443 if u.scheme == "https" else 80))
    target = (u.path or "/") + (f"?{u.query}" if u.query else "")
    host = u.netloc.rpartition("@")[2]
    head = (f"POST {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: rigbench\r\nAccept: text/event-stream\r\n"
            f"Accept-Encoding: identity\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            f"{session.headers}\r\n").encode()
    res.start = monotonic()
    conn: _Conn | None = None
    reused = False
    try:
        async with asyncio.timeout(timeout):   # one timer for the whole request
            conn, reused = await session.connect(*key)
            conn.begin(stall_timeout)
            conn.transport.write(head + body)
            # TTFT counts from here: the request has been handed to the socket (uvloop writes it at once)
            res.start = conn.sent = monotonic()
            try:
                await conn.done
            finally:
                conn.end()
    except TimeoutError:
        res.error = f"timeout: no end of stream within {timeout:.0f} s"
    except OSError as e:
        res.error = f"connection: {type(e).__name__}: {str(e)[:160]}"
    except asyncio.CancelledError:
        if conn:
            conn.close()
        res.error = "cancelled"
        raise
    if conn is None or res.error:
        if conn:
            conn.close()
        return res, False
    session.release(key, conn)
    res.status = conn.status
    if conn.error:
        res.error = conn.error
        return res, reused and not conn.read_any
    if conn.status != 200:
        text = b"".join(conn.chunks).decode(errors="replace")[:200].replace("\n", " ")
        res.error = f"HTTP {conn.status}: {text}"
        return res, False
    _read_events(conn.stamps, conn.chunks, res, probe_key)
    if conn.stalled:
        res.error = f"stall: no data for {stall_timeout:.0f} s"
    return res, False


def _read_events(stamps: list[float], chunks: list[bytes], res: RequestResult, probe_key: str | None) -> None:
    """Take the SSE events out of the body's reads; each event's time is when the read that ended it arrived."""
    buf = b""
    for now, data in zip(stamps, chunks, strict=True):
        *lines, buf = (buf + data).split(b"\n")
        for line in lines:
            if _event(line, now, res, probe_key):
                return
    # end of the body: a last line without its newline still counts
    if not _event(buf, stamps[-1] if stamps else monotonic(), res, probe_key):
        res.error = "stream ended without [DONE]"
