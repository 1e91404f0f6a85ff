"""Run an experiment: for each candidate plan (refuse what does not fit) -> serve -> bench -> eval -> stop,
every step recorded in the store under one experiment id, so that a killed run resumes where it stopped."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from rigbench import store
from rigbench.engines import launch as launch_mod
from rigbench.engines.options import LlamaCppOptions
from rigbench.errors import RigbenchError
from rigbench.experiment.predict import CandidatePlan, _candidate, bench_config, resolve, synth_path, weights_of
from rigbench.experiment.spec import Candidate, ExperimentSpec
from rigbench.monitor import recorded
from rigbench.plan import memory
from rigbench.plan.setup import default_quant
from rigbench.procs import stop_reason

FINISHED = {"done", "refused", "skipped"}


class Hooks(BaseModel):
    """What the caller sees while it runs: a line of news, and one tick per unit of work with its weight."""
    model_config = {"arbitrary_types_allowed": True}
    say: Callable[[str], None] = lambda _m: None
    tick: Callable[[str, float], None] = lambda _what, _w: None


class StepResult(BaseModel):
    candidate: str
    stage: str
    repeat: int
    status: str
    run_id: int | None = None
    detail: str = ""


def tasks_of(exp: ExperimentSpec):
    from rigbench.tasks import formats

    if not exp.eval:
        return None, []
    folder = formats.starter_suite() if exp.eval.tasks == "starter" else exp.path(exp.eval.tasks)
    return folder, formats.load_dataset(folder, exp.eval.names, exp.eval.tags)


def work_units(exp: ExperimentSpec, plans: list[CandidatePlan]) -> dict[str, float]:
    """Expected seconds of each candidate's work, for the progress bar's ETA: predicted where the model can,
    a floor per scenario and task otherwise."""
    _, tasks = tasks_of(exp)
    cfg = bench_config(exp)
    out = {}
    for p in plans:
        if not p.runnable:
            out[p.name] = 0.0
            continue
        per_task = min(p.predicted.agent_task_s or 60.0, exp.eval.time_limit_s or 600.0) if exp.eval else 0.0
        out[p.name] = exp.repeats * (len(cfg.scenarios) * 10.0 * bool(exp.bench) + len(tasks) * per_task) + 20.0
    return out


def start(exp: ExperimentSpec, db_url: str | None, resume: int | None = None) -> int:
    db = store.connect(db_url)
    if resume is None:
        return store.new_experiment(db, exp.name, json.loads(exp.model_dump_json()))
    if not store.get_experiment(db, resume):
        raise RigbenchError(f"no experiment {resume} in the store; `rigbench report --list` lists them")
    store.finish_experiment(db, resume, "running")
    return resume


def stored_spec(db_url: str | None, experiment_id: int) -> ExperimentSpec:
    row = store.get_experiment(store.connect(db_url), experiment_id)
    if not row:
        raise RigbenchError(f"no experiment {experiment_id} in the store; `rigbench report --list` lists them")
    return ExperimentSpec(**row["config"])


def run(exp: ExperimentSpec, experiment_id: int, db_url: str | None, hooks: Hooks | None = None,
        log_dir: Path = Path(".rigbench/experiments")) -> list[StepResult]:
    """Every candidate in turn; a KeyboardInterrupt stops the server, marks the experiment interrupted and
    is raised again (what finished is kept for --resume)."""
    hooks = hooks or Hooks()
    db = store.connect(db_url)
    results: list[StepResult] = []
    try:
        for c in exp.candidates:
            results += run_candidate(exp, c, experiment_id, db, db_url, hooks, log_dir / str(experiment_id))
    except KeyboardInterrupt as e:
        store.finish_experiment(db, experiment_id, "interrupted", stop_reason(e)[0])
        raise
    except Exception as e:
        store.finish_experiment(db, experiment_id, "failed", str(e)[:500])
        raise
    failed = [r for r in results if r.status == "failed"]
    store.finish_experiment(db, experiment_id, "failed" if failed else "done",
                            "; ".join(f"{r.candidate} {r.stage}: {r.detail}" for r in failed)[:500] or None)
    return results


def _steps(db, experiment_id: int) -> dict[tuple[str, str, int], dict]:
    return {(s["candidate"], s["stage"], s["repeat"]): s for s in store.experiment_steps_of(db, experiment_id)}


def run_candidate(exp: ExperimentSpec, c: Candidate, experiment_id: int, db, db_url: str | None, hooks: Hooks,
                  log_dir: Path) -> list[StepResult]:
    steps = _steps(db, experiment_id)
    spec, rig, options = resolve(exp, c)
    p = memory.plan(spec, rig, options, default_quant(spec, options, c.quant))
    cp = _candidate(exp, c, spec, rig, p)
    _, tasks = tasks_of(exp)
    why = missing_weights(c, cp)
    if not cp.fits or why:
        why = (f"does not fit: {cp.reason}" + (f"; cheapest change: {cp.suggestion}" if cp.suggestion else "")
               if not cp.fits else why)
        store.put_step(db, experiment_id, c.name, "plan", 0, "refused", data={**cp.model_dump(), "why": why})
        hooks.say(f"{c.name}: refused, {why}")
        return [StepResult(candidate=c.name, stage="plan", repeat=0, status="refused", detail=why)]
    store.put_step(db, experiment_id, c.name, "plan", 0, "done", data=cp.model_dump())
    todo_bench = [r for r in range(exp.repeats) if exp.bench
                  and (steps.get((c.name, "bench", r)) or {}).get("status") != "done"]
    todo_eval = [r for r in range(exp.repeats) if exp.eval
                 and (steps.get((c.name, "eval", r)) or {}).get("status") != "done"]
    out: list[StepResult] = []
    if not todo_bench and not todo_eval:
        hooks.say(f"{c.name}: already measured (experiment {experiment_id})")
        return out
    if c.synth and not Path(cp.weights).is_file():
        from rigbench import synth
        hooks.say(f"{c.name}: writing a synthetic GGUF {cp.weights}")
        synth.write(spec, synth_path(exp, c), c.quant, c.synth.seed)
    if isinstance(options, LlamaCppOptions) and options.ctx is None:
        options.ctx = p.context   # what --fit would choose, made explicit
    name = launch_mod.EMBEDDED_NAME if c.embedded else c.name
    launch = launch_mod.launch_for(spec, rig, options, name=name)
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{_safe(c.name)}-{launch.engine}.log"
    hooks.say(f"{c.name}: starting {launch.shell()}")
    server = launch_mod.start(launch, log, timeout=600)
    store.put_step(db, experiment_id, c.name, "serve", 0, "done",
                   data={"command": launch.shell(), "url": launch.url, "log": str(log), "notes": launch.notes})
    hooks.tick(c.name, 20.0)
    try:
        for r in todo_bench:
            out.append(_bench(exp, c, r, experiment_id, db, db_url, server.url, hooks))
        for r in todo_eval:
            out.append(_eval(exp, c, r, experiment_id, db, steps, server.url, name, tasks, cp, hooks))
    finally:
        server.stop()
    return out


def missing_weights(c: Candidate, cp: CandidatePlan) -> str | None:
    """Why there is nothing to serve, or None (synthetic weights are written when needed)."""
    if cp.weights is None:
        return "no weights to serve (give weights: PATH or synth:)"
    if c.synth:
        return None
    w = Path(cp.weights)
    if c.engine == "llama.cpp" and not w.is_file():
        return f"weights file {cp.weights} not found"
    if c.engine == "vllm" and w.is_absolute() and not w.exists():
        return f"weights folder {cp.weights} not found"
    return None


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def _bench(exp, c, r, experiment_id, db, db_url, url, hooks) -> StepResult:
    from rigbench.bench.stored import run_stored_suite

    cfg = bench_config(exp, url)
    store.put_step(db, experiment_id, c.name, "bench", r, "running")
    hooks.say(f"{c.name}: speed suite ({', '.join(cfg.scenarios)})" + (f", repeat {r + 1}" if exp.repeats > 1 else ""))
    run_id, status, error, _, _ = run_stored_suite(cfg, db_url, progress=lambda n: hooks.say(f"{c.name}: bench {n}"),
                                                   on_scenario=lambda _n: hooks.tick(c.name, 10.0))
    store.put_step(db, experiment_id, c.name, "bench", r, status, run_id=run_id, data={"error": error})
    if status == "interrupted":   # the suite kept what it measured; the signal goes on up
        import signal

        from rigbench.procs import Stopped
        raise Stopped(signal.Signals[error]) if error in signal.Signals.__members__ else KeyboardInterrupt(error)
    return StepResult(candidate=c.name, stage="bench", repeat=r, status=status, run_id=run_id, detail=error or "")


def _eval(exp, c, r, experiment_id, db, steps, url, name, tasks, cp: CandidatePlan, hooks) -> StepResult:
    from rigbench.tasks import runner

    e = exp.eval
    folder, _ = tasks_of(exp)
    prev = steps.get((c.name, "eval", r))
    cfg = runner.EvalConfig(agent=e.agent, url=url, model=name, time_limit_s=e.time_limit_s, max_steps=e.max_steps,
                            max_response_tokens=e.max_response_tokens, sandbox=e.sandbox)
    if e.agent in ("builtin",):
        from rigbench.sandbox import bwrap_available, docker_available
        why = docker_available() if e.sandbox == "docker" else bwrap_available()
        if why:
            store.put_step(db, experiment_id, c.name, "eval", r, "skipped", data={"why": why})
            hooks.say(f"{c.name}: eval skipped: {why}")
            return StepResult(candidate=c.name, stage="eval", repeat=r, status="skipped", detail=why)
    if prev and prev.get("run_id"):
        run_id = prev["run_id"]    # resume: the run's finished tasks are kept, the rest run again
        store.set_run_status(db, run_id, "running")
    else:
        run_id = runner.new_run(db, cfg, folder, [t.name for t in tasks], None)
    store.put_step(db, experiment_id, c.name, "eval", r, "running", run_id=run_id)
    per_task = min(cp.predicted.agent_task_s or 60.0, e.time_limit_s or 600.0)
    hooks.say(f"{c.name}: {len(tasks)} tasks with the {e.agent} agent (run {run_id})")
    try:
        with recorded(db, run_id, url):
            outcomes = runner.run_eval(tasks, cfg, db, run_id, on_done=lambda o: (
                hooks.say(f"{c.name}: {o.task}: {o.status} in {o.wall_s:.1f} s"), hooks.tick(c.name, per_task)))
    except KeyboardInterrupt as ex:
        store.finish_run(db, run_id, "interrupted", stop_reason(ex)[0])
        store.put_step(db, experiment_id, c.name, "eval", r, "interrupted", run_id=run_id)
        raise
    store.finish_run(db, run_id, "done")
    ok = sum(o.status == "success" for o in outcomes)
    store.put_step(db, experiment_id, c.name, "eval", r, "done", run_id=run_id, data={"solved": ok})
    return StepResult(candidate=c.name, stage="eval", repeat=r, status="done", run_id=run_id,
                      detail=f"{ok}/{len(outcomes)} solved")


__all__ = ["Hooks", "StepResult", "run", "start", "stored_spec", "weights_of", "work_units"]
