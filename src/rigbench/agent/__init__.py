"""The built-in coding agent: one short loop. `run()` repeats `step()` = `query()` then `observe()` until
the model calls `finish` or a limit (steps, tokens, wall time) ends it. Every request, response, tool
call and tool output goes to `record` as it happens."""

from __future__ import annotations

import time
from collections.abc import Callable
from importlib import resources

import httpx
import openai
import yaml
from pydantic import BaseModel

from rigbench.agent.tools import TOOLS, ToolCall, execute, parse_content
from rigbench.sandbox import Sandbox

PROMPTS = yaml.safe_load((resources.files("rigbench.agent") / "prompts.yaml").read_text())


class Submitted(Exception):
    pass


class LimitsExceeded(Exception):
    pass


class AgentConfig(BaseModel):
    url: str
    model: str = "default"
    api_key: str = "rigbench"
    max_steps: int = 30
    max_tokens: int = 200_000          # prompt + completion tokens over the whole task
    time_limit_s: float = 600.0
    command_timeout_s: float = 60.0
    output_limit: int = 8000           # characters of tool output shown to the model
    max_response_tokens: int = 2048
    temperature: float = 0.2
    keep_reasoning: bool = True        # send reasoning back with each assistant message (thinking preservation)


class AgentStats(BaseModel):
    turns: int = 0
    tokens_in: int = 0
    tokens_out: int = 0


Recorder = Callable[[str, dict], None]


def v1_url(url: str) -> str:
    """The OpenAI base URL of a server given with or without its /v1."""
    return url.rstrip("/").removesuffix("/v1") + "/v1"


def client(cfg: AgentConfig) -> openai.OpenAI:
    return openai.OpenAI(base_url=v1_url(cfg.url), api_key=cfg.api_key,
                         timeout=httpx.Timeout(cfg.time_limit_s, connect=10), max_retries=1)


class Agent:
    def __init__(self, cfg: AgentConfig, sb: Sandbox, record: Recorder):
        self.cfg, self.sb, self.record = cfg, sb, record
        self.client = client(cfg)
        self.messages: list[dict] = []
        self.stats = AgentStats()
        self.deadline = 0.0

    def run(self, instruction: str) -> AgentStats:
        self.deadline = time.monotonic() + self.cfg.time_limit_s
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
        self.observe(self.query())

    def query(self):
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the task's time limit ran out")
        self.record("request", {"messages": len(self.messages), "last": self.messages[-1]})
        t0 = time.monotonic()
        raw = self.client.with_options(timeout=left).chat.completions.with_raw_response.create(
            model=self.cfg.model, messages=self.messages, tools=TOOLS, temperature=self.cfg.temperature,
            max_tokens=self.cfg.max_response_tokens)
        r = raw.parse()
        self.stats.turns += 1
        u = r.usage
        if u:
            self.stats.tokens_in += u.prompt_tokens or 0
            self.stats.tokens_out += u.completion_tokens or 0
        msg = r.choices[0].message
        reasoning = getattr(msg, "reasoning_content", None) or (msg.model_extra or {}).get("reasoning_content")
        self.record("response", {"content": msg.content, "reasoning": reasoning,
                                 "tool_calls": [c.model_dump() for c in msg.tool_calls or []],
                                 "finish_reason": r.choices[0].finish_reason,
                                 "seconds": round(time.monotonic() - t0, 3),
                                 "prompt_tokens": u.prompt_tokens if u else None,
                                 "completion_tokens": u.completion_tokens if u else None,
                                 "timings": (r.model_extra or {}).get("timings"),
                                 **_route(raw.headers)})
        return msg, reasoning

    def observe(self, reply) -> None:
        msg, reasoning = reply
        calls = [ToolCall(id=c.id, name=c.function.name, arguments=_args(c.function.arguments))
                 for c in msg.tool_calls or []]
        native = bool(calls)
        if not calls:
            calls = parse_content(msg.content or "") + parse_content(reasoning or "")
        assistant = {"role": "assistant", "content": msg.content or ""}
        if native:
            assistant["tool_calls"] = [c.model_dump() for c in msg.tool_calls]
        if reasoning and self.cfg.keep_reasoning:
            assistant["reasoning_content"] = reasoning
        self.messages.append(assistant)
        if not calls:
            self.messages.append({"role": "user", "content": PROMPTS["no_tool"]})
            return
        for call in calls:
            if call.name == "finish":
                self.record("tool_call", call.model_dump())
                raise Submitted(call.arguments.get("summary", ""))
            self.record("tool_call", call.model_dump())
            output, code = execute(self.sb, call, min(self.cfg.command_timeout_s,
                                                      max(1.0, self.deadline - time.monotonic())))
            self.record("tool_output", {"id": call.id, "exit_code": code, "output": output[:20000]})
            text = self._truncate(output) + f"\n[exit code {code}]"
            if native:
                self.messages.append({"role": "tool", "tool_call_id": call.id, "content": text})
            else:
                self.messages.append({"role": "user", "content": f"Output of {call.name}:\n{text}"})

    def _truncate(self, text: str) -> str:
        n = self.cfg.output_limit
        if len(text) <= n:
            return text
        dropped = len(text) - n
        return text[: n // 2] + "\n" + PROMPTS["truncated"].format(dropped=dropped) + "\n" + text[-n // 2:]


def _route(headers) -> dict:
    """What a rigbench router said about this request (which upstream and why), for the trace."""
    keys = {"route": "x-rigbench-route", "upstream": "x-rigbench-upstream", "swap": "x-rigbench-swap"}
    return {k: headers[h] for k, h in keys.items() if h in headers}


def _args(raw: str | None) -> dict:
    import json
    try:
        d = json.loads(raw or "{}")
        return d if isinstance(d, dict) else {"command": str(d)}
    except json.JSONDecodeError:
        return {"command": raw or ""}


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
