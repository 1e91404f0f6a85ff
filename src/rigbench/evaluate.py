"""One eval run from start to end: the tasks and their stored run (new or resumed), the endpoint (given, or the
embedded model started for it), the executor (this machine, or Ray), escalation, and the run's final status.

`open_run` refuses what cannot run before anything is stored; `execute` ends the run stored as done, interrupted
or failed, never left `running`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from rigbench import store
from rigbench.engines.launch import EMBEDDED, EMBEDDED_NAME, embedded_launch
from rigbench.errors import RigbenchError
from rigbench.procs import stop_reason
from rigbench.tasks import formats, runner
from rigbench.tasks.formats import Task

Say = Callable[[str], None]


class EvalRequest(BaseModel):
    """What `rigbench eval` was asked for; the options are already checked."""

    tasks: Path | None = None
    names: list[str] | None = None
    tags: list[str] | None = None
    dataset: str | None = None
    resume: int | None = None
    config: runner.EvalConfig         # agent, endpoint, limits, sandbox, networks, escalation
    embedded: str = EMBEDDED_NAME     # started when the agent needs an endpoint and none is given
    db: str | None = None
    ray: str | None = None            # `auto` or a head's address
    endpoints: dict[str, str] = {}    # with Ray: a node's own endpoint for its workers


class OpenRun(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)

    run_id: int
    config: runner.EvalConfig
    tasks: list[Task]
    resumed: bool


class EvalDone(BaseModel):
    run_id: int
    config: runner.EvalConfig
    outcomes: list[runner.TaskOutcome]
    escalation: dict | None = None

    @property
    def summary(self) -> runner.Summary:
        return runner.Summary.of(self.outcomes)


def open_run(req: EvalRequest, say: Say) -> OpenRun:
    """The run in the store, new or reopened; refused before it is stored when the sandbox is missing, the Ray
    cluster does not answer or the server's context cannot hold the agent's first request."""
    from rigbench.sandbox import bwrap_available, docker_available

    cfg = req.config
    why = docker_available() if cfg.sandbox == "docker" else bwrap_available()
    if why:
        raise RigbenchError(f"eval needs the {cfg.sandbox} sandbox: {why}")
    dbe = store.connect(req.db)
    if req.ray:   # a cluster that does not answer is an error, not a run left `running`
        from rigbench.scale import init
        init(req.ray)
    if req.resume is not None:
        stored, task_list = runner.reopen_run(dbe, req.resume, req.tasks)
        stored.retry_errors = cfg.retry_errors or stored.retry_errors
        return OpenRun(run_id=req.resume, config=stored, tasks=task_list, resumed=True)
    pinned = None
    if req.dataset:
        from rigbench.tasks import datasets

        ds = datasets.fetch(req.dataset)
        folder, pinned = ds.path, ds.record()
        say(f"eval: {req.dataset} at commit {ds.commit[:12]} ({ds.path})")
    else:
        folder = req.tasks or formats.starter_suite()
    task_list = formats.load_dataset(folder, req.names, req.tags)
    cfg = cfg.model_copy()
    if not cfg.url and cfg.agent in ("builtin", "cmd"):
        cfg.model = req.embedded      # stored with the run, so --resume starts the same model
    elif cfg.url and cfg.agent in ("builtin", "cmd"):
        runner.preflight(cfg)         # the server's context vs the agent's first request
    run_id = runner.new_run(dbe, cfg, folder, req.names, req.tags, dataset=pinned)
    return OpenRun(run_id=run_id, config=cfg, tasks=task_list, resumed=False)


def start_embedded(log_dir: Path, say: Say, name: str = EMBEDDED_NAME, context: int = 16384):
    """The embedded model's llama-server, for an eval given no endpoint."""
    from rigbench.engines import llamacpp

    log_dir.mkdir(parents=True, exist_ok=True)
    spec = embedded_launch(context, name=name)
    say(f"eval: starting the embedded model: {spec.shell()}")
    return llamacpp.start(spec, log_dir / "eval-llama-server.log", timeout=180)


def execute(req: EvalRequest, run: OpenRun, say: Say,
            on_done: Callable[[runner.TaskOutcome], None] | None = None) -> EvalDone:
    """Run the opened run's tasks to the end; Ctrl-C (or SIGTERM, SIGHUP) stores it as interrupted and goes on
    up, any other error stores it as failed."""
    dbe = store.connect(req.db)
    cfg, run_id, embedded = run.config, run.run_id, req.embedded
    server = None
    try:
        if cfg.agent in ("builtin", "cmd") and not cfg.url and not req.endpoints:
            if run.resumed and cfg.model in EMBEDDED:    # a resumed run keeps its embedded model
                embedded = cfg.model
            server = start_embedded(Path(".rigbench"), say, embedded,
                                    max(16384, runner.profile_for(cfg).suggested_context))
            cfg.url, cfg.model = server.url, embedded
        if req.ray:
            from rigbench.scale import eval as ray_eval
            outcomes = ray_eval.run_eval(run.tasks, cfg, req.db or store.default_url(), run_id, address=req.ray,
                                         on_done=on_done, endpoints=req.endpoints)
        else:
            from rigbench.monitor import recorded
            with recorded(dbe, run_id, cfg.url):
                outcomes = runner.run_eval(run.tasks, cfg, dbe, run_id, on_done=on_done)
        cost = None
        if cfg.escalate_to:
            outcomes, cost = runner.escalate(run.tasks, outcomes, cfg, dbe, run_id, on_done=on_done)
    except KeyboardInterrupt as e:   # finished tasks are kept for --resume
        store.finish_run(dbe, run_id, "interrupted", stop_reason(e)[0])
        raise
    except Exception as e:
        store.finish_run(dbe, run_id, "failed", str(e)[:500])
        raise
    finally:
        if server:
            server.stop()
    store.finish_run(dbe, run_id, "done")
    return EvalDone(run_id=run_id, config=cfg, outcomes=outcomes, escalation=cost)
