"""Load generator and speed suite against any OpenAI-compatible endpoint."""

from rigbench.bench.scenarios import SCENARIOS

__all__ = ["SCENARIOS"]
