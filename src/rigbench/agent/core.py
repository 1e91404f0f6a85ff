"""The built-in coding agent: one short loop. `run()` repeats `step()` = `query()` then `observe()` until
the model calls `finish` or a limit (steps, tokens, wall time, the same failing call repeated) ends it.
Replies are streamed and stopped once they repeat themselves; tool calls left in the text are recovered
by `parse`; long outputs keep head and tail; the conversation is compacted near the server's context.
Every request, response (with how it was parsed), tool call, tool output and compaction goes to
`record` as it happens."""

from __future__ import annotations

import json
import time

import openai
from pydantic import BaseModel, Field

from rigbench.agent.config import (
    PROMPTS,
    AgentConfig,
    AgentStats,
    LimitsExceeded,
    Recorder,
    Submitted,
    client,
    server_context,
)
from rigbench.agent.loops import Runaway, Watcher
from rigbench.agent.parse import EXAMPLE, Parsed, parse_reply, validate
from rigbench.agent.tools import TOOLS, execute
from rigbench.sandbox import Sandbox


class Reply(BaseModel):
    """One streamed model reply, as received (or as far as it was read before being stopped)."""
    content: str = ""
    reasoning: str = ""
    native: list[dict] = Field(default_factory=list)    # API tool_calls: {id, type, function: {name, arguments}}
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    seconds: float = 0.0
    repetition: Runaway | None = None    # set when the reply was stopped: repeating itself or past its turn
    timings: dict | None = None

    @property
    def cut_off(self) -> bool:
        return self.finish_reason == "length"


class Agent:
    def __init__(self, cfg: AgentConfig, sb: Sandbox, record: Recorder):
        self.cfg, self.sb, self.record = cfg, sb, record
        self.client = client(cfg)
        self.messages: list[dict] = []
        self.stats = AgentStats()
        self.deadline = 0.0
        self.n_ctx: int | None = cfg.context
        self.failures: dict[str, int] = {}      # failing call -> times it failed
        self.steps: list[str] = []              # one line per call made, for the compaction summary
        self._prompt_tokens, self._prompt_chars = 0, 0

    def run(self, instruction: str) -> AgentStats:
        self.deadline = time.monotonic() + self.cfg.time_limit_s
        if self.n_ctx is None:
            self.n_ctx = server_context(self.cfg)
        self.messages = [{"role": "system", "content": PROMPTS["system"].format(workdir=self.sb.workdir)},
                         {"role": "user", "content": PROMPTS["user"].format(instruction=instruction)}]
        try:
            while True:
                self.step()
        except Submitted:
            return self.stats

    def step(self) -> None:
        if self.stats.turns >= self.cfg.max_steps:
            raise LimitsExceeded(f"step limit {self.cfg.max_steps} reached")
        if self.stats.tokens_in + self.stats.tokens_out >= self.cfg.max_tokens:
            raise LimitsExceeded(f"token limit {self.cfg.max_tokens} reached")
        self.compact()
        reply = self.query()
        parsed = self.parse(reply)
        self.record("response", {"content": reply.content, "reasoning": reply.reasoning or None,
                                 "tool_calls": reply.native, "finish_reason": reply.finish_reason,
                                 "seconds": round(reply.seconds, 3), "prompt_tokens": reply.prompt_tokens,
                                 "completion_tokens": reply.completion_tokens, "timings": reply.timings,
                                 "parse_rule": parsed.rule, "calls": len(parsed.calls), "parse_errors": parsed.errors,
                                 "cut_off": reply.cut_off, "degenerate": reply.repetition is not None,
                                 "stopped_early": reply.repetition is not None,
                                 "repetition": reply.repetition.model_dump() if reply.repetition else None,
                                 **getattr(self, "_route", {})})
        if reply.finish_reason == "time_limit":
            raise TimeoutError("the task's time limit ran out during a reply")
        self.observe(reply, parsed)

    def query(self) -> Reply:
        """Stream one reply; stop reading (which stops the server generating) once it repeats itself."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the task's time limit ran out")
        self.record("request", {"messages": len(self.messages), "last": self.messages[-1]})
        t0 = time.monotonic()
        try:
            stream = self._create(left)
        except openai.BadRequestError as e:
            if "context" not in str(e).lower():
                raise
            self.compact(force=True)      # the server says the prompt does not fit: compact hard, once
            stream = self._create(self.deadline - time.monotonic())
        r, watch, think, calls, chunks = Reply(), Watcher(), Watcher(), {}, 0
        try:
            for chunk in stream:
                if chunk.usage:
                    r.prompt_tokens, r.completion_tokens = chunk.usage.prompt_tokens, chunk.usage.completion_tokens
                r.timings = (chunk.model_extra or {}).get("timings") or r.timings
                if not chunk.choices:
                    continue
                choice, delta = chunk.choices[0], chunk.choices[0].delta
                r.finish_reason = choice.finish_reason or r.finish_reason
                chunks += 1
                if delta.content:
                    r.content += delta.content
                    r.repetition = watch.feed(delta.content)
                thought = getattr(delta, "reasoning_content", None) or (delta.model_extra or {}).get(
                    "reasoning_content")
                if thought:
                    r.reasoning += thought
                    r.repetition = r.repetition or think.feed(thought)
                for tc in delta.tool_calls or []:
                    c = calls.setdefault(tc.index, {"id": "", "type": "function",
                                                    "function": {"name": "", "arguments": ""}})
                    c["id"] = tc.id or c["id"]
                    if tc.function:
                        c["function"]["name"] += tc.function.name or ""
                        c["function"]["arguments"] += tc.function.arguments or ""
                if r.repetition:
                    r.finish_reason = "repetition"
                    break
                if time.monotonic() > self.deadline:
                    r.finish_reason = "time_limit"      # recorded as far as it came, then the task ends
                    break
        finally:
            stream.close()
        r.seconds = time.monotonic() - t0
        r.native = [c for _, c in sorted(calls.items())]
        if r.completion_tokens is None:
            r.completion_tokens = chunks   # stopped early: llama-server streams one token per chunk
        self.stats.turns += 1
        self.stats.tokens_in += r.prompt_tokens or 0
        self.stats.tokens_out += r.completion_tokens or 0
        if r.prompt_tokens:
            self._prompt_tokens, self._prompt_chars = r.prompt_tokens, _chars(self.messages)
        return r

    def _create(self, left: float):
        raw = self.client.with_options(timeout=left).chat.completions.with_raw_response.create(
            model=self.cfg.model, messages=self.messages, tools=TOOLS, temperature=self.cfg.temperature,
            max_tokens=self.cfg.max_response_tokens, stream=True, stream_options={"include_usage": True})
        self._route = _route(raw.headers)    # what a rigbench router said about this request, for the trace
        if "json" in raw.headers.get("content-type", ""):
            # some servers answer a streamed request with one JSON body: read it as the one chunk of its stream
            self._route["json_body"] = True
            return _OneChunk(raw.http_response.read())
        return raw.parse()

    def parse(self, r: Reply) -> Parsed:
        if not r.native:    # past a turn marker the model writes other turns: not its reply
            past = r.repetition is not None and r.repetition.sign == "turn-marker"
            content = r.content[: r.repetition.keep] if past else r.content
            p = parse_reply(content, r.reasoning, truncated=r.cut_off or r.repetition is not None)
            if r.repetition:    # a reply that loops over calls: each distinct call once, up to the first repeat
                seen, calls = set(), []
                for c in p.calls:
                    if (key := json.dumps([c.name, c.arguments], sort_keys=True)) in seen:
                        break
                    seen.add(key)
                    calls.append(c)
                p.calls = calls
            p.errors = list(dict.fromkeys(p.errors))
            return p
        out = Parsed(rule="native")
        for c in r.native:
            call, error = validate(c["function"]["name"], c["function"]["arguments"], c["id"])
            if call:
                out.calls.append(call)
            else:
                out.errors.append(error)
        return out

    def observe(self, r: Reply, parsed: Parsed) -> None:
        content = r.content
        if r.repetition:     # one copy of a loop, nothing past a turn marker: not the runaway itself
            content = content[: r.repetition.keep] + " [...]"
        assistant = {"role": "assistant", "content": content}
        if r.native:
            assistant["tool_calls"] = r.native
        if r.reasoning and self.cfg.keep_reasoning:
            assistant["reasoning_content"] = r.reasoning
        self.messages.append(assistant)
        if r.native:     # every native call id gets its tool message, errors included
            results = {c.id: None for c in parsed.calls}
            for c, err in zip([c for c in r.native if c["id"] not in results], parsed.errors, strict=False):
                self.messages.append({"role": "tool", "tool_call_id": c["id"], "content": err})
                self._failed(f"error:{err}", err)
        if not parsed.calls:
            if not r.native:    # (native calls got their errors as tool messages above)
                self.messages.append({"role": "user", "content": self._feedback(r, parsed)})
                self._failed("reply:" + (parsed.errors[0] if parsed.errors else content.strip()[:2000]),
                             "the same reply without a valid tool call")
            return
        note = ""
        if r.cut_off or r.repetition:
            why = ("cut off at the token limit" if r.cut_off else "stopped because it kept repeating itself"
                   if r.repetition.sign != "turn-marker" else
                   f"stopped because it went on past its end and wrote the next turn ({r.repetition.unit})")
            note = PROMPTS["partial"].format(why=why) + "\n"
        if parsed.errors and not r.native:
            note += PROMPTS["bad_call"].format(errors=" ".join(parsed.errors)) + "\n"
        for call in parsed.calls:
            self.record("tool_call", {**call.model_dump(), "rule": parsed.rule})
            if call.name == "finish":
                raise Submitted(call.arguments.get("summary", ""))
            output, code = execute(self.sb, call, min(self.cfg.command_timeout_s,
                                                      max(1.0, self.deadline - time.monotonic())))
            shown, dropped = self._truncate(output)
            self.record("tool_output", {"id": call.id, "exit_code": code, "output": output[:20000],
                                        "chars": len(output), "dropped_chars": dropped})
            self.steps.append(f"{call.name} {_brief(call.arguments)} -> exit {code}")
            text = note + shown + f"\n[exit code {code}]"
            note = ""
            key = json.dumps([call.name, call.arguments], sort_keys=True)
            if code != 0:
                n = self._failed(key, f"{call.name} {_brief(call.arguments)} (exit {code})")
                if n > 1:
                    text += "\n" + PROMPTS["repeated"].format(n=n, limit=self.cfg.max_repeats)
            else:   # a call that worked, made again with the same result, is a loop too
                n = self._failed(f"same:{key}:{hash(output)}", f"{call.name} {_brief(call.arguments)}",
                                 "the same call was repeated {n} times with the same output: {what}")
                if n > 1:
                    text += "\n" + PROMPTS["same_again"].format(n=n, limit=self.cfg.max_repeats)
            if r.native:
                self.messages.append({"role": "tool", "tool_call_id": call.id, "content": text})
            else:
                self.messages.append({"role": "user", "content": f"Output of {call.name}:\n{text}"})

    def _feedback(self, r: Reply, parsed: Parsed) -> str:
        example = EXAMPLE
        if r.repetition and r.repetition.sign == "turn-marker":
            return PROMPTS["past_turn"].format(tokens=r.completion_tokens, marker=r.repetition.unit, example=example)
        if r.repetition:
            unit = r.repetition.unit.strip()[:80] or repr(r.repetition.unit[:20])
            return PROMPTS["degenerate"].format(tokens=r.completion_tokens, unit=repr(unit), example=example)
        if r.cut_off:
            return PROMPTS["cut_off"].format(tokens=r.completion_tokens, example=example)
        if parsed.errors:
            return PROMPTS["bad_call"].format(errors=" ".join(parsed.errors))
        return PROMPTS["no_tool"].format(example=example)

    def _failed(self, key: str, what: str, why: str = "the same failing call was repeated {n} times: {what}") -> int:
        """Count one more failure of `key`; the task ends when the same one reaches max_repeats."""
        n = self.failures[key] = self.failures.get(key, 0) + 1
        if n >= self.cfg.max_repeats:
            reason = why.format(n=n, what=what[:300])
            self.record("note", {"stop": reason})
            raise LimitsExceeded(reason)
        return n

    def _truncate(self, text: str) -> tuple[str, int]:
        """The output as shown to the model, head and tail kept, and how many characters were cut."""
        n = self.cfg.output_limit
        if self.n_ctx:      # a tool output takes at most about a quarter of a small context (3 chars a token)
            n = min(n, max(1000, self.n_ctx * 3 // 4))
        if len(text) <= n:
            return text, 0
        dropped = len(text) - n
        return text[: n // 2] + "\n" + PROMPTS["truncated"].format(dropped=dropped) + "\n" + text[-n // 2:], dropped

    def _estimate(self, messages: list[dict]) -> int:
        """Prompt tokens the messages will take: the last prompt's count scaled by characters since."""
        chars = _chars(messages)
        if self._prompt_tokens and self._prompt_chars:
            return int(self._prompt_tokens + max(0, chars - self._prompt_chars) / 3)
        return chars // 3

    def compact(self, force: bool = False) -> None:
        """Near the server's context, drop the middle of the conversation (the system prompt, the task and
        the latest messages stay) and put a one-line-per-step summary in its place."""
        if not self.n_ctx:
            return
        budget = self.n_ctx - self.cfg.max_response_tokens - 256
        before = self._estimate(self.messages)
        if before <= budget * 0.9 and not force:
            return
        head, rest = self.messages[:2], self.messages[2:]
        for keep in (6, 4, 2, 1) if not force else (2, 1):
            tail = rest[-keep:]
            while tail and tail[0]["role"] == "tool":      # a tool message needs its assistant call before it
                tail = tail[1:]
            summary = {"role": "user", "content": PROMPTS["compacted"].format(
                removed=len(rest) - len(tail), n_ctx=self.n_ctx, steps="\n".join(self.steps[-30:]) or "none")}
            candidate = [*head, summary, *tail]
            if _chars(candidate) // 3 <= budget * 0.7:
                break
        self.messages = candidate
        self._prompt_tokens = 0       # the scale no longer holds: estimate from characters until the next reply
        self.record("compact", {"n_ctx": self.n_ctx, "estimated_tokens_before": before,
                                "estimated_tokens_after": _chars(candidate) // 3, "messages_before": len(head) +
                                len(rest), "messages_after": len(candidate), "forced": force})


class _OneChunk(list):
    """A whole chat completion (JSON) as a stream of one chunk: its message as the chunk's delta."""

    def __init__(self, body: bytes):
        from openai.types.chat import ChatCompletionChunk

        d = json.loads(body)
        choices = []
        for c in d.get("choices") or []:
            msg = dict(c.get("message") or {})
            msg["tool_calls"] = [{**tc, "index": i} for i, tc in enumerate(msg.get("tool_calls") or [])] or None
            choices.append({"index": c.get("index", 0), "delta": msg, "finish_reason": c.get("finish_reason")})
        super().__init__([ChatCompletionChunk.model_validate(
            {**d, "object": "chat.completion.chunk", "choices": choices, "created": d.get("created", 0),
             "id": d.get("id", ""), "model": d.get("model", "")})])

    def close(self) -> None:
        pass


def _route(headers) -> dict:
    """What a rigbench router said about this request (which upstream and why), for the trace."""
    keys = {"route": "x-rigbench-route", "upstream": "x-rigbench-upstream", "swap": "x-rigbench-swap"}
    return {k: headers[h] for k, h in keys.items() if h in headers}


def verdict(response: dict) -> str:
    """One line on a recorded response: how it was parsed, cut off, stopped."""
    parts = [f"parsed: {response['parse_rule']} ({response.get('calls', 0)} calls)" if response.get("parse_rule")
             else "no call"]
    if response.get("parse_errors"):
        parts.append(f"{len(response['parse_errors'])} bad calls")
    if response.get("cut_off"):
        parts.append(f"cut off at {response.get('completion_tokens')} tokens")
    if response.get("stopped_early"):
        parts.append(f"stopped early ({(response.get('repetition') or {}).get('sign')}) at "
                     f"{response.get('completion_tokens')} tokens")
    return " · ".join(parts)


def _chars(messages: list[dict]) -> int:
    return sum(len(str(m.get("content") or "")) + len(str(m.get("tool_calls") or "")) +
               len(str(m.get("reasoning_content") or "")) for m in messages)


def _brief(args: dict) -> str:
    s = json.dumps(args, ensure_ascii=False)
    return s if len(s) <= 160 else s[:150] + "...}"


def single_turn(cfg: AgentConfig, instruction: str, record: Recorder) -> tuple[str, AgentStats]:
    """One request, one answer (the setup C gauntlet prompts)."""
    messages = [{"role": "system", "content": PROMPTS["single_turn_system"]}, {"role": "user", "content": instruction}]
    record("request", {"messages": 2, "last": messages[-1]})
    r = client(cfg).chat.completions.create(model=cfg.model, messages=messages, temperature=cfg.temperature,
                                       max_tokens=cfg.max_response_tokens * 2)
    msg = r.choices[0].message
    stats = AgentStats(turns=1, tokens_in=r.usage.prompt_tokens if r.usage else 0,
                       tokens_out=r.usage.completion_tokens if r.usage else 0)
    record("response", {"content": msg.content, "finish_reason": r.choices[0].finish_reason,
                        "prompt_tokens": stats.tokens_in, "completion_tokens": stats.tokens_out})
    return msg.content or "", stats
