"""The Anthropic Messages API in front of an OpenAI chat server: requests, replies and streams translated.

Claude Code (and any Anthropic SDK client) speaks `/v1/messages`; llama-server, vLLM and most local servers
speak OpenAI chat. The mapping follows Anthropic's Messages reference
(https://docs.anthropic.com/en/api/messages, streaming: https://docs.anthropic.com/en/api/messages-streaming):
content blocks `text`, `image`, `tool_use`, `tool_result` and `thinking` become OpenAI message content,
`tool_calls`, `role: tool` messages and `reasoning_content`, and back.

`route.server.serve_translating(url)` starts such an endpoint in front of one upstream (used by `eval --agent-cmd`
to point Claude Code at a local model); the router (`rigbench route`) uses the same functions per request.
"""

from __future__ import annotations

import json
import uuid

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use",
                "content_filter": "refusal"}


def _blocks(content) -> list[dict]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [b for b in content or [] if isinstance(b, dict)]


def _text_of(content) -> str:
    return "".join(b.get("text", "") for b in _blocks(content) if b.get("type") == "text")


def _user_parts(blocks: list[dict]) -> list[dict]:
    parts = []
    for b in blocks:
        if b.get("type") == "text":
            parts.append({"type": "text", "text": b.get("text", "")})
        elif b.get("type") == "image":
            src = b.get("source") or {}
            url = (src.get("url") if src.get("type") == "url"
                   else f"data:{src.get('media_type')};base64,{src.get('data')}")
            parts.append({"type": "image_url", "image_url": {"url": url}})
    return parts


def _tool_result_text(b: dict) -> str:
    c = b.get("content")
    text = c if isinstance(c, str) else "\n".join(x.get("text", "") for x in _blocks(c) if x.get("type") == "text")
    # an error result says so in its text: the model sees it, and the router counts it as a failed tool call
    return f"<tool_use_error>{text}</tool_use_error>" if b.get("is_error") and "<tool_use_error>" not in text else text


def to_openai(body: dict) -> dict:
    """An Anthropic Messages request as an OpenAI chat completions request."""
    messages: list[dict] = []
    system = body.get("system")
    if system:
        messages.append({"role": "system", "content": system if isinstance(system, str) else _text_of(system)})
    for m in body.get("messages") or []:
        blocks = _blocks(m.get("content"))
        if m.get("role") == "assistant":
            msg: dict = {"role": "assistant", "content": "".join(b.get("text", "") for b in blocks
                                                                 if b.get("type") == "text")}
            thinking = "".join(b.get("thinking", "") for b in blocks if b.get("type") == "thinking")
            if thinking:
                msg["reasoning_content"] = thinking
            calls = [{"id": b.get("id"), "type": "function",
                      "function": {"name": b.get("name"), "arguments": json.dumps(b.get("input") or {})}}
                     for b in blocks if b.get("type") == "tool_use"]
            if calls:
                msg["tool_calls"] = calls
            messages.append(msg)
            continue
        # a user turn: tool results first (they answer the previous assistant turn), then what the user wrote
        for b in blocks:
            if b.get("type") == "tool_result":
                messages.append({"role": "tool", "tool_call_id": b.get("tool_use_id"), "content": _tool_result_text(b)})
        parts = _user_parts(blocks)
        if parts:
            simple = all(p["type"] == "text" for p in parts)
            messages.append({"role": "user", "content": "".join(p["text"] for p in parts) if simple else parts})
    out: dict = {"model": body.get("model"), "messages": messages, "max_tokens": body.get("max_tokens")}
    for a, o in (("temperature", "temperature"), ("top_p", "top_p"), ("top_k", "top_k"), ("stop_sequences", "stop")):
        if body.get(a) is not None:
            out[o] = body[a]
    tools = [{"type": "function", "function": {"name": t["name"], "description": t.get("description", ""),
                                               "parameters": t.get("input_schema") or {"type": "object"}}}
             for t in body.get("tools") or [] if "name" in t and ("input_schema" in t or "type" not in t)]
    if tools:
        out["tools"] = tools
        tc = body.get("tool_choice") or {}
        kind = tc.get("type")
        if kind == "any":
            out["tool_choice"] = "required"
        elif kind == "tool":
            out["tool_choice"] = {"type": "function", "function": {"name": tc.get("name")}}
        elif kind in ("auto", "none"):
            out["tool_choice"] = kind
        if tc.get("disable_parallel_tool_use"):
            out["parallel_tool_calls"] = False
    if body.get("stream"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out


def _usage(u: dict | None) -> dict:
    u = u or {}
    cached = (u.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    return {"input_tokens": (u.get("prompt_tokens") or 0) - cached, "output_tokens": u.get("completion_tokens") or 0,
            "cache_read_input_tokens": cached, "cache_creation_input_tokens": 0}


def _message_id(oid: str | None) -> str:
    return "msg_" + (oid or uuid.uuid4().hex)


def from_openai(resp: dict, model: str | None) -> dict:
    """An OpenAI chat completion as an Anthropic Messages reply."""
    choice = (resp.get("choices") or [{}])[0]
    msg = choice.get("message") or {}
    content: list[dict] = []
    if msg.get("reasoning_content"):
        content.append({"type": "thinking", "thinking": msg["reasoning_content"], "signature": ""})
    if msg.get("content"):
        content.append({"type": "text", "text": msg["content"]})
    for c in msg.get("tool_calls") or []:
        fn = c.get("function") or {}
        try:
            args = json.loads(fn.get("arguments") or "{}")
        except json.JSONDecodeError:
            args = {"_raw": fn.get("arguments")}
        content.append({"type": "tool_use", "id": c.get("id") or f"toolu_{uuid.uuid4().hex[:24]}",
                        "name": fn.get("name"), "input": args})
    stop = STOP_REASONS.get(choice.get("finish_reason") or "stop", "end_turn")
    if any(b["type"] == "tool_use" for b in content):
        stop = "tool_use"
    return {"id": _message_id(resp.get("id")), "type": "message", "role": "assistant",
            "model": model or resp.get("model"), "content": content, "stop_reason": stop, "stop_sequence": None,
            "usage": _usage(resp.get("usage"))}


def error_body(status: int, message: str) -> dict:
    kind = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
            429: "rate_limit_error", 529: "overloaded_error"}.get(status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


def sse(event: str, data: dict) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class StreamTranslator:
    """OpenAI chat stream chunks in, Anthropic stream events out (message_start, content_block_start /
    _delta / _stop per block, message_delta with the stop reason and usage, message_stop)."""

    def __init__(self, model: str | None):
        self.model = model
        self.started = False
        self.block: str | None = None      # type of the open block
        self.index = -1
        self.tools: dict[int, int] = {}    # OpenAI tool-call index -> block index
        self.stop = "end_turn"
        self.usage: dict = {}
        self.done = False

    def _open(self, kind: str, start: dict) -> list[bytes]:
        out = self._close()
        self.index += 1
        self.block = kind
        out.append(sse("content_block_start", {"type": "content_block_start", "index": self.index,
                                               "content_block": start}))
        return out

    def _close(self) -> list[bytes]:
        if self.block is None:
            return []
        out = []
        if self.block == "thinking":
            out.append(sse("content_block_delta", {"type": "content_block_delta", "index": self.index,
                                                   "delta": {"type": "signature_delta", "signature": ""}}))
        out.append(sse("content_block_stop", {"type": "content_block_stop", "index": self.index}))
        self.block = None
        return out

    def _delta(self, delta: dict) -> bytes:
        return sse("content_block_delta", {"type": "content_block_delta", "index": self.index, "delta": delta})

    def feed(self, chunk: dict) -> list[bytes]:
        out: list[bytes] = []
        if not self.started:
            self.started = True
            out.append(sse("message_start", {"type": "message_start", "message": {
                "id": _message_id(chunk.get("id")), "type": "message", "role": "assistant", "model": self.model,
                "content": [], "stop_reason": None, "stop_sequence": None, "usage": _usage(chunk.get("usage"))}}))
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            d = choice.get("delta") or {}
            if d.get("reasoning_content"):
                if self.block != "thinking":
                    out += self._open("thinking", {"type": "thinking", "thinking": "", "signature": ""})
                out.append(self._delta({"type": "thinking_delta", "thinking": d["reasoning_content"]}))
            if d.get("content"):
                if self.block != "text":
                    out += self._open("text", {"type": "text", "text": ""})
                out.append(self._delta({"type": "text_delta", "text": d["content"]}))
            for tc in d.get("tool_calls") or []:
                i = tc.get("index", 0)
                fn = tc.get("function") or {}
                if i not in self.tools:
                    out += self._open("tool_use", {"type": "tool_use", "name": fn.get("name"), "input": {},
                                                   "id": tc.get("id") or f"toolu_{uuid.uuid4().hex[:24]}"})
                    self.tools[i] = self.index
                if fn.get("arguments"):
                    out.append(sse("content_block_delta", {"type": "content_block_delta", "index": self.tools[i],
                                                           "delta": {"type": "input_json_delta",
                                                                     "partial_json": fn["arguments"]}}))
            if choice.get("finish_reason"):
                self.stop = STOP_REASONS.get(choice["finish_reason"], "end_turn")
        return out

    def finish(self) -> list[bytes]:
        if self.done:
            return []
        self.done = True
        out = [] if self.started else self.feed({})
        out += self._close()
        if self.tools:
            self.stop = "tool_use"
        out.append(sse("message_delta", {"type": "message_delta",
                                         "delta": {"stop_reason": self.stop, "stop_sequence": None},
                                         "usage": {"output_tokens": _usage(self.usage)["output_tokens"],
                                                   "input_tokens": _usage(self.usage)["input_tokens"]}}))
        out.append(sse("message_stop", {"type": "message_stop"}))
        return out

