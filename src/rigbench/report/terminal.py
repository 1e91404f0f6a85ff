"""Rich tables for the terminal: the stage commands' outputs and the report, from the same rows."""

from __future__ import annotations

import shlex

from rich.console import Console
from rich.table import Table

from rigbench.report.rows import GiB, Report
from rigbench.report.text import eval_rows, grid_rows, plan_table, speed_table, timeline_rows, whatif_rows


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
              "output tok/s", "per-stream tok/s", "prefill tok/s", "repeats", "others' CPU", "notes"):
        t.add_column(c, justify="left" if c in ("scenario", "notes", "repeats") else "right")
    marked = []
    for name, r in rows.items():
        f = r["facts"]
        note = "; ".join(f"{k}={v}" for k, v in f.items() if k not in ("turns", "levels"))
        if "levels" in f:
            note = " ".join(f"{n}:{v['total_tok_s']}" for n, v in f["levels"].items()) + " tok/s"
        rep = r.get("repeats")
        reps = f"{_fmt(rep['median'])} [{_fmt(rep['low'])}-{_fmt(rep['high'])} ×{rep['n']}]" if rep else "-"
        others = "-" if r.get("others_cpu") is None else f"{r['others_cpu']:.0%}"
        if r.get("disturbed"):
            others = f"[red]{others} disturbed?[/]"
            marked.append(f"{name}: " + "; ".join(r["disturbed"]))
        t.add_row(name, str(r["completed"]), str(r["failed"]), _fmt(r["ttft_ms_p50"]), _fmt(r["ttft_ms_p99"]),
                  _fmt(r["tpot_ms_p50"]), _fmt(r["itl_ms_p99"]), _fmt(r["output_tok_s"]),
                  _fmt(r["per_stream_tok_s"]), _fmt(r["prefill_tok_s"]), reps, others, note[:90])
    out.print(t)
    out.print("[dim]repeats: each request's TTFT (ms) or decode speed (tok/s), median \\[lowest-highest ×N]; "
              "others' CPU: the share of all CPUs used by processes other than rigbench and the server[/]")
    for m in marked:
        out.print(f"[red]disturbed?[/] {m}", highlight=False)


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
        out.print(_table("speed: predicted and measured (median \\[lowest-highest ×repeats])",
                         *speed_table(rep)))
    if rep.eval_counts:
        out.print(_table("eval", *eval_rows(rep)))
        out.print(_table("task x candidate", *grid_rows(rep)))
        out.print(_table("where the time went (s)", *timeline_rows(rep)))
    if rep.whatif:
        out.print(_table("what-if: each task predicted on every placement", *whatif_rows(rep)))
    for v in rep.verdict:
        out.print(f"[bold]verdict:[/] {v}", highlight=False)


# ---- the stage commands' tables -----------------------------------------------------------------------

def print_models(out: Console, rows: list[dict]) -> None:
    t = Table(title="catalog models")
    for c in ("name", "arch", "params (B)", "active (B)", "layers", "kind", "context"):
        t.add_column(c, justify="right" if c in ("params (B)", "active (B)", "layers", "context") else "left")
    for r in rows:
        t.add_row(r["name"], r["arch"], f"{r['params_b']}", f"{r['active_b']}", str(r["layers"]), r["kind"],
                  str(r["context"]))
    out.print(t)


def print_rigs(out: Console, items) -> None:
    t = Table(title="rigs (`--rig NAME`, `--rig 2x rtx3090`, `--rig my-rig.yaml`, `--rig detect`)")
    for c in ("name", "GPUs", "VRAM (GiB)", "GPU GB/s", "RAM (GiB)", "RAM GB/s"):
        t.add_column(c)
    for r in items:
        t.add_row(r.name, " + ".join(g.name for g in r.gpus) or "-", gib(r.vram_bytes),
                  " / ".join(f"{g.bandwidth_gbs:.0f}" for g in r.gpus) or "-", gib(r.ram_bytes),
                  f"{r.ram_bandwidth_gbs:.0f}")
    out.print(t)


def print_inspect(out: Console, s, groups: dict[str, int]) -> None:
    out.print(f"[bold]{s.name}[/] ({s.arch}): {s.layers} layers, hidden {s.hidden}, layout {s.layout}")
    t = Table()
    t.add_column("group")
    t.add_column("params (M)", justify="right")
    for g, n in groups.items():
        if n:
            t.add_row(g, f"{n / 1e6:,.1f}")
    out.print(t)
    out.print(f"total {s.total_params() / 1e9:.2f} B, active per token {s.active_params() / 1e9:.2f} B")


def _candidate_row(t: Table, c, measured: dict | None = None) -> None:
    m = measured or {}
    measured_s = f"{m['turn_s']:.2f}" + (" disturbed?" if m.get("disturbed") else "") if m.get("turn_s") else ""
    t.add_row(c.label, c.kv_type, f"{c.turn_s:.2f}", f"{c.prefill_tok_s:,.0f}", f"{c.decode_tok_s:,.1f}",
              f"{c.task_s:,.0f}", gib(c.vram_bytes), f"{c.bound_s:.2f}" if c.bound_s else "",
              f"{c.bound_ratio:.1f}" if c.bound_ratio else "", measured_s, c.note[:60])


def print_tune(out: Console, res, measured: dict[str, dict], prompt: int, output: int, context: int) -> None:
    budget = f", {res.vram_budget_bytes / GiB:.1f} GiB VRAM" if res.vram_budget_bytes else ""
    goal = f"{res.agent}'s whole task" if res.agent else f"a turn of {prompt:,} prompt + {output} output tokens"
    t = Table(title=f"tune {res.model} on {res.rig}{budget}: {goal}, context {context:,} "
                    f"({res.searched} placements searched)")
    for c in ("placement", "KV", "turn s", "prefill tok/s", "decode tok/s", "task s", "VRAM GiB", "bound s",
              "x bound", "measured s", "note"):
        t.add_column(c, justify="left" if c in ("placement", "note", "KV") else "right")
    rows = [res.baseline, *[c for c in res.candidates if c.args != res.baseline.args]]
    if res.kv_alternative is not None:
        rows.append(res.kv_alternative.model_copy(update={
            "note": f"quantised KV cache: {res.kv_alternative_gain:.2f}x; allow with --kv-type "
                    f"{res.kv_alternative.kv_type} (it changes the model's output)"}))
    for c in [*rows, *res.baselines]:
        _candidate_row(t, c, measured.get(c.label))
    out.print(t)
    for label, m in measured.items():
        if m.get("disturbed"):
            out.print(f"[red]disturbed?[/] {label}: " + "; ".join(m["disturbed"]), highlight=False)
    out.print(f"predictions ±{res.uncertainty:.0%} ({res.calibration}); bound: the turn with every part at the "
              f"machine's peak (host link, GPU compute and memory), no kernel overhead")
    out.print(res.verdict)
    for b in res.baselines:
        if b.fits:
            ratio = b.task_s / res.pick.task_s if res.agent else b.turn_s / res.pick.turn_s
            out.print(f"pick vs {b.label}: {ratio:.2f}x "
                      f"(predicted)")
    out.print("command: " + " ".join(shlex.quote(a) for a in res.pick.args))


def print_runs(out: Console, rows: list[dict]) -> None:
    t = Table(title="runs")
    for c in ("id", "kind", "status", "started", "model", "engine", "requests / tasks", "upstreams", "error"):
        t.add_column(c)
    for r in rows:
        t.add_row(str(r["id"]), r["kind"], r["status"], str(r["started_at"])[:19], str(r["model"] or ""),
                  str(r["engine"] or ""), str(r["tasks"] if r["kind"] == "eval" else r["requests"]),
                  r.get("upstreams", ""), (r["error"] or "")[:60])
    out.print(t)


def print_experiments(out: Console, rows: list[dict]) -> None:
    """`rigbench report --list`: one line per stored experiment."""
    for r in rows:
        out.print(f"{r['id']}: {r['name']} ({r['status']}, {str(r['started_at'])[:19]})", highlight=False)


def print_route_check(out: Console, info: dict) -> None:
    """`rigbench route --check`: each upstream (its URL or planned command) and whether they fit side by side."""
    for n, u in info["upstreams"].items():
        out.print(f"[bold]{n}[/]: {u['url'] or u['command']}" + (f" ({u['plan']})" if u["plan"] else ""),
                  soft_wrap=True, highlight=False)
    for line in info["swaps"] or ["all planned upstreams fit side by side"]:
        out.print(line)


def print_compare(out: Console, run_a: int, run_b: int, runs_: list, rows: list[dict]) -> None:
    t = Table(title=f"run {run_a} ({runs_[0][0]['model']}) vs run {run_b} ({runs_[1][0]['model']})")
    for c in ("task", f"{run_a} status", "wall s", "turns", "out tok", f"{run_b} status", "wall s ", "turns ",
              "out tok "):
        t.add_column(c)
    for r in rows:
        t.add_row(r["task"], *(str(r[f"{k}_{i}"] if r[f"{k}_{i}"] is not None else "-") for i in (0, 1)
                               for k in ("status", "wall_s", "turns", "tokens_out")))
    out.print(t)
    for i, rid in enumerate((run_a, run_b)):
        vals = list(runs_[i][1].values())
        ok = sum(v["status"] == "success" for v in vals)
        to = sum(v["status"] == "timeout" for v in vals)
        out.print(f"run {rid}: {ok} success, {to} timeout, {len(vals) - ok - to} other, "
                  f"{sum(v['wall_s'] or 0 for v in vals):.0f} s in all")


def print_agents(out: Console, rows: list[dict]) -> None:
    t = Table(title="agent profiles (catalog agents.yaml): `eval --agent NAME`, `serve/plan/advise --agent NAME`")
    for c in ("agent", "version", "first request", "new/turn", "out/turn", "turns", "context", "installed",
              "measured"):
        t.add_column(c)
    for r in rows:
        m = r.get("measured") or {}
        t.add_row(r["name"], r.get("version") or "-", f"{r['first_prompt']:,}", f"{r['turn_new_tokens']:,}",
                  f"{r['output_tokens']:,}", str(r["turns"]), f"{r['suggested_context']:,}",
                  "built in" if r["name"] == "builtin" else (r["installed"] or f"[red]no[/]: {r.get('install') or ''}"),
                  str(m.get("date", "yes")) if m else "[yellow]assumed[/]")
    out.print(t)


def turn_line(d: dict) -> str:
    """One gateway turn: the API, tokens (cached part), output, time to first byte and in all, and what went wrong."""
    def n(x) -> str:
        return "?" if x is None else f"{x:,}"
    text = (f"{d.get('api')}{' stream' if d.get('stream') else ''} HTTP {d.get('status')}: "
            f"{n(d.get('prompt_tokens'))} prompt tokens ({n(d.get('cached_tokens'))} cached) -> "
            f"{n(d.get('output_tokens'))} out")
    if d.get("ttft_s") is not None:
        text += f", first byte {d['ttft_s']:.2f} s"
    text += f", {d.get('seconds', 0):.2f} s after {d.get('gap_s', 0):.2f} s of agent time"
    if d.get("finish_reason"):
        text += f", {d['finish_reason']}"
    for k in ("fault", "anomaly"):
        if d.get(k):
            text += f" [red]{k}: {d[k]}[/]"
    return text


def print_events(out: Console, events: list[dict]) -> None:
    import json

    for e in events:
        d = e["data"] or {}
        text = d.get("content") or d.get("output") or d.get("command") or json.dumps(d)[:300]
        if e["kind"] == "tool_call":
            text = f"{d.get('name', d.get('agent', ''))} {json.dumps(d.get('arguments', d.get('command', '')))[:300]}"
        if e["kind"] == "turn":                              # a request the recording gateway saw
            text = turn_line(d)
        if e["kind"] == "response" and "parse_rule" in d:    # how the agent read this reply
            from rigbench.agent import verdict
            text = f"[{verdict(d)}] {text}"
        out.print(f"[bold]{e['task']}[/] #{e['attempt']}.{e['seq']} +{e['t']:.1f}s [cyan]{e['kind']}[/] "
                  f"{str(text)[:400]}", highlight=False)


def print_catalog_plans(out: Console, rigs, rows: list[dict]) -> None:
    for r in rigs:
        t = Table(title=f"llama.cpp plans at 32K context on {r.describe()}")
        for c in ("model", "quant", "weights GiB", "VRAM GiB", "RAM GiB", "KV GiB", "fits", "change / note"):
            t.add_column(c)
        for row in (x for x in rows if x["rig"] == r.describe()):
            t.add_row(row["model"], row["quant"], f"{row['weights_gib']}", f"{row['vram_gib']}", f"{row['ram_gib']}",
                      f"{row['kv_gib']}", "[green]yes[/]" if row["fits"] else "[red]no[/]", row["change"])
        out.print(t)


def print_calibration(out: Console, cal) -> None:
    for k, c in cal.classes.items():
        out.print(f"{k}: {c.source}; decode ±{c.decode_uncertainty:.0%}, prefill ±{c.prefill_uncertainty:.0%}; "
                  f"efficiencies " + ", ".join(f"{n} {1 / v:.0%}" for n, v in {**c.decode, **c.prefill}.items()
                                                if n != "overhead"))


def print_task_checks(out: Console, folder, rows, check: bool) -> None:
    """`rigbench tasks`: each task's requirements and, checked, which sandbox can run it here."""
    t = Table(title=f"{len(rows)} tasks in {folder}")
    for c in ("task", "format", "workdir", "image", "network", "cpus", "memory", "needs", *(
            ("bubblewrap", "docker") if check else ())):
        t.add_column(c, overflow="fold")
    for r in rows:
        net = ("on" if r.allow_internet else "off") + (" · verifier downloads" if r.verifier_downloads else "")
        t.add_row(r.task, r.format, r.workdir, r.docker_image or "Dockerfile", net, f"{r.cpus:g}",
                  f"{r.memory_mb} MiB", ", ".join(r.needs) or "-", *((r.bwrap, r.docker) if check else ()))
    out.print(t)


def print_eval_done(out: Console, done) -> None:
    """The end of `rigbench eval`: the task table, the escalation's cost, and the pass rate."""
    outcomes, cost, summary = done.outcomes, done.escalation, done.summary
    out.print(task_table(f"eval run {done.run_id}: {done.config.agent} agent, {len(outcomes)} tasks", outcomes))
    if cost:
        out.print(f"escalation: {cost['tasks']} tasks rerun on {cost['to']}, {cost['rescued']} solved there; "
                  f"+{cost['extra_s']:.1f} s on top of {cost['all_first_s']:.1f} s "
                  f"({cost['first_attempts_s']:.1f} s of it spent on the first attempts)")
    rate = "no task scored" if summary.pass_rate is None else f"pass rate {summary.pass_rate:.1%}"
    out.print(f"{summary.solved}/{summary.scored} solved ({rate}); {summary.errors} errors not counted "
              f"(the environment's, the verifier's or the engine's) · `rigbench show {done.run_id}` for every step")
