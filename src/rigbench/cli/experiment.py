"""`experiment`, `report`, `demo`, `ray-resources`: candidates x stages as one resumable run, and its report."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from rigbench import hardware
from rigbench.cli.common import DbOpt, JsonOpt, emit_json, err, out
from rigbench.procs import stop_reason
from rigbench.report import terminal


def _run_experiment(exp, experiment_id: int, db: str | None, quiet: bool):
    """The experiment with a progress bar per candidate (ETA from predicted task times)."""
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TimeElapsedColumn, TimeRemainingColumn

    from rigbench import experiment

    plans = experiment.plan_all(exp)
    units = experiment.work_units(exp, plans)
    with Progress("[progress.description]{task.description}", BarColumn(), TaskProgressColumn(),
                  TimeElapsedColumn(), "eta", TimeRemainingColumn(), console=err, disable=quiet) as prog:
        bars = {p.name: prog.add_task(p.name, total=max(units[p.name], 1.0)) for p in plans}

        def tick(name: str, w: float) -> None:
            prog.update(bars[name], advance=w)

        def say(msg: str) -> None:
            if not quiet:
                prog.console.print(f"[dim]{msg}[/]", highlight=False)

        try:
            steps = experiment.run(exp, experiment_id, db, experiment.Hooks(say=say, tick=tick))
        finally:
            for b in bars.values():
                prog.update(b, completed=prog.tasks[b].total)
    return plans, steps


def experiment_cmd(
    file: Annotated[Path | None, typer.Argument(help="experiment YAML (see examples/)")] = None,
    resume: Annotated[int | None, typer.Option(help="experiment id to resume: finished steps are kept")] = None,
    predict_only: Annotated[bool, typer.Option("--predict-only", help="plans, predicted speed and task times; "
                                               "nothing is started")] = False,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Candidates x stages: for each, plan (refuse what does not fit) -> serve -> bench -> eval -> stop."""
    from rigbench import experiment, report

    if file is None and resume is None:
        raise typer.BadParameter("give an experiment FILE.yaml, or --resume ID")
    exp = experiment.stored_spec(db, resume) if resume is not None else experiment.load(file)
    if predict_only:
        plans = experiment.plan_all(exp)
        if as_json:
            return emit_json({"experiment": exp.name, "predict_only": True,
                               "candidates": [p.model_dump() for p in plans]})
        return terminal.print_candidates(out, plans)
    eid = experiment.start(exp, db, resume)
    try:
        plans, steps = _run_experiment(exp, eid, db, as_json)
    except KeyboardInterrupt as e:   # Ctrl-C, SIGTERM or SIGHUP: what finished is kept
        reason, code = stop_reason(e)
        err.print(f"stopped ({reason}): experiment {eid} is stored as interrupted; "
                  f"`rigbench experiment --resume {eid}` runs what did not finish")
        raise typer.Exit(code) from None
    from rigbench import store
    rep = report.build(store.connect(db), [str(eid)])
    if as_json:
        return emit_json({"experiment": eid, "candidates": [p.model_dump() for p in plans],
                           "steps": [s.model_dump() for s in steps], "report": rep.model_dump()})
    terminal.print_report(out, rep)
    out.print(f"experiment {eid} · `rigbench report {eid} -o report.html`")


def report_cmd(
    refs: Annotated[list[str] | None, typer.Argument(help="experiment ids (3) and runs (run:7); default: the "
                                                     "latest experiment")] = None,
    output: Annotated[Path | None, typer.Option("-o", "--out", help="file to write (default: print tables)")] = None,
    fmt: Annotated[str, typer.Option("--format", help="html or md")] = "html",
    list_: Annotated[bool, typer.Option("--list", help="list stored experiments")] = False,
    accept_disturbed: Annotated[bool, typer.Option("--accept-disturbed", help="let figures marked disturbed? "
                                                   "into the verdict")] = False,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A report of experiments or runs: plans, speed predicted beside measured, charts, eval, verdict."""
    from rigbench import report, store

    if fmt not in ("html", "md"):
        raise typer.BadParameter("--format is html or md")
    dbe = store.connect(db)
    if list_:
        rows = store.list_experiments(dbe)
        if as_json:
            return emit_json(rows)
        terminal.print_experiments(out, rows)
        return None
    rep = report.build(dbe, refs or [], accept_disturbed=accept_disturbed)
    if output:
        report.write(rep, output, fmt)
    if as_json:
        return emit_json({**rep.model_dump(), "path": str(output) if output else None})
    if output:
        out.print(f"report: {output.resolve()}", highlight=False)
    elif fmt == "md":
        from rigbench.report import markdown
        sys.stdout.write(markdown.render(rep))
    else:
        terminal.print_report(out, rep)


def demo(out_dir: Annotated[Path, typer.Option(help="where the report goes")] = Path(".rigbench/demo"),
         as_json: JsonOpt = False) -> None:
    """rigbench's main job on embedded defaults: plan every catalog model here and on a 24 GB GPU, then a small
    experiment with the embedded model on this machine (serve, bench, eval) and its HTML report."""
    from rigbench import experiment, report, store
    from rigbench.experiment import demo as demo_mod
    from rigbench.sandbox import bwrap_available

    out_dir.mkdir(parents=True, exist_ok=True)
    rigs_ = [hardware.detect(), hardware.load("rtx4090")]
    rows = demo_mod.catalog_plans(rigs_)
    (out_dir / "plans.json").write_text(json.dumps(rows, indent=2))
    (out_dir / "plans.md").write_text(demo_mod.plans_markdown(rows))
    if not as_json:
        terminal.print_catalog_plans(out, rigs_, rows)
    if why := bwrap_available():
        err.print(f"the demo's eval part will be skipped: {why} (Debian/Ubuntu: `sudo apt-get install -y "
                  f"bubblewrap`; `make demo` installs it when it runs as root)")
    exp = experiment.load(demo_mod.DEMO_EXPERIMENT)
    db_url = store.default_url()   # the usual store: `rigbench report` afterwards shows the demo
    eid = experiment.start(exp, db_url)
    if not as_json:
        out.print(f"[bold]experiment {eid}[/]: {exp.name} ({demo_mod.DEMO_EXPERIMENT})", highlight=False)
    try:
        _run_experiment(exp, eid, db_url, as_json)
    except KeyboardInterrupt as e:
        reason, code = stop_reason(e)
        err.print(f"stopped ({reason}): `rigbench experiment --resume {eid}` runs what did not finish")
        raise typer.Exit(code) from None
    rep = report.build(store.connect(db_url), [str(eid)])
    html_path = report.write(rep, out_dir / "report.html")
    report.write(rep, out_dir / "report.md", "md")
    if as_json:
        return emit_json({"plans": rows, "experiment": eid, "report": str(html_path.resolve()),
                           "verdict": rep.verdict})
    terminal.print_report(out, rep)
    out.print(f"report: {html_path.resolve()} (Markdown: {(out_dir / 'report.md').resolve()}; plans: "
              f"{(out_dir / 'plans.md').resolve()})", highlight=False)


def ray_resources(
    rig: Annotated[str | None, typer.Option(help="rig name, YAML or `detect` (default: this machine)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """The Ray resources of this node's GPUs, for `ray start --resources "$(rigbench ray-resources --json)"`:
    experiments place each candidate's engine on a node whose GPUs fit its plan."""
    from rigbench.scale.placement import node_resources

    res = node_resources(hardware.load(rig))
    if as_json:
        return emit_json(res)
    out.print(" ".join(f"{k}={v:g}" for k, v in res.items()) or "no GPU: no GPU resources to advertise")
