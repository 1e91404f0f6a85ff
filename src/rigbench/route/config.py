"""The router's configuration: named upstreams, the rules that pick one, escalation and fallback (YAML)."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from rigbench.errors import RigbenchError


class RouteConfigError(RigbenchError):
    """A router config that cannot be read or refers to an upstream it does not define."""


class PlannedUpstream(BaseModel):
    """A llama-server rigbench plans on the rig, starts on first use and stops (or swaps out) itself."""
    model_config = ConfigDict(extra="forbid")
    model: str                       # a .gguf (catalog names need `weights`)
    weights: str | None = None
    args: list[str] = []             # llama-server flags, e.g. ["-c", "4096", "-np", "1", "--jinja"]
    server_bin: str | None = None
    start_timeout_s: float = 300.0


class Upstream(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str | None = None           # an OpenAI-compatible server nobody here started (with or without /v1)
    plan: PlannedUpstream | None = None
    model: str | None = None         # the model name sent upstream (default: what the client asked for)
    api_key: str | None = None
    anthropic: bool = False          # the upstream serves /v1/messages itself; otherwise rigbench translates
    usage_in_stream: bool = False    # every stream ends with its usage unasked (llama-server's timings): the
                                     # recording gateway need not add stream_options to learn the tokens
    timeout_s: float = 600.0         # a request with no byte for this long counts as failed (fallback)

    @model_validator(mode="after")
    def _one_kind(self) -> Upstream:
        if (self.url is None) == (self.plan is None):
            raise ValueError("an upstream has either `url` or `plan`")
        return self


class When(BaseModel):
    """Conditions of a rule; all the given ones must hold."""
    model_config = ConfigDict(extra="forbid")
    prompt_tokens_over: int | None = None
    prompt_tokens_under: int | None = None
    tools_over: int | None = None
    model: list[str] | None = None           # aliases the client asked for (fnmatch patterns)
    keywords: list[str] | None = None        # any of them in the last user message (case-insensitive)


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to: str
    when: When
    name: str | None = None


class Escalation(BaseModel):
    """Within a conversation: once a trigger fires, this and later turns go to `to` (sticky)."""
    model_config = ConfigDict(extra="forbid")
    to: str
    after_failed_tools: int | None = 3        # tool results in a row that failed (non-zero exit, parse error)
    on_no_tool_call: bool = True              # the last assistant turn offered tools but called none
    header: str = "x-rigbench-escalate"       # a client sends it (any value) to escalate its conversation
    failure_pattern: str = r"\[exit code [1-9][0-9]*\]|exit code:? [1-9]|Traceback \(most recent|invalid tool call"
    max_conversations: int = 10000            # sticky entries kept (oldest dropped)


class RouteConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    host: str = "127.0.0.1"
    port: int = 8080
    rig: str | None = None                    # for planned upstreams: catalog rig, YAML, 'detect' (default)
    upstreams: dict[str, Upstream]
    default: str
    rules: list[Rule] = []
    escalation: Escalation | None = None
    fallback: dict[str, str] = {}             # upstream -> the one to try when it errors or times out
    db: str | None = None                     # store URL (default .rigbench/rigbench.db)
    log_requests: bool = True

    @model_validator(mode="after")
    def _names(self) -> RouteConfig:
        names = set(self.upstreams)
        refs = [("default", self.default)] + [(f"rule {i + 1}", r.to) for i, r in enumerate(self.rules)]
        if self.escalation:
            refs.append(("escalation", self.escalation.to))
        refs += [(f"fallback of {k}", v) for k, v in self.fallback.items()] + [("fallback", k) for k in self.fallback]
        for where, n in refs:
            if n not in names:
                raise ValueError(f"{where} names upstream {n!r}, which is not one of {sorted(names)}")
        return self


def load(path: Path | str) -> RouteConfig:
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise RouteConfigError(f"cannot read router config {p}: {e}") from None
    if not isinstance(data, dict):
        raise RouteConfigError(f"{p}: a router config is a mapping with `upstreams` and `default`")
    try:
        return RouteConfig(**data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"])
        msg = first["msg"].removeprefix("Value error, ")
        raise RouteConfigError(f"{p}: {where + ': ' if where else ''}{msg} (see README: rigbench route)") from None
