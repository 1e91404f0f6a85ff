"""A report from the store: experiments (each candidate's plan, bench and eval runs) or single runs."""

from __future__ import annotations

import statistics

from rigbench import store
from rigbench.errors import RigbenchError
from rigbench.report.rows import (
    Cell,
    Chart,
    EvalCounts,
    GridCell,
    GridRow,
    PlanRow,
    Report,
    Segment,
    Series,
    SpeedRow,
    Timeline,
    WhatIfCell,
    WhatIfRow,
)

# the speed table people publish: (key, label, unit, higher is better)
METRICS = [
    ("ttft_short_ms", "TTFT, short prompt", "ms", False),
    ("decode_tok_s", "decode, one stream", "tok/s", True),
    ("ttft_long_ms", "TTFT, long prompt", "ms", False),
    ("long_decode_tok_s", "decode at long context", "tok/s", True),
    ("throughput_tok_s", "throughput, most streams", "tok/s", True),
    ("kv_contexts", "KV capacity (concurrent contexts)", "contexts", True),
]
SINGLE_STREAM = ("short_ttft", "decode", "ttft_3500", "long_decode")


class ReportError(RigbenchError):
    pass


def _summaries(db, run_id: int) -> dict[str, dict]:
    return {s["scenario"]: s["summary"] for s in store.run_summaries(db, run_id)}


# each figure's scenario: its repeats and the machine during it come from there
FIGURE_SCENARIO = {"ttft_short_ms": "short_ttft", "decode_tok_s": "decode", "ttft_long_ms": "ttft_3500",
                   "long_decode_tok_s": "long_decode", "throughput_tok_s": "concurrency", "kv_contexts": "kv_capacity"}


def measured(db, run_id: int) -> dict:
    """The speed table's figures of one bench run, from its stored summaries; `_repeats` holds each figure's
    values per request (single-stream figures), `_disturbed` the sampler's marks of each figure's scenario."""
    from rigbench.bench.metrics import repeat_values

    s = _summaries(db, run_id)
    reqs: dict[str, list] = {}
    for r in store.run_requests(db, run_id):
        if not r["error"]:
            reqs.setdefault(r["scenario"], []).append((r["ttft"], r["tpot"]))

    def stat(scenario: str, *path):
        v = (s.get(scenario) or {}).get("summary")
        for k in path:
            v = (v or {}).get(k)
        return v

    levels = ((s.get("concurrency") or {}).get("facts") or {}).get("levels") or {}
    top = max(levels, key=int) if levels else None
    kv = ((s.get("kv_capacity") or {}).get("facts") or {}).get("max_concurrent_contexts")
    return {"ttft_short_ms": stat("short_ttft", "ttft_ms", "median"),
            "decode_tok_s": stat("decode", "per_stream_output_tok_s"),
            "ttft_long_ms": stat("ttft_3500", "ttft_ms", "median"),
            "long_decode_tok_s": stat("long_decode", "per_stream_output_tok_s"),
            "throughput_tok_s": levels[top]["total_tok_s"] if top else None,
            "kv_contexts": float(kv) if kv is not None else None,
            "_levels": {int(k): v["total_tok_s"] for k, v in levels.items()},
            "_repeats": {k: repeat_values(sc, reqs.get(sc, [])) for k, sc in FIGURE_SCENARIO.items()},
            "_sampled": {k: bool((s.get(sc) or {}).get("machine")) for k, sc in FIGURE_SCENARIO.items()},
            "_disturbed": {k: ((s.get(sc) or {}).get("machine") or {}).get("disturbed") or []
                           for k, sc in FIGURE_SCENARIO.items()}}


class _Cand:
    """What a report knows of one candidate: its plan step (if from an experiment) and its runs."""

    def __init__(self, name: str):
        self.name = name
        self.plan: dict | None = None           # CandidatePlan as stored
        self.refused: str | None = None
        self.command: str | None = None
        self.bench_runs: list[int] = []
        self.eval_runs: list[int] = []


def _from_experiment(db, eid: int) -> tuple[str, list[_Cand]]:
    e = store.get_experiment(db, eid)
    if not e:
        raise ReportError(f"no experiment {eid} in the store; `rigbench report --list` lists them")
    cands: dict[str, _Cand] = {c["name"]: _Cand(c["name"]) for c in e["config"]["candidates"]}
    for s in store.experiment_steps_of(db, eid):
        c = cands.setdefault(s["candidate"], _Cand(s["candidate"]))
        if s["stage"] == "plan":
            c.plan = s["data"]
            c.refused = (s["data"] or {}).get("why") if s["status"] == "refused" else None
        elif s["stage"] == "serve":
            c.command = (s["data"] or {}).get("command")
        elif s["stage"] == "bench" and s["run_id"] and s["status"] in ("done", "failed", "interrupted"):
            c.bench_runs.append(s["run_id"])
        elif s["stage"] == "eval" and s["run_id"]:
            c.eval_runs.append(s["run_id"])
    return e["name"], list(cands.values())


def _from_run(db, rid: int) -> _Cand:
    r = store.get_run(db, rid)
    if not r:
        raise ReportError(f"no run {rid} in the store; `rigbench runs` lists them")
    c = _Cand(f"run {rid} ({r['model']})")
    (c.bench_runs if r["kind"] == "bench" else c.eval_runs).append(rid)
    return c


def parse_ref(ref: str) -> tuple[str, int]:
    """`3` or `experiment:3` is an experiment; `run:7` a stored bench or eval run."""
    kind, _, num = ref.rpartition(":")
    kind = kind or "experiment"
    if kind not in ("experiment", "run") or not num.isdigit():
        raise ReportError(f"{ref!r} is neither an experiment id (3, experiment:3) nor a run (run:7)")
    return kind, int(num)


def build(db, refs: list[str], accept_disturbed: bool = False) -> Report:
    if not refs:
        known = store.list_experiments(db)
        if not known:
            raise ReportError("the store holds no experiment yet: run `rigbench experiment FILE.yaml`, or name runs "
                              "as run:ID")
        refs = [str(known[-1]["id"])]
    cands: list[_Cand] = []
    titles, sources = [], []
    for ref in refs:
        kind, n = parse_ref(ref)
        sources.append(f"{kind} {n}")
        if kind == "experiment":
            title, cs = _from_experiment(db, n)
            titles.append(title)
            cands += cs
        else:
            cands.append(_from_run(db, n))
    names = [c.name for c in cands]
    if len(set(names)) != len(names):   # the same candidate name in two experiments
        for c, s in zip(cands, _owners(refs, cands, db), strict=True):
            c.name = f"{c.name} ({s})"
        names = [c.name for c in cands]
    rep = Report(title=" + ".join(titles) or "rigbench runs " + ", ".join(refs), sources=sources, candidates=names,
                 accept_disturbed=accept_disturbed)
    bench = {c.name: [measured(db, r) for r in c.bench_runs] for c in cands}
    _plans(rep, cands)
    _speed(rep, cands, bench)
    _charts(rep, db, cands, bench)
    rep.load = _load_chart(db, cands)
    for row in rep.speed:
        for name, cell in row.cells.items():
            if cell.disturbed:
                rep.notes.append(f"{row.label}, {name}: disturbed? " + "; ".join(cell.disturbed))
    _eval(rep, db, cands)
    _whatif(rep, db, cands)
    rep.verdict = verdict(rep)
    return rep


def _owners(refs, cands, db) -> list[str]:
    out = []
    for ref in refs:
        kind, n = parse_ref(ref)
        count = len(_from_experiment(db, n)[1]) if kind == "experiment" else 1
        out += [f"{kind} {n}"] * count
    return out[:len(cands)]


def _plans(rep: Report, cands: list[_Cand]) -> None:
    for c in cands:
        if c.plan and c.plan.get("plan"):
            rep.plans.append(PlanRow.of(c.name, c.plan["plan"], c.command or c.plan.get("command", ""),
                                        c.plan.get("rig", "")))
        if c.refused:
            rep.notes.append(f"{c.name} was refused: {c.refused}")
        for n in (c.plan or {}).get("predicted", {}).get("notes", []):
            rep.notes.append(f"{c.name}: {n}")


def _median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def _speed(rep: Report, cands: list[_Cand], bench: dict[str, list[dict]]) -> None:
    for key, label, unit, hib in METRICS:
        cells = {}
        for c in cands:
            pred = ((c.plan or {}).get("predicted") or {}).get(key)
            runs = bench[c.name]
            meas = _median([m.get(key) for m in runs])
            if pred is not None or meas is not None:
                cells[c.name] = _cell(key, pred, meas, runs)
        if key == "throughput_tok_s":
            ns = {max(m["_levels"]) for c in cands for m in bench[c.name] if m["_levels"]}
            ns |= {int(((c.plan or {}).get("predicted") or {}).get("throughput_curve", [{}])[-1].get("x", 0))
                   for c in cands if ((c.plan or {}).get("predicted") or {}).get("throughput_curve")}
            if len(ns) == 1:
                label = f"throughput, {ns.pop()} streams"
        if cells:
            rep.speed.append(SpeedRow(metric=key, label=label, unit=unit, higher_is_better=hib, cells=cells))


def _cell(key: str, pred: float | None, meas: float | None, runs: list[dict]) -> Cell:
    """A figure with its repeats (each request of a single-stream figure, else each run) and its marks: the
    sampler's for the figure's scenario, and measured/predicted beyond the limit."""
    from rigbench.bench.metrics import spread
    from rigbench.monitor import ratio_mark

    values = [v for m in runs for v in m["_repeats"].get(key, [])] or [m.get(key) for m in runs]
    values = [v for v in values if v is not None]
    marks = list(dict.fromkeys(x for m in runs for x in m["_disturbed"].get(key, [])))
    if (r := ratio_mark(meas, pred)) and meas is not None:
        marks.append(r)
    return Cell(predicted=pred, measured=meas, spread=spread(values) if len(values) >= 2 else None,
                sampled=any(m["_sampled"].get(key) for m in runs), disturbed=marks)


def _load_chart(db, cands: list[_Cand]) -> Chart | None:
    """CPU used by others (and by the measured processes) over each bench run, seconds from its start."""
    series = []
    for c in cands:
        for rid in c.bench_runs:
            rows = store.run_samples(db, rid)
            if not rows:
                continue
            t0 = rows[0]["t"] - rows[0]["dt"]
            name = c.name if len(c.bench_runs) == 1 else f"{c.name} (run {rid})"
            x = [round(r["t"] - t0, 2) for r in rows]
            series.append(Series(name=name, kind="others' CPU %", x=x, y=[round(100 * r["others_cpu"], 1)
                                                                          for r in rows]))
            series.append(Series(name=name, kind="measured CPU %", x=x, y=[round(100 * r["own_cpu"], 1)
                                                                           for r in rows]))
            for g in sorted({g["index"] for r in rows for g in r.get("gpus") or []}):
                series.append(Series(name=name, kind=f"others' GPU {g} %", x=x, y=[
                    next((d.get("foreign_util") or 0.0 for d in r.get("gpus") or [] if d["index"] == g), 0.0)
                    for r in rows]))
    if not series:
        return None
    return Chart(key="load", title="The machine during the bench runs", x_label="seconds since the run started",
                 y_label="% of all CPUs / of the GPU", series=series)


def _charts(rep: Report, db, cands: list[_Cand], bench: dict[str, list[dict]]) -> None:
    ttft, dec, thr = [], [], []
    for c in cands:
        pred = (c.plan or {}).get("predicted") or {}
        reqs = [r for rid in c.bench_runs for r in store.run_requests(db, rid)
                if not r["error"] and r["scenario"] in SINGLE_STREAM]
        pts = sorted((r["prompt_tokens"], r["ttft"] * 1000) for r in reqs if r["ttft"] and r["prompt_tokens"])
        if pts:
            ttft.append(Series(name=c.name, kind="measured", x=[p[0] for p in pts], y=[round(p[1], 2) for p in pts]))
        pts = sorted((r["prompt_tokens"] + (r["output_tokens"] or 0) // 2, 1 / r["tpot"]) for r in reqs
                     if r["tpot"] and r["prompt_tokens"] and r["scenario"] in ("decode", "long_decode"))
        if pts:
            dec.append(Series(name=c.name, kind="measured", x=[p[0] for p in pts], y=[round(p[1], 2) for p in pts]))
        levels: dict[int, list[float]] = {}
        for m in bench[c.name]:
            for n, v in m["_levels"].items():
                levels.setdefault(n, []).append(v)
        if levels:
            ns = sorted(levels)
            thr.append(Series(name=c.name, kind="measured", x=ns, y=[statistics.median(levels[n]) for n in ns]))
        for out, key in ((ttft, "ttft_curve"), (dec, "decode_curve"), (thr, "throughput_curve")):
            if pred.get(key):
                out.append(Series(name=c.name, kind="predicted", x=[p["x"] for p in pred[key]],
                                  y=[p["y"] for p in pred[key]]))
    for key, title, xl, yl, series, logx in (
            ("ttft", "TTFT against prompt length", "prompt tokens", "TTFT (ms)", ttft, True),
            ("decode", "Decode speed against context", "context tokens", "decode (tok/s, one stream)", dec, True),
            ("throughput", "Throughput against concurrency", "concurrent streams", "output tok/s, all streams",
             thr, False)):
        if series:
            rep.charts.append(Chart(key=key, title=title, x_label=xl, y_label=yl, series=series, log_x=logx))


def _model_call(start: float, end: float, timings: dict | None) -> list[Segment]:
    """One model call split into prefill and decode by the server's own timings (the rest of the call is waiting:
    queue, HTTP, template); one `model` segment where the server gave none."""
    tm = timings or {}
    pre, dec = (tm.get("prompt_ms") or 0) / 1000, (tm.get("predicted_ms") or 0) / 1000
    if not tm or pre + dec > end - start + 0.05:
        return [Segment(kind="model", start=start, end=end)]
    pre_end = min(end, start + pre)
    dec_end = min(end, pre_end + dec)
    segs = [Segment(kind="prefill", start=start, end=pre_end), Segment(kind="decode", start=pre_end, end=dec_end)]
    if end > dec_end:
        segs.append(Segment(kind="waiting", start=dec_end, end=end))
    return segs


def _gateway_timeline(events: list[dict]) -> list[Segment]:
    """An agent rigbench only sees through its recording gateway (Claude Code, aider, ...): its model calls as
    the gateway timed them; the time between them is the agent's own and its tools' (`agent`)."""
    turns = sorted((e["data"] for e in events
                    if e["kind"] == "turn" and (e["data"] or {}).get("api") != "count_tokens"),
                   key=lambda d: d["sent_t"])
    segs: list[Segment] = []
    last = 0.0
    for i, d in enumerate(turns):
        start, end = float(d["sent_t"]), float(d["sent_t"]) + float(d["seconds"])
        if start > last:
            segs.append(Segment(kind="other" if i == 0 else "agent", start=last, end=start))
        timings = d.get("timings")
        if not timings and d.get("ttft_s") is not None:   # an API without the server's timings (Anthropic's):
            # its first token as the gateway saw it ends the prefill (queueing included), the rest is decode
            timings = {"prompt_ms": float(d["ttft_s"]) * 1000, "predicted_ms": float(d["seconds"] - d["ttft_s"]) * 1000}
        segs += _model_call(start, end, timings)
        last = max(last, end)
    for e in events:
        if e["kind"] == "verifier":
            t = float(e["t"])
            segs.append(Segment(kind="verifier", start=last, end=t))
            last = t
        elif e["kind"] == "tool_output" and float(e["t"]) > last:   # the agent's process ended
            segs.append(Segment(kind="agent", start=last, end=float(e["t"])))
            last = float(e["t"])
    return [s for s in segs if s.end > s.start]


def timeline(events: list[dict]) -> list[Segment]:
    """Where one task attempt's time went, from its stored trace: each model call split into prefill and
    decode by the server's own timings (the rest of the call is waiting: queue, HTTP, template), each tool
    call's execution, the verifier, and the agent's and sandbox's own time between them. A run with no model
    calls of the built-in agent on record is read from the gateway's turns."""
    if not any(e["kind"] == "request" for e in events) and any(e["kind"] == "turn" for e in events):
        return _gateway_timeline(events)
    segs: list[Segment] = []
    last = 0.0
    pending: tuple[str, float] | None = None
    for e in events:
        t, kind, d = float(e["t"]), e["kind"], e["data"] or {}
        if kind in ("request", "tool_call"):
            if t > last:
                segs.append(Segment(kind="other", start=last, end=t))
            pending, last = (kind, t), t
        elif kind == "response" and pending and pending[0] == "request":
            segs += _model_call(pending[1], t, d.get("timings"))
            pending, last = None, t
        elif kind == "tool_output" and pending and pending[0] == "tool_call":
            segs.append(Segment(kind="tool", start=pending[1], end=t))
            pending, last = None, t
        elif kind == "verifier":
            segs.append(Segment(kind="verifier", start=last, end=t))
            last = t
    return [s for s in segs if s.end > s.start]


def _eval(rep: Report, db, cands: list[_Cand]) -> None:
    grid: dict[str, dict[str, GridCell]] = {}
    for c in cands:
        if not c.eval_runs:
            continue
        counts = EvalCounts(candidate=c.name)
        for rid in c.eval_runs:
            events = store.task_events(db, rid)
            for t in store.task_rows(db, rid):
                st = t["status"]
                if st in ("success", "failure", "timeout", "error"):
                    setattr(counts, st, getattr(counts, st) + 1)
                else:
                    counts.other += 1
                counts.wall_s = round(counts.wall_s + (t["wall_s"] or 0), 2)
                grid.setdefault(t["task"], {})[c.name if len(c.eval_runs) == 1 else f"{c.name} (run {rid})"] = \
                    GridCell(status=st, wall_s=t["wall_s"] or 0, turns=t["turns"] or 0, run_id=rid)
                ev = [e for e in events if e["task"] == t["task"] and e["attempt"] == t["attempt"]]
                rep.timelines.append(Timeline(task=t["task"], candidate=c.name, segments=timeline(ev)))
        rep.eval_counts.append(counts)
    rep.grid = [GridRow(task=k, cells=v) for k, v in sorted(grid.items())]


def _target(c: _Cand):
    """A candidate's placement as a what-if target: its stored plan, the model and rig it names."""
    from rigbench import hardware
    from rigbench import model as model_mod
    from rigbench.plan.memory import Plan
    from rigbench.whatif import Target

    cp = c.plan or {}
    if not cp.get("plan") or not cp.get("model"):
        return None
    try:
        plan = Plan.model_validate(cp["plan"])
        rig = hardware.Rig.model_validate(cp["rig_spec"]) if cp.get("rig_spec") else hardware.load(plan.rig)
        spec = model_mod.load(cp.get("weights") or cp["model"])
        if not all("read_bytes_per_token" in d for d in cp["plan"].get("devices", [])):
            # stored before plans kept what a token reads on each device: planned again from its command
            from rigbench.engines.options import parse_command
            from rigbench.plan import memory

            plan = memory.plan(spec, rig, parse_command(cp["command"]), cp.get("quant"))
        return Target(label=c.name, spec=spec, rig=rig, plan=plan)
    except Exception as e:   # a model file or rig no longer there: the report still renders, and says so
        return f"{c.name}: no what-if target ({type(e).__name__}: {str(e)[:120]})"


def _whatif(rep: Report, db, cands: list[_Cand]) -> None:
    """Every stored eval task, predicted on every candidate's placement beside its measured wall time."""
    from rigbench.whatif import load, predict

    targets = []
    for c in cands:
        t = _target(c)
        if isinstance(t, str):
            rep.notes.append(t)
        elif t is not None:
            targets.append(t)
    if not targets:
        return
    for c in cands:
        for rid in c.eval_runs:
            try:
                trace = load(db, rid)
            except RigbenchError as e:
                rep.notes.append(f"what-if of run {rid}: {e}")
                continue
            stored = {t["task"]: t for t in store.task_rows(db, rid)}
            preds = [predict(trace, t) for t in targets]
            for i, task in enumerate(t.task for t in trace.tasks if t.turns):
                row = stored.get(task) or {}
                rep.whatif.append(WhatIfRow(
                    task=task, ran_on=c.name, run_id=rid, status=row.get("status") or "?",
                    measured_s=round(row.get("wall_s") or 0.0, 2),
                    cells={tg.label: WhatIfCell(predicted_s=p.tasks[i].wall_s.value, low_s=p.tasks[i].wall_s.low,
                                                high_s=p.tasks[i].wall_s.high, in_time=p.tasks[i].in_time)
                           for tg, p in zip(targets, preds, strict=True)}))


def speed_verdict(row: SpeedRow, accept_disturbed: bool = False) -> str | None:
    """Who wins one speed figure. On measured figures a win needs the repeats' spreads to separate; figures
    marked "disturbed?" are left out of the comparison unless `accept_disturbed`."""
    measured = all(c.measured is not None for c in row.cells.values())
    marked = [k for k, c in row.cells.items() if c.disturbed and c.measured is not None]
    left_out = ""
    if measured and marked and not accept_disturbed:
        rest = {k: c for k, c in row.cells.items() if k not in marked}
        if len(rest) < 2:
            if row.best() is None:
                return None
            return (f"{row.label}: inconclusive ({', '.join(marked)} disturbed?: {row.cells[marked[0]].disturbed[0]}; "
                    f"--accept-disturbed compares anyway)")
        row = row.model_copy(update={"cells": rest})
        left_out = f"; {', '.join(marked)} left out, disturbed?"
    b = row.best()
    if not b:
        return None
    w, wv, r, rv = b
    if not measured:
        return f"{row.label}: {w} wins, {_num(wv)} {row.unit} against {r}'s {_num(rv)} ({row.ratio():.2f}x, predicted)"
    sw, sr = row.cells[w].spread, row.cells[r].spread
    if sw is None or sr is None:
        return (f"{row.label}: inconclusive (one measurement: {w} {_num(wv)} {row.unit} against {r}'s {_num(rv)}; "
                f"repeat the runs for a spread{left_out})")
    if sw.overlaps(sr):
        return (f"{row.label}: inconclusive (overlapping spreads: {w} {_num(wv)} [{_num(sw.low)}-{_num(sw.high)}] "
                f"against {r}'s {_num(rv)} [{_num(sr.low)}-{_num(sr.high)}] {row.unit}{left_out})")
    accepted = ", disturbed figures accepted" if marked and accept_disturbed else left_out
    return (f"{row.label}: {w} wins, {_num(wv)} {row.unit} against {r}'s {_num(rv)} ({row.ratio():.2f}x, measured, "
            f"spreads of {sw.n} and {sr.n} repeats apart{accepted})")


def verdict(rep: Report) -> list[str]:
    """Sentences computed from the rows: who wins each speed figure and by how much, and the eval score."""
    out = []
    for row in rep.speed:
        if v := speed_verdict(row, rep.accept_disturbed):
            out.append(v)
    if len(rep.eval_counts) >= 2:
        ranked = sorted(rep.eval_counts, key=lambda e: (-e.success, e.wall_s))
        a, b = ranked[0], ranked[1]
        total = a.success + a.failure + a.timeout + a.error + a.other
        if a.success > b.success:
            out.append(f"tasks: {a.candidate} solves {a.success}/{total} against {b.candidate}'s {b.success}")
        else:
            faster = min(rep.eval_counts, key=lambda e: e.wall_s)
            out.append(f"tasks: a tie at {a.success}/{total} solved; {faster.candidate} takes the least time "
                       f"({faster.wall_s:.0f} s in all)")
    elif len(rep.eval_counts) == 1:
        a = rep.eval_counts[0]
        out.append(f"tasks: {a.candidate} solves {a.success} of "
                   f"{a.success + a.failure + a.timeout + a.error + a.other} in {a.wall_s:.0f} s")
    for n in rep.notes:
        if " was refused: " in n:
            out.append(n)
    return out


def _num(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:,.1f}"
