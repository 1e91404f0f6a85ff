"""Rich tables for the terminal: the stage commands' outputs and the report, from the same rows."""

from __future__ import annotations

import shlex

from rich.console import Console
from rich.table import Table

from rigbench.report.rows import GiB, Report
from rigbench.report.text import eval_rows, grid_rows, plan_table, speed_table, timeline_rows


def gib(n: int | float) -> str:
    return f"{n / GiB:,.2f}"


def _table(title: str, header: list[str], rows: list[list[str]]) -> Table:
    t = Table(title=title)
    for i, c in enumerate(header):
        t.add_column(c, justify="left" if i == 0 else "right")
    for r in rows:
        t.add_row(*r)
    return t


def print_plan(out: Console, p) -> None:
    t = Table(title=f"{p.model} on {p.rig}: {p.engine}, {p.quant}, context {p.context:,}")
    for c in ("device", "weights", "KV cache", "recurrent", "compute", "other", "total", "of"):
        t.add_column(c + ("" if c in ("device",) else " GiB"), justify="left" if c == "device" else "right")
    for d in p.devices:
        if d.total == 0 and d.kind == "gpu":
            continue
        t.add_row(d.name, gib(d.weights_bytes), gib(d.kv_cache_bytes), gib(d.recurrent_bytes),
                  gib(d.compute_bytes), gib(d.other_bytes), gib(d.total), gib(d.capacity_bytes))
    out.print(t)
    out.print(f"weights {gib(p.weights_bytes)} GiB · KV cache {p.kv_cache_tokens:,} tokens · "
              f"max concurrency at {p.context:,} tokens: {p.max_concurrency}x")
    for n in p.notes:
        out.print(f"[dim]note:[/] {n}")
    if p.fits:
        out.print("[green]fits[/]")
    else:
        out.print(f"[red]does not fit:[/] {p.reason}")
        if p.suggestion:
            out.print(f"cheapest change: [bold]{p.suggestion}[/]")
        for a in p.alternatives:
            out.print(f"  or: {a}")
    out.print("command: " + " ".join(shlex.quote(a) for a in p.command))


def _est(e) -> str:
    return f"{e.value:,.1f} (±{e.uncertainty:.0%})"


def print_speed(out: Console, sp) -> None:
    out.print(f"[bold]speed[/] ({sp.calibration}): prefill {_est(sp.prefill_tok_s)} tok/s · decode "
              f"{_est(sp.decode_tok_s)} tok/s · TTFT {_est(sp.ttft_ms)} ms for {sp.prompt_tokens:,} new tokens at "
              f"{sp.context:,} · {sp.concurrency} streams {_est(sp.decode_tok_s_concurrent)} tok/s in all")
    split = ", ".join(f"{k} {v:.0%}" for k, v in sp.decode_split.items() if v >= 0.005)
    pre = ", ".join(f"{k} {v:.0%}" for k, v in sp.prefill_split.items() if v >= 0.005)
    out.print(f"  a decoded token's time: {split} · prefill time: {pre}")
    for n in sp.notes:
        out.print(f"[dim]note:[/] {n}")


def print_agent(out: Console, a) -> None:
    pr = a.profile
    out.print(f"[bold]agent task[/] ({pr.turns} turns, first prompt {pr.first_prompt:,} tokens, "
              f"+{pr.turn_new_tokens:,} per turn, {pr.output_tokens} out, "
              f"prefix cache {'on' if pr.prefix_cache else 'off'}): "
              f"{_est(a.total_s)} s; first turn {a.first_turn_s:.1f} s, last {a.last_turn_s:.1f} s, "
              f"prefill {a.prefill_share:.0%} of the time")


def _fmt(x, nd=1) -> str:
    return "-" if x is None else f"{x:,.{nd}f}"


def print_bench(out: Console, rows: dict[str, dict], title: str) -> None:
    t = Table(title=title)
    for c in ("scenario", "ok", "fail", "TTFT p50 ms", "TTFT p99 ms", "TPOT p50 ms", "ITL p99 ms",
              "output tok/s", "per-stream tok/s", "prefill tok/s", "notes"):
        t.add_column(c, justify="left" if c in ("scenario", "notes") else "right")
    for name, r in rows.items():
        f = r["facts"]
        note = "; ".join(f"{k}={v}" for k, v in f.items() if k not in ("turns", "levels"))
        if "levels" in f:
            note = " ".join(f"{n}:{v['total_tok_s']}" for n, v in f["levels"].items()) + " tok/s"
        t.add_row(name, str(r["completed"]), str(r["failed"]), _fmt(r["ttft_ms_p50"]), _fmt(r["ttft_ms_p99"]),
                  _fmt(r["tpot_ms_p50"]), _fmt(r["itl_ms_p99"]), _fmt(r["output_tok_s"]),
                  _fmt(r["per_stream_tok_s"]), _fmt(r["prefill_tok_s"]), note[:90])
    out.print(t)


def task_table(title: str, outcomes) -> Table:
    t = Table(title=title)
    for c in ("task", "status", "wall s", "turns", "tokens in", "tokens out", "detail"):
        t.add_column(c, justify="right" if c in ("wall s", "turns", "tokens in", "tokens out") else "left")
    colors = {"success": "green", "failure": "red", "timeout": "yellow", "error": "magenta"}
    for o in outcomes:
        t.add_row(o.task, f"[{colors.get(o.status, 'white')}]{o.status}[/]", f"{o.wall_s:.1f}", str(o.turns),
                  f"{o.tokens_in:,}", f"{o.tokens_out:,}", o.detail[:60])
    return t


def print_candidates(out: Console, plans) -> None:
    """An experiment's candidates as planned and predicted (`rigbench experiment --predict-only`)."""
    t = Table(title="candidates: plan and predicted speed")
    for c in ("candidate", "model", "engine", "rig", "fits", "weights GiB", "KV tokens", "TTFT short ms",
              "decode tok/s", "TTFT long ms", "throughput tok/s", "agent task s"):
        t.add_column(c, justify="left" if c in ("candidate", "model", "engine", "rig", "fits") else "right")
    for p in plans:
        q = p.predicted
        t.add_row(p.name, p.model, p.engine, p.plan["rig"], "[green]yes[/]" if p.fits else "[red]no[/]",
                  gib(p.plan["weights_bytes"]), f"{p.plan['kv_cache_tokens']:,}", _fmt(q.ttft_short_ms),
                  _fmt(q.decode_tok_s), _fmt(q.ttft_long_ms), _fmt(q.throughput_tok_s), _fmt(q.agent_task_s, 0))
    out.print(t)
    for p in plans:
        out.print(f"[bold]{p.name}[/] on {p.rig}: {p.command}", soft_wrap=True, highlight=False)
        if not p.fits:
            out.print(f"  [red]refused:[/] {p.reason}" + (f"; cheapest change: {p.suggestion}" if p.suggestion else ""),
                      highlight=False)
        for n in p.notes + p.predicted.notes:
            out.print(f"  [dim]note:[/] {n}", highlight=False)


def print_report(out: Console, rep: Report) -> None:
    out.print(f"[bold]{rep.title}[/] ({', '.join(rep.sources)})", highlight=False)
    for p in rep.plans:
        out.print(_table(f"{p.candidate}: {p.model}, {p.engine}, {p.quant or ''} on {p.rig}", *plan_table(p)))
        out.print(f"KV cache {p.kv_tokens:,} tokens · max concurrency {p.max_concurrency:.2f}x · {p.command}",
                  soft_wrap=True, highlight=False)
    if rep.speed:
        out.print(_table("speed: predicted and measured", *speed_table(rep)))
    if rep.eval_counts:
        out.print(_table("eval", *eval_rows(rep)))
        out.print(_table("task x candidate", *grid_rows(rep)))
        out.print(_table("where the time went (s)", *timeline_rows(rep)))
    for v in rep.verdict:
        out.print(f"[bold]verdict:[/] {v}", highlight=False)
