"""Rows as plain cells (strings), shared by the terminal tables, Markdown and HTML."""

from __future__ import annotations

from rigbench.report.rows import PlanRow, Report


def fmt(x, nd: int | None = None) -> str:
    if x is None:
        return "-"
    if nd is None:
        nd = 0 if abs(x) >= 100 else 1 if abs(x) >= 10 else 2
    return f"{x:,.{nd}f}"


PLAN_HEADER = ["device", "weights GiB", "KV GiB", "state GiB", "compute GiB", "other GiB", "total GiB", "of GiB"]


def plan_table(p: PlanRow) -> tuple[list[str], list[list[str]]]:
    return PLAN_HEADER, [[d.device, f"{d.weights_gib:.2f}", f"{d.kv_gib:.2f}", f"{d.state_gib:.2f}",
                          f"{d.compute_gib:.2f}", f"{d.other_gib:.2f}", f"{d.total_gib:.2f}", f"{d.capacity_gib:.2f}"]
                         for d in p.devices]


DISTURBED = "disturbed?"


def measured_text(cell) -> str:
    """`48.3 [47.1-49.0 ×3]`: the median of the repeats, the lowest and highest, how many; `disturbed?` after a
    figure the machine's other users (or its distance from the prediction) put in doubt."""
    if cell is None or cell.measured is None:
        return fmt(None)
    text = fmt(cell.measured)
    if cell.spread:
        text += f" [{fmt(cell.spread.low)}-{fmt(cell.spread.high)} ×{cell.spread.n}]"
    return text + (f" {DISTURBED}" if cell.disturbed else "")


def speed_table(rep: Report) -> tuple[list[str], list[list[str]]]:
    """One row per figure: for each candidate predicted and measured, then the winner's ratio."""
    header = ["figure", "unit"]
    for c in rep.candidates:
        header += [f"{c} predicted", f"{c} measured"]
    header += ["ratio"]
    rows = []
    for r in rep.speed:
        row = [r.label, r.unit]
        for c in rep.candidates:
            cell = r.cells.get(c)
            row += [fmt(cell.predicted if cell else None), measured_text(cell)]
        ratio, best = r.ratio(), r.best()
        row.append(f"{ratio:.2f}x {best[0]}" if ratio and best else "-")
        rows.append(row)
    return header, rows


def eval_rows(rep: Report) -> tuple[list[str], list[list[str]]]:
    return (["candidate", "success", "failure", "timeout", "error", "other", "wall s"],
            [[e.candidate, str(e.success), str(e.failure), str(e.timeout), str(e.error), str(e.other), fmt(e.wall_s)]
             for e in rep.eval_counts])


def grid_rows(rep: Report) -> tuple[list[str], list[list[str]]]:
    cols = sorted({k for g in rep.grid for k in g.cells})
    rows = []
    for g in rep.grid:
        rows.append([g.task, *("-" if (c := g.cells.get(k)) is None else f"{c.status} {c.wall_s:.1f} s"
                              for k in cols)])
    return ["task", *cols], rows


def timeline_rows(rep: Report) -> tuple[list[str], list[list[str]]]:
    kinds = ["prefill", "decode", "waiting", "model", "tool", "agent", "verifier", "other"]
    rows = []
    for t in rep.timelines:
        tot = t.totals()
        rows.append([t.task, t.candidate, *(fmt(tot.get(k)) for k in kinds)])
    return ["task", "candidate", *(f"{k} s" for k in kinds)], rows


WHATIF_NOTE = ("each stored eval task replayed through the speed model of every candidate's placement (`rigbench "
               "whatif`): its recorded turns (prompt, reused and output tokens) and tool, setup and verifier time, "
               "with the calibration's range; measured: the task's stored wall time where it ran")


def whatif_rows(rep: Report) -> tuple[list[str], list[list[str]]]:
    cols = list(dict.fromkeys(k for r in rep.whatif for k in r.cells))
    rows = []
    for r in rep.whatif:
        row = [r.task, f"{r.ran_on} (run {r.run_id})", f"{r.status} {r.measured_s:.1f}"]
        for k in cols:
            c = r.cells.get(k)
            row.append("-" if c is None else f"{c.predicted_s:.1f} ({c.low_s:.1f}-{c.high_s:.1f})"
                       + ({"no": " timeout", "uncertain": " borderline"}.get(c.in_time or "", "")))
        rows.append(row)
    return ["task", "ran on", "measured s", *(f"on {k} s" for k in cols)], rows


def write_bench_csv(rows: dict[str, dict], path) -> None:
    """The bench table as CSV: one line per scenario, the same columns as the terminal's."""
    import csv

    with path.open("w", newline="") as f:
        cols = [k for k in next(iter(rows.values()), {}) if k not in ("errors", "facts")]
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows.values())
