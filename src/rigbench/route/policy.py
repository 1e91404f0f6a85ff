"""Which upstream serves a request, and why: pure functions over the request body and the conversation.

A conversation is found by its shared message prefix: every turn of an agent's task resends the same system
and first user message, so their hash names the conversation without any client cooperation. Escalation is
sticky: once a conversation is sent to the strong upstream, its later turns go there too.
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
from collections import OrderedDict
from dataclasses import dataclass

import orjson

from rigbench.route.config import RouteConfig

CHARS_PER_TOKEN = 4   # the estimate behind the prompt-token rules (no tokenizer on the hot path)


@dataclass
class Decision:
    upstream: str
    reason: str
    prompt_tokens: int
    tools: int
    conversation: str | None = None
    escalated: bool = False        # sent to the escalation upstream (now or earlier in the conversation)
    triggered: bool = False        # this request set the escalation off

    def header(self) -> str:
        """The x-rigbench-route header: `upstream; reason; ~N prompt tokens; T tools[; conversation C]`."""
        parts = [self.upstream, self.reason, f"~{self.prompt_tokens} prompt tokens", f"{self.tools} tools"]
        if self.conversation:
            parts.append(f"conversation {self.conversation}")
        return "; ".join(parts)


def _text(content) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def estimate_prompt_tokens(body: dict) -> int:
    n = len(body["prompt"]) if isinstance(body.get("prompt"), str) else 0
    for m in body.get("messages") or []:
        n += len(_text(m.get("content")))
        for c in m.get("tool_calls") or []:
            n += len((c.get("function") or {}).get("arguments") or "")
    if body.get("tools"):
        n += len(orjson.dumps(body["tools"]))
    return n // CHARS_PER_TOKEN


def conversation_key(messages: list[dict]) -> str | None:
    """A hash of the messages up to and including the first user message (None without one)."""
    for i, m in enumerate(messages):
        if m.get("role") == "user":
            head = orjson.dumps(messages[: i + 1], option=orjson.OPT_SORT_KEYS)
            return hashlib.sha1(head).hexdigest()[:12]
    return None


def _is_tool_result(m: dict) -> bool:
    # rigbench's agent sends results of tool calls parsed from text as user messages "Output of NAME:"
    return m.get("role") == "tool" or (m.get("role") == "user" and _text(m.get("content")).startswith("Output of "))


def failed_tools_in_a_row(messages: list[dict], failure: re.Pattern) -> int:
    """Trailing failed tool calls: results that match `failure` (a non-zero exit, an error), and assistant turns
    whose tool call did not parse (no call and no result follows)."""
    outcomes: list[bool] = []   # True = failed
    for i, m in enumerate(messages):
        if _is_tool_result(m):
            outcomes.append(bool(failure.search(_text(m.get("content")))))
        elif m.get("role") == "assistant" and not m.get("tool_calls"):
            nxt = messages[i + 1] if i + 1 < len(messages) else None
            if nxt is not None and not _is_tool_result(nxt):
                outcomes.append(True)
    n = 0
    for failed in reversed(outcomes):
        if not failed:
            break
        n += 1
    return n


def last_turn_called_no_tool(messages: list[dict]) -> bool:
    """The latest assistant message called no tool and no tool result follows it."""
    for i in range(len(messages) - 1, -1, -1):
        m = messages[i]
        if m.get("role") == "assistant":
            after = messages[i + 1:]
            return not m.get("tool_calls") and not any(_is_tool_result(x) for x in after)
    return False


class Policy:
    def __init__(self, cfg: RouteConfig):
        self.cfg = cfg
        esc = cfg.escalation
        self.failure = re.compile(esc.failure_pattern + r"|<tool_use_error>", re.I) if esc else None
        self.sticky: OrderedDict[str, str] = OrderedDict()   # conversation -> why it was escalated

    def decide(self, body: dict, client_escalates: bool = False) -> Decision:
        messages = body.get("messages") or []
        tools = len(body.get("tools") or [])
        d = Decision(upstream=self.cfg.default, reason="default", prompt_tokens=estimate_prompt_tokens(body),
                     tools=tools, conversation=conversation_key(messages) if messages else None)
        esc = self.cfg.escalation
        if esc and d.conversation:
            why = self.sticky.get(d.conversation)
            if why is None:
                why = self._trigger(messages, tools, client_escalates)
                if why:
                    self.sticky[d.conversation] = why
                    while len(self.sticky) > esc.max_conversations:
                        self.sticky.popitem(last=False)
                    d.triggered = True
                    return self._set(d, esc.to, f"escalated: {why}", True)
            else:
                return self._set(d, esc.to, f"escalated earlier in this conversation: {why}", True)
        elif esc and client_escalates:
            d.triggered = True
            return self._set(d, esc.to, f"escalated: the client sent {esc.header}", True)
        model = str(body.get("model") or "")
        if model in self.cfg.upstreams:
            return self._set(d, model, f"model {model!r} asked for")
        for i, rule in enumerate(self.cfg.rules):
            why = self._matches(rule.when, d, model, messages, body)
            if why:
                return self._set(d, rule.to, f"rule {rule.name or i + 1}: {why}")
        return d

    def _trigger(self, messages: list[dict], tools: int, client_escalates: bool) -> str | None:
        esc = self.cfg.escalation
        if client_escalates:
            return f"the client sent {esc.header}"
        if esc.after_failed_tools and self.failure:
            n = failed_tools_in_a_row(messages, self.failure)
            if n >= esc.after_failed_tools:
                return f"{n} failed tool calls in a row"
        if esc.on_no_tool_call and tools and last_turn_called_no_tool(messages):
            return "the last reply called no tool"
        return None

    @staticmethod
    def _set(d: Decision, upstream: str, reason: str, escalated: bool = False) -> Decision:
        d.upstream, d.reason, d.escalated = upstream, reason, escalated
        return d

    @staticmethod
    def _matches(w, d: Decision, model: str, messages: list[dict], body: dict) -> str | None:
        why = []
        if w.prompt_tokens_over is not None:
            if d.prompt_tokens <= w.prompt_tokens_over:
                return None
            why.append(f"~{d.prompt_tokens} prompt tokens > {w.prompt_tokens_over}")
        if w.prompt_tokens_under is not None:
            if d.prompt_tokens >= w.prompt_tokens_under:
                return None
            why.append(f"~{d.prompt_tokens} prompt tokens < {w.prompt_tokens_under}")
        if w.tools_over is not None:
            if d.tools <= w.tools_over:
                return None
            why.append(f"{d.tools} tools > {w.tools_over}")
        if w.model is not None:
            hit = next((p for p in w.model if fnmatch.fnmatchcase(model, p)), None)
            if hit is None:
                return None
            why.append(f"model {model!r} matches {hit!r}")
        if w.keywords is not None:
            users = [m for m in messages if m.get("role") == "user"]
            text = (_text(users[-1].get("content")) if users else str(body.get("prompt") or "")).lower()
            hit = next((k for k in w.keywords if k.lower() in text), None)
            if hit is None:
                return None
            why.append(f"keyword {hit!r}")
        return ", ".join(why) or "always"
