"""rigbench route: one OpenAI- and Anthropic-compatible endpoint in front of named upstreams (config, policy,
upstreams, server, anthropic, accounting)."""
