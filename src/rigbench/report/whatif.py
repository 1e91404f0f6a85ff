"""Terminal tables of what-if predictions, replays and the advisor's ranking (Rich), from the typed results."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from rigbench.whatif.predict import WhatIf
from rigbench.whatif.replay import ReplayResult

_VERDICT = {"yes": "[green]in time[/]", "no": "[red]timeout[/]", "uncertain": "[yellow]borderline[/]", None: "-"}


def _s(x: float) -> str:
    return f"{x:,.1f}"


def task_table(results: list[WhatIf]) -> Table:
    """One row per task: what was recorded, and each target's predicted agent time and verdict."""
    first = results[0]
    t = Table(title=f"what-if for run {first.run}: predicted agent time per task (model + tools), s")
    for c in ("task", "recorded", "recorded s", "limit s"):
        t.add_column(c, justify="right" if c.endswith(" s") else "left")
    for i in range(1, len(results) + 1):
        t.add_column(f"[{i}] predicted s", justify="right")
        t.add_column(f"[{i}]")
    for k, task in enumerate(first.tasks):
        row = [task.task, task.recorded_status, _s(task.recorded_agent_s),
               _s(task.time_limit_s) if task.time_limit_s else "-"]
        for r in results:
            p = r.tasks[k]
            lb = "≥" if p.lower_bound else ""
            row += [f"{lb}{_s(p.agent_s.value)} ({_s(p.agent_s.low)}–{_s(p.agent_s.high)})", _VERDICT[p.in_time]]
        t.add_row(*row)
    return t


def totals_table(results: list[WhatIf]) -> Table:
    t = Table(title="totals per target (wall = agent time + recorded setup and verifier)")
    for c in ("target", "wall s", "prefill s", "decode s", "tools s", "other s", "timeouts", "prefix cache"):
        t.add_column(c, justify="left" if c in ("target", "prefix cache") else "right")
    for i, r in enumerate(results, 1):
        x = r.totals
        span = f" ({x.timeouts_low}–{x.timeouts_high})" if x.timeouts_low != x.timeouts_high else ""
        t.add_row(f"[{i}] {r.target}", f"{_s(x.wall_s.value)} (±{x.wall_s.uncertainty:.0%})", _s(x.prefill_s),
                  _s(x.decode_s), _s(x.tools_s), _s(x.other_s), f"{x.timeouts}{span} of {x.tasks} (recorded "
                  f"{x.recorded_timeouts})", r.prefix_cache)
    return t


def replay_table(r: ReplayResult) -> Table:
    t = Table(title=f"replay of run {r.source_run} against {r.url} (stored as run {r.run}"
                    f"{'' if r.idle else ', tool time added without waiting'})")
    for c in ("task", "turns", "model s", "tools s", "agent s", "prompt tokens", "reused", "output tokens"):
        t.add_column(c, justify="left" if c == "task" else "right")
    for m in r.tasks:
        reused = [x.cached_tokens for x in m.turns if x.cached_tokens is not None]
        t.add_row(m.task, str(len(m.turns)), _s(m.model_s), _s(m.tools_s), _s(m.agent_s),
                  f"{sum(x.prompt_tokens for x in m.turns):,}", f"{sum(reused):,}" if reused else "?",
                  f"{sum(x.output_tokens for x in m.turns):,}")
    return t


def _limit(a) -> str:
    return "past the limit" if a.task_s_median is None else _s(a.task_s_median)


def advise_tables(r, top: int = 20) -> list[Table]:
    """advise's ranking (plan.advise.Ranking): scored rows by expected tasks solved in time, the Pareto front
    marked, unscored rows apart."""
    mins = r.time_limit_s / 60
    t = Table(title=f"advise: {r.rig}, expected tasks solved within {mins:g} min (pass rate x share in time)")
    for c in ("", "model", "quant", "engine", "pass rate % (at most)", "quant KLD vs FP16", "benchmark", "in time",
              "expected solved", "median task s"):
        t.add_column(c, justify="right" if c in ("pass rate % (at most)", "in time", "expected solved",
                                                 "median task s") else "left")
    for a in r.scored[:top]:
        lo, hi = a.in_time_range
        kld = (a.quant_loss or {}).get("kld")
        t.add_row("[bold]◆[/]" if a.pareto else "", a.model, a.quant, a.engine, f"{a.pass_rate:g}",
                  f"{kld[0]:g}–{kld[1]:g}" if kld else "unknown",
                  a.metric.replace("terminal_bench_2", "Terminal-Bench 2.0").replace(
                      "swe_bench_verified", "SWE-bench Verified"),
                  f"{a.in_time_share:.0%} ({lo:.0%}–{hi:.0%})", f"{a.expected_solved:.1%}", _limit(a))
    front = Table(title="quality-vs-speed Pareto front (◆): no other placement has a higher pass rate and a "
                        "shorter median task")
    for c in ("model", "quant", "engine", "pass rate %", "median task s", "expected solved", "command"):
        front.add_column(c)
    for a in r.pareto:
        front.add_row(a.model, a.quant, a.engine, f"{a.pass_rate:g}", _limit(a), f"{a.expected_solved:.1%}",
                      a.command)
    un = Table(title="without a published agentic score (not ranked): by median task time")
    for c in ("model", "quant", "engine", "in time", "median task s", "command"):
        un.add_column(c)
    for a in r.unscored[:top]:
        un.add_row(a.model, a.quant, a.engine, f"{a.in_time_share:.0%}", _limit(a), a.command)
    return [t, front, un]


def print_whatif(out: Console, results: list[WhatIf]) -> None:
    """`rigbench whatif`: the tasks and totals per target, then each target's uncertainty and notes."""
    out.print(task_table(results))
    out.print(totals_table(results))
    for i, x in enumerate(results, 1):
        out.print(f"[{i}] {x.target}: ±{x.prefill_uncertainty:.0%} prefill, ±{x.decode_uncertainty:.0%} decode "
                  f"({x.calibration})", highlight=False)
        for n in x.notes:
            out.print(f"[dim]note:[/] {n}")


def print_advise(out: Console, r, top: int = 20) -> None:
    """`rigbench advise`: the ranking's tables, then where the task times and pass rates come from."""
    for t in advise_tables(r, top):
        out.print(t)
    out.print(f"[dim]task times: {r.distribution}. Pass rates are published figures of the exact model "
              f"(source and harness in `rigbench models --json`), of the publisher's weights: an upper bound for a "
              f"quant, whose effect on task scores is unknown; KLD: its published next-token divergence from FP16[/]")
