"""The speed suite's scenarios, in run order (`turn` only when asked for). A module of their own, so that the
CLI's help text needs no import of the load generator."""

SCENARIOS = ("short_ttft", "decode", "ttft_3500", "long_decode", "concurrency", "kv_capacity", "agent_loop", "turn")
