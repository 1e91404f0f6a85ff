"""Load generator and speed suite against any OpenAI-compatible endpoint."""

# The suite's scenarios, in run order (`turn` only when asked for). Here, not in suite.py, so that the
# CLI's help text needs no import of the load generator.
SCENARIOS = ("short_ttft", "decode", "ttft_3500", "long_decode", "concurrency", "kv_capacity", "agent_loop", "turn")
