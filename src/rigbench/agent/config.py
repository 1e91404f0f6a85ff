"""The built-in agent's settings and its connection: the prompts, the limits, the OpenAI client and what the
server says of its context."""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources

import httpx
import openai
import yaml
from pydantic import BaseModel

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
    max_repeats: int = 3               # the same failing call this many times ends the task
    context: int | None = None         # the server's context in tokens (None: ask llama-server's /props)


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


def server_context(cfg: AgentConfig) -> int | None:
    """The context size of the server's slot (llama-server's /props), or None where it does not say."""
    base = cfg.url.rstrip("/").removesuffix("/v1")
    try:
        r = httpx.get(base + "/props", timeout=5, headers={"Authorization": f"Bearer {cfg.api_key}"})
        return int(r.json()["default_generation_settings"]["n_ctx"])
    except (httpx.HTTPError, KeyError, TypeError, ValueError):
        return None
