"""The built-in coding agent: one short loop (`core.Agent`), its settings and client (`config`), the tools it
runs in the sandbox (`tools`), the calls recovered from a model's text (`parse`) and the runaway replies it stops
(`loops`). The names below are the package's face."""

from rigbench.agent.config import (
    PROMPTS,
    AgentConfig,
    AgentStats,
    LimitsExceeded,
    Recorder,
    Submitted,
    client,
    server_context,
    v1_url,
)
from rigbench.agent.core import Agent, Reply, single_turn, verdict

__all__ = ["PROMPTS", "Agent", "AgentConfig", "AgentStats", "LimitsExceeded", "Recorder", "Reply", "Submitted",
           "client", "server_context", "single_turn", "v1_url", "verdict"]
