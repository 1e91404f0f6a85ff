"""`route`: one OpenAI- and Anthropic-compatible endpoint in front of several models."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from rigbench.cli.common import DbOpt, JsonOpt, emit_json, err, out
from rigbench.errors import RigbenchError


def route(
    config: Annotated[Path, typer.Argument(help="router config YAML (upstreams, rules, escalation, fallback)")],
    host: Annotated[str | None, typer.Option(help="address to listen on (default: the config's)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default: the config's; 0 = a free one)")] = None,
    db: DbOpt = None,
    check: Annotated[bool, typer.Option("--check", help="plan the upstreams, say which get swapped, and exit")]
    = False,
    as_json: JsonOpt = False,
) -> None:
    """One OpenAI- and Anthropic-compatible endpoint in front of named upstreams, routed by the config's rules."""
    import logging

    from rigbench.route import config as route_config
    from rigbench.route.upstreams import Upstreams

    cfg = route_config.load(config)
    cfg = cfg.model_copy(update={k: v for k, v in (("host", host), ("port", port), ("db", db)) if v is not None})
    if check:
        ups = Upstreams(cfg)
        info = {"upstreams": {n: {"url": m.cfg.url, "command": m.launch.shell() if m.launch else None,
                                  "plan": m.plan.reason if m.plan else None} for n, m in ups.up.items()},
                "swaps": ups.fit_note()}
        if as_json:
            return emit_json(info)
        from rigbench.report import terminal

        terminal.print_route_check(out, info)
        return
    try:
        from rigbench.route import server
    except ImportError as e:
        raise RigbenchError(f"rigbench route needs {e.name}: pip install 'rigbench[route]'") from None
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)   # its per-request lines (a planned upstream's health checks)

    def ready(url: str, router) -> None:
        for line in router.upstreams.fit_note():
            err.print(f"[dim]route: {line}[/]")
        if as_json:
            emit_json({"url": url, "base_url": url + "/v1", "run": router.acct.run_id})
        else:
            out.print(f"[green]routing[/] on {url}/v1 (OpenAI) and {url}/v1/messages (Anthropic) · "
                      f"upstreams {', '.join(cfg.upstreams)} · run {router.acct.run_id} · Ctrl-C to stop")

    server.serve(cfg, on_ready=ready)
