"""`eval`, `compare`, `show`, `tasks`: agentic coding tasks in a sandbox, and the stored runs step by step."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from rigbench.cli.common import DbOpt, JsonOpt, emit_json, err, out
from rigbench.engines.launch import EMBEDDED, EMBEDDED_NAME
from rigbench.errors import RigbenchError
from rigbench.procs import stop_reason
from rigbench.report import terminal

TasksOpt = Annotated[Path | None, typer.Option(help="a task folder or a folder of tasks (default: the starter suite)")]
NetworkOpt = Annotated[str, typer.Option(help="task (its allow_internet, as Harbor) | on | off")]


def worker_urls(pairs: list[str] | None) -> dict[str, str]:
    found: dict[str, str] = {}
    for p in pairs or []:
        node, sep, url = p.partition("=")
        if not sep or not node or not url.startswith(("http://", "https://")):
            raise typer.BadParameter(f"--worker-url {p!r}: give NODE=URL, e.g. 10.0.0.7=http://127.0.0.1:8080")
        found[node] = url
    return found


def eval_cmd(
    tasks: TasksOpt = None,
    name: Annotated[list[str] | None, typer.Option("--task", help="task name or glob (repeatable)")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="only tasks with this tag (repeatable)")] = None,
    agent: Annotated[str, typer.Option(help="builtin | oracle | noop | a catalog agent run by its own command "
                                       "(claude-code, mini-swe-agent, aider: `rigbench agents`)")] = "builtin",
    agent_cmd: Annotated[str | None, typer.Option(help="external CLI agent run inside the sandbox, pointed at the "
                                                  "endpoint by OPENAI_BASE_URL / OPENAI_API_KEY / OPENAI_MODEL "
                                                  "and ANTHROPIC_BASE_URL / ANTHROPIC_AUTH_TOKEN / ANTHROPIC_MODEL")]
    = None,
    agent_profile: Annotated[str | None, typer.Option(help="the agent's profile in the catalog (agents.yaml; "
                                                      "default: detected from --agent-cmd)")] = None,
    url: Annotated[str | None, typer.Option(help="OpenAI-compatible endpoint (default: start the embedded model)")]
    = None,
    model_name: Annotated[str, typer.Option("--model", help="model name to request")] = "default",
    time_limit: Annotated[float | None, typer.Option(help="seconds per task for the agent (default: the task's)")]
    = None,
    max_steps: Annotated[int, typer.Option(help="model turns per task")] = 30,
    max_response_tokens: Annotated[int | None, typer.Option(
        help="tokens per model reply (the built-in agent: 2048; another agent: its own limit unless given, where "
             "its profile names its setting)")] = None,
    parallel: Annotated[int, typer.Option(help="tasks at once")] = 1,
    sandbox: Annotated[str, typer.Option(help="bwrap | docker (builds each task's image; needs a daemon)")] = "bwrap",
    resume: Annotated[int | None, typer.Option(help="run id to resume: finished tasks are kept, others rerun")]
    = None,
    dataset: Annotated[str | None, typer.Option(help="a published task set, fetched with git and cached "
                                                "(terminal-bench@2.0)")] = None,
    agent_network: NetworkOpt = "task",
    verifier_network: NetworkOpt = "task",
    build: Annotated[bool, typer.Option("--build", help="docker: build the Dockerfile even when the task names a "
                                        "docker_image")] = False,
    retry_errors: Annotated[int, typer.Option(help="attempts more for a task that ends in error (with --resume: "
                                              "stored errors run again)")] = 0,
    escalate_to: Annotated[str | None, typer.Option(help="endpoint of a stronger model: tasks that fail or time "
                                                    "out are run again there (the cost in time is reported)")]
    = None,
    escalate_model: Annotated[str | None, typer.Option(help="model name to request from --escalate-to")] = None,
    embedded: Annotated[str, typer.Option(help="embedded model started without --url: "
                                          + " | ".join(EMBEDDED))] = EMBEDDED_NAME,
    db: DbOpt = None,
    ray: Annotated[str | None, typer.Option("--ray", help="run the tasks on Ray: auto (this machine's cluster, "
                                            "or a new local one) or the head's ADDRESS; one store for all, "
                                            "e.g. --db postgresql://...")] = None,
    worker_url: Annotated[list[str] | None, typer.Option(help="with --ray: NODE=URL, the endpoint of the "
                                                         "workers on NODE (IP or host name; * for any)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Agentic coding tasks in a sandbox: an agent works, the task's verifier grades, every step is stored."""
    from rigbench import evaluate
    from rigbench.tasks.runner import EvalConfig

    if sandbox not in ("bwrap", "docker"):
        raise typer.BadParameter("--sandbox is bwrap or docker")
    if {agent_network, verifier_network} - {"task", "on", "off"}:
        raise typer.BadParameter("--agent-network and --verifier-network are task, on or off")
    if dataset and tasks:
        raise typer.BadParameter("give --dataset or --tasks, not both")
    if resume is None and agent not in ("builtin", "oracle", "noop") and not agent_cmd:   # a catalog agent
        from rigbench.tasks.runner import agent_command

        agent_cmd, agent_profile = agent_command(agent, max_steps), agent_profile or agent
    kind = "cmd" if agent_cmd else agent
    cfg = EvalConfig(agent=kind if resume is None else "builtin", agent_cmd=agent_cmd,
                     url=url, model=model_name, time_limit_s=time_limit, max_steps=max_steps, parallel=parallel,
                     max_response_tokens=max_response_tokens, sandbox=sandbox, agent_network=agent_network,
                     verifier_network=verifier_network, build=build, retry_errors=retry_errors,
                     escalate_to=escalate_to, escalate_model=escalate_model, agent_profile=agent_profile)
    req = evaluate.EvalRequest(tasks=tasks, names=name, tags=tag, dataset=dataset, resume=resume, config=cfg,
                               embedded=embedded, db=db, ray=ray, endpoints=worker_urls(worker_url))

    def say(msg: str) -> None:
        err.print(f"[dim]{msg}[/]")

    run = evaluate.open_run(req, say)
    progress = None if as_json else lambda o: err.print(f"[dim]eval: {o.task}: {o.status} in {o.wall_s:.1f} s[/]")
    try:
        done = evaluate.execute(req, run, say, on_done=progress)
    except KeyboardInterrupt as e:   # Ctrl-C, SIGTERM or SIGHUP: finished tasks are kept for --resume
        reason, code = stop_reason(e)
        err.print(f"stopped ({reason}): run {run.run_id} is stored as interrupted; `rigbench eval --resume "
                  f"{run.run_id}` runs what did not finish")
        raise typer.Exit(code) from None
    from rigbench import store
    from rigbench.monitor import one_line, stored_summary

    machine = stored_summary(store.connect(db), done.run_id)
    if as_json:
        return emit_json({"run": done.run_id, "summary": done.summary.model_dump(), "escalation": done.escalation,
                          "machine": machine,
                          "tasks": [{"task": o.task, "status": o.status, "wall_s": o.wall_s, "turns": o.turns,
                                     "tokens_in": o.tokens_in, "tokens_out": o.tokens_out, "detail": o.detail,
                                     "escalated_from": o.escalated_from, "first_wall_s": o.first_wall_s}
                                    for o in done.outcomes]})
    terminal.print_eval_done(out, done)
    if line := one_line(machine):
        out.print(line, highlight=False)


def compare(
    run_a: Annotated[int, typer.Argument(help="first eval run")],
    run_b: Annotated[int, typer.Argument(help="second eval run")],
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Two eval runs side by side, task by task (status, wall time, turns, output tokens), like setup A."""
    from rigbench import store

    dbe = store.connect(db)
    runs_ = []
    for rid in (run_a, run_b):
        r = store.get_run(dbe, rid)
        if not r:
            raise RigbenchError(f"no run {rid} in the store; `rigbench runs` lists them")
        runs_.append((r, {x["task"]: x for x in store.task_rows(dbe, rid)}))
    names = sorted(set(runs_[0][1]) | set(runs_[1][1]))
    rows = [{"task": n, **{f"{k}_{i}": (runs_[i][1].get(n) or {}).get(k) for i in (0, 1)
                           for k in ("status", "wall_s", "turns", "tokens_out")}} for n in names]
    if as_json:
        return emit_json({"runs": [run_a, run_b], "tasks": rows})
    terminal.print_compare(out, run_a, run_b, runs_, rows)


def show(
    run: Annotated[int, typer.Argument(help="run id (`rigbench runs`)")],
    task: Annotated[str | None, typer.Option(help="only this task's steps")] = None,
    steps: Annotated[bool, typer.Option("--steps/--no-steps", help="print every stored step")] = True,
    db: DbOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A stored run: the task table and, step by step, what the model said and what the tools returned."""
    from rigbench import store
    from rigbench.tasks.runner import TaskOutcome

    dbe = store.connect(db)
    r = store.get_run(dbe, run)
    if not r:
        raise RigbenchError(f"no run {run} in the store; `rigbench runs` lists them")
    rows = store.task_rows(dbe, run)
    events = store.task_events(dbe, run, task) if steps else []
    if as_json:
        return emit_json({"run": r, "tasks": rows, "events": events})
    outcomes = [TaskOutcome.from_row(x) for x in rows]
    out.print(terminal.task_table(f"run {run} ({r['kind']}, {r['status']})", outcomes))
    terminal.print_events(out, events)


def tasks_cmd(
    tasks: TasksOpt = None,
    dataset: Annotated[str | None, typer.Option(help="a published task set (terminal-bench@2.0), fetched and cached")]
    = None,
    name: Annotated[list[str] | None, typer.Option("--task", help="task name or glob (repeatable)")] = None,
    check: Annotated[bool, typer.Option("--check", help="also say whether bubblewrap and Docker can run each "
                                        "task on this machine")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Each task's requirements (workdir, image, network, limits, packages) and, with --check, which sandbox
    can run it here."""
    from rigbench.sandbox import bwrap_available, docker_available
    from rigbench.tasks import check as check_mod
    from rigbench.tasks import datasets, formats

    folder = datasets.fetch(dataset).path if dataset else tasks or formats.starter_suite()
    task_list = formats.load_dataset(folder, name)
    bw, dk = (bwrap_available(), docker_available()) if check else ("not checked", "not checked")
    rows = [check_mod.check(t, bw, dk) for t in task_list]
    if as_json:
        return emit_json({"tasks": [r.model_dump() for r in rows]})
    terminal.print_task_checks(out, folder, rows, check)
