"""`bench`, `runs`: the speed suite against any OpenAI-compatible endpoint, and the stored runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rigbench.bench import SCENARIOS
from rigbench.cli.common import DbOpt, JsonOpt, emit_json, err, out
from rigbench.procs import stop_exit_code
from rigbench.report import terminal


def bench(
    url: Annotated[str, typer.Option(help="base URL of an OpenAI-compatible server")],
    model_name: Annotated[str | None, typer.Option("--model", help="model to request (default: served)")] = None,
    scenarios: Annotated[str | None, typer.Option(help="comma-separated subset of: " + ", ".join(SCENARIOS))] = None,
    quick: Annotated[bool, typer.Option(help="small sizes: a short run for a small model or a slow machine")] = False,
    sweep: Annotated[str | None, typer.Option(help="concurrency levels, e.g. 1,2,4,8,16")] = None,
    long_context: Annotated[int | None, typer.Option(help="context for the long-context decode")] = None,
    slo: Annotated[str | None, typer.Option(help="goodput SLOs in ms, e.g. ttft=2000,tpot=100")] = None,
    turn: Annotated[str | None, typer.Option(help="`turn` scenario: PROMPT,OUTPUT tokens (default 8000,256)")] = None,
    repeats: Annotated[int | None, typer.Option(help="requests per single-stream scenario")] = None,
    time_limit: Annotated[float, typer.Option(help="seconds per load phase before it stops itself")] = 600,
    db: DbOpt = None,
    csv_path: Annotated[Path | None, typer.Option("--csv", help="also write the table as CSV")] = None,
    as_json: JsonOpt = False,
) -> None:
    """The speed suite against any OpenAI-compatible endpoint; every request is stored as it finishes."""
    from rigbench.bench.stored import run_stored_suite
    from rigbench.bench.suite import BenchConfig
    from rigbench.report.text import write_bench_csv

    cfg = BenchConfig(url=url, model=model_name, time_limit=time_limit)
    if quick:
        cfg = cfg.model_copy(update={"short_prompt": 32, "decode_output": 64, "repeats": 2, "long_context": 4096,
                                     "sweep": [1, 2, 4], "requests_per_level": 1, "sweep_output": 32,
                                     "kv_prompt": 1024, "kv_max_streams": 8, "agent_turns": 4,
                                     "agent_turn_tokens": 200})
    if scenarios:
        cfg.scenarios = [x.strip() for x in scenarios.split(",") if x.strip()]
    if sweep:
        cfg.sweep = [int(x) for x in sweep.split(",")]
    if long_context:
        cfg.long_context = long_context
    if turn:
        cfg.turn_prompt, cfg.turn_output = (int(x) for x in turn.split(","))
    if repeats:
        cfg.repeats = repeats
    if slo:
        cfg.slo_ms = {k.strip(): float(v) for k, v in (kv.split("=") for kv in slo.split(","))}
    bad = [x for x in cfg.scenarios if x not in SCENARIOS]
    if bad:
        raise typer.BadParameter(f"unknown scenario(s) {', '.join(bad)}")
    run_id, status, error, rows, suite = run_stored_suite(
        cfg, db, progress=None if as_json else lambda n: err.print(f"[dim]bench: {n}[/]"))
    info = suite.info
    result = {"run": run_id, "status": status, "error": error, "server": info.model_dump(),
              "exact_prompt_lengths": suite.exact, "scenarios": rows,
              "machine": suite.machine.model_dump() if getattr(suite, "machine", None) else None}
    if csv_path:
        write_bench_csv(rows, csv_path)
    if as_json:
        emit_json(result)
    else:
        terminal.print_bench(out, rows, f"bench run {run_id}: {info.model} on {info.engine} at {info.base} ({status})")
        if error:
            err.print(f"[red]{status}:[/] {error} (finished requests are kept in run {run_id})")
    if status != "done":
        raise typer.Exit(1 if status == "failed" else stop_exit_code(error or ""))


def runs(db: DbOpt = None, as_json: JsonOpt = False) -> None:
    """List stored runs."""
    from rigbench import store
    from rigbench.route.accounting import describe

    dbe = store.connect(db)
    rows = store.list_runs(dbe)
    for r in rows:   # a router run's per-upstream accounting; an escalated eval's cost
        r["upstreams"] = describe(store.run_summaries(dbe, r["id"])) if r["kind"] in ("route", "eval") else ""
    if as_json:
        return emit_json(rows)
    terminal.print_runs(out, rows)
