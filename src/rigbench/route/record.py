"""What one model request through the recording gateway was, read from the engine's own bytes: prompt, cached
and output tokens (llama-server's `timings`, else the API's `usage`), the finish reason, and whether the
harness rather than the model is to blame for how it went (a fault).

Pure functions over the bytes the gateway kept of a reply: its head (the first chunks: an Anthropic stream's
`message_start` carries the prompt's usage), its tail (the last chunks: OpenAI's final chunk with usage and
timings, Anthropic's `message_delta`) or, for a JSON reply, all of it.
"""

from __future__ import annotations

import re

import orjson
from pydantic import BaseModel

_CONTEXT = re.compile(r"\((\d+) tokens\) (?:exceeds the available context size|is larger than the max context "
                      r"size) \((\d+)")
_VLLM_CONTEXT = re.compile(r"maximum context length is (\d+) tokens.*?(?:requested|you requested) (\d+) tokens",
                           re.S)

API_OF_PATH = {"/v1/chat/completions": "chat", "/v1/completions": "completions", "/v1/messages": "messages",
               "/v1/messages/count_tokens": "count_tokens"}


class Turn(BaseModel):
    """One request an agent made, as the gateway saw it (trace event kind `turn`)."""
    api: str                          # chat | completions | messages | count_tokens
    model: str | None = None          # what the agent asked for
    stream: bool = False
    status: int = 0
    sent_t: float                     # seconds into the task when the request arrived
    gap_s: float                      # since the previous reply ended (or the task began): the agent's own and
                                      # its tools' time
    ttft_s: float | None = None       # request arrived -> first byte of the reply
    decode_s: float | None = None     # first byte -> last byte
    seconds: float                    # request arrived -> last byte
    prompt_tokens: int | None = None  # the whole prompt, cached part included
    cached_tokens: int | None = None  # what the server reused of it
    output_tokens: int | None = None
    finish_reason: str | None = None
    request_bytes: int = 0
    response_bytes: int = 0
    timings: dict | None = None       # the engine's own (llama-server: prompt_n, cache_n, predicted_n, *_ms)
    usage_from: str = "none"          # timings | usage | none
    fault: str | None = None          # the harness's fault (server error, context overflow, broken stream)
    anomaly: str | None = None        # something the agent may or may not have coped with (JSON to a stream)
    stream_usage_added: bool = False  # the gateway asked for the usage chunk and kept it from the agent
    client_left: bool = False         # the agent stopped reading before the end (its choice)

    @property
    def generates(self) -> bool:
        return self.api != "count_tokens"

    @property
    def processed_tokens(self) -> int:
        """Prompt tokens the server computed (not reused): what llama-server's prompt_tokens_total counts."""
        return max(0, (self.prompt_tokens or 0) - (self.cached_tokens or 0))


def _events(data: bytes) -> list[dict]:
    """The JSON objects of an SSE byte string's `data:` lines (lines cut at either end are skipped)."""
    out = []
    for line in data.split(b"\n"):
        line = line.strip()
        if not line.startswith(b"data:"):
            continue
        payload = line[5:].strip()
        if not payload or payload == b"[DONE]":
            continue
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


def _openai(objs: list[dict], t: Turn) -> None:
    usage, timings = None, None
    for o in objs:
        usage = o.get("usage") or usage
        timings = o.get("timings") or timings
        for c in o.get("choices") or []:
            t.finish_reason = c.get("finish_reason") or t.finish_reason
    if timings and "prompt_n" in timings:
        t.timings = timings
        t.cached_tokens = int(timings.get("cache_n") or 0)
        t.prompt_tokens = int(timings["prompt_n"]) + t.cached_tokens
        t.output_tokens = int(timings.get("predicted_n") or 0)
        t.usage_from = "timings"
    elif usage:
        details = usage.get("prompt_tokens_details") or {}
        t.prompt_tokens = usage.get("prompt_tokens")
        t.cached_tokens = details.get("cached_tokens")
        t.output_tokens = usage.get("completion_tokens")
        t.usage_from = "usage"


def _anthropic(objs: list[dict], t: Turn) -> None:
    usage: dict = {}
    for o in objs:
        kind = o.get("type")
        if kind == "message_start":
            usage.update((o.get("message") or {}).get("usage") or {})
        elif kind == "message_delta":
            usage.update({k: v for k, v in (o.get("usage") or {}).items() if v is not None})
            t.finish_reason = (o.get("delta") or {}).get("stop_reason") or t.finish_reason
        elif kind == "message":      # a whole (non-streamed) reply
            usage.update(o.get("usage") or {})
            t.finish_reason = o.get("stop_reason") or t.finish_reason
        if o.get("timings"):
            t.timings = o["timings"]
    if t.timings and "prompt_n" in t.timings:     # llama-server's own figures, as for its OpenAI API
        t.cached_tokens = int(t.timings.get("cache_n") or 0)
        t.prompt_tokens = int(t.timings["prompt_n"]) + t.cached_tokens
        t.output_tokens = int(t.timings.get("predicted_n") or 0)
        t.usage_from = "timings"
    elif "input_tokens" in usage or "output_tokens" in usage:
        cached = int(usage.get("cache_read_input_tokens") or 0)
        t.cached_tokens = cached
        t.prompt_tokens = int(usage.get("input_tokens") or 0) + cached + int(
            usage.get("cache_creation_input_tokens") or 0)
        t.output_tokens = int(usage.get("output_tokens") or 0)
        t.usage_from = "usage"


def error_reason(status: int, body: bytes) -> str:
    """One line on an engine's error reply; a prompt over the context says by how much."""
    text = body.decode("utf-8", "replace")
    try:
        obj = orjson.loads(body)
        err = obj.get("error", obj) if isinstance(obj, dict) else obj
        msg = (err.get("message") if isinstance(err, dict) else None) or text
    except orjson.JSONDecodeError:
        msg = text
    if m := _CONTEXT.search(msg):
        return f"request of {int(m[1]):,} tokens exceeds the server's {int(m[2]):,}-token context"
    if m := _VLLM_CONTEXT.search(msg):
        return f"request of {int(m[2]):,} tokens exceeds the server's {int(m[1]):,}-token context"
    msg = " ".join(str(msg).split())
    return f"the engine answered HTTP {status}: {msg[:240]}" if msg else f"the engine answered HTTP {status}"


def fill(t: Turn, *, head: bytes, tail: bytes, whole: bytes | None, content_type: str, events: int,
         transport_error: str | None, translated: bool = False) -> Turn:
    """Complete `t` (api, stream, status and times set) from what the gateway kept of the reply: the engine's
    bytes, OpenAI chat where a Messages request was `translated`."""
    sse = "text/event-stream" in content_type
    if t.status >= 400:
        t.fault = error_reason(t.status, whole if whole is not None else head + tail)
        return t
    if transport_error and not t.client_left:
        t.fault = f"the engine's reply broke off: {transport_error}"
    if t.api == "count_tokens":
        return t
    if t.stream and not sse:
        t.anomaly = "the engine answered a streamed request with one JSON body"
    if whole is not None and not sse:
        try:
            obj = orjson.loads(whole)
        except orjson.JSONDecodeError:
            t.fault = t.fault or "the engine's reply is not JSON"
            return t
        objs = [obj] if isinstance(obj, dict) else []
    else:
        objs = _events(head) + _events(tail)      # a short reply is in both: reading it twice changes nothing
    (_anthropic if t.api == "messages" and not translated else _openai)(objs, t)
    if t.stream and sse and not t.client_left and t.fault is None:   # (a translated stream: the engine's own)
        if events == 0:
            t.fault = "the engine's stream was empty"
        elif t.finish_reason is None:
            t.fault = "the engine's stream ended before the reply finished"
    return t


def strip_usage_chunk(buf: bytes) -> tuple[bytes, bytes, list[bytes]]:
    """An OpenAI stream with the usage-only chunk (`choices: []`, which the gateway asked for and the agent did
    not) taken out: (complete events to pass on, an unfinished event to keep for the next bytes, the events
    taken out)."""
    *done, rest = buf.split(b"\n\n")
    keep, dropped = [], []
    for ev in done:
        (dropped if b'"usage"' in ev and _usage_only(ev) else keep).append(ev + b"\n\n")
    return b"".join(keep), rest, dropped


def _usage_only(event: bytes) -> bool:
    objs = _events(event)
    return bool(objs) and all(not o.get("choices") and o.get("usage") for o in objs)
