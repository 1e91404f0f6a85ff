"""Run tasks: prepare the sandbox, let an agent work, run the verifier, and store every step as it happens."""

from __future__ import annotations

import json
import os
import re
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel

from rigbench import catalog, store
from rigbench.errors import RigbenchError
from rigbench.plan.speed import AgentProfile
from rigbench.route.gateway import Gateway, Session
from rigbench.sandbox import BwrapSandbox, DockerSandbox, Sandbox, TaskUnsupported
from rigbench.sandbox.files import remove_tree
from rigbench.tasks.environment import apply_dockerfile, requirements
from rigbench.tasks.formats import Task, load_dataset
from rigbench.tasks.verifier import verify

FINISHED = {"success", "failure", "timeout", "error"}
SCORED = ("success", "failure", "timeout")      # what the agent can be blamed for; `error` is the harness's
AgentKind = Literal["builtin", "oracle", "noop", "cmd"]
Network = Literal["task", "on", "off"]


class EvalConfig(BaseModel):
    agent: AgentKind = "builtin"
    agent_cmd: str | None = None
    url: str | None = None
    model: str = "default"
    api_key: str = "rigbench"
    time_limit_s: float | None = None     # overrides each task's agent timeout
    max_steps: int = 30
    command_timeout_s: float = 60.0
    max_response_tokens: int | None = None   # per model reply: the built-in agent's 2048, else the agent's own
    parallel: int = 1
    sandbox: Literal["bwrap", "docker"] = "bwrap"
    workdir: Path | None = None
    # Harbor's policy ("task"): the agent and the verifier share the task's allow_internet (default true)
    agent_network: Network = "task"
    verifier_network: Network = "task"
    build: bool = False                   # build the Dockerfile even when the task names a docker_image
    retry_errors: int = 0                 # attempts more for a task that ends in `error`
    escalate_to: str | None = None        # endpoint that reruns the tasks that failed or timed out
    escalate_model: str | None = None
    agent_profile: str | None = None      # catalog agents.yaml profile (None: detected from the command)


def network_policy(task: Task, cfg: EvalConfig) -> dict[str, bool]:
    """Per phase: on, off, or the task's allow_internet (Harbor: one container, one network, for both)."""
    pick = {"on": True, "off": False, "task": task.allow_internet}
    return {"agent": pick[cfg.agent_network], "verifier": pick[cfg.verifier_network]}


_gateways: dict[tuple[str, str], Gateway] = {}
_gateways_lock = threading.Lock()


def gateway_for(engine_url: str, api_key: str = "rigbench") -> Gateway:
    """The recording gateway in front of an engine (route.gateway), started once per engine and kept for the life
    of this process: every task's agent talks to the engine through it, in a session of its own."""
    key = (engine_url.rstrip("/").removesuffix("/v1"), api_key)
    with _gateways_lock:
        if key not in _gateways:
            _gateways[key] = Gateway(key[0], api_key).start()
        return _gateways[key]


def profile_for(cfg: EvalConfig) -> AgentProfile:
    """The agent profile of a run: named, or detected from --agent-cmd (the built-in agent's otherwise)."""
    name = cfg.agent_profile
    if name is None and cfg.agent == "cmd":
        name = AgentProfile.detect(cfg.agent_cmd or "")
    return AgentProfile.named(name or "builtin")


def agents_dir() -> Path:
    """Where scripts/install_agents.sh puts the Python agents, each in a virtualenv of its own (NAME/bin):
    $RIGBENCH_AGENTS, else /opt/rigbench/agents as root (readable by the sandbox's unprivileged user), else
    ~/.local/share/rigbench/agents."""
    if env := os.environ.get("RIGBENCH_AGENTS"):
        return Path(env)
    return Path("/opt/rigbench/agents") if os.geteuid() == 0 else Path.home() / ".local/share/rigbench/agents"


def agent_command(name: str, max_steps: int) -> str:
    """The --agent-cmd of a catalog agent (`eval --agent claude-code`)."""
    prof = AgentProfile.named(name)
    if not prof.command:
        raise RigbenchError(f"the agent profile {name!r} has no command; give --agent-cmd (with --agent-profile "
                            f"{name})")
    return prof.command.format(max_steps=max_steps)


def _agent_path(prof: AgentProfile) -> str | None:
    """PATH for an agent installed in a virtualenv of its own (its bin folder first), None for the others."""
    from rigbench.sandbox.base import PATH

    venv = agents_dir() / prof.name / "bin"
    return f"{venv}:{PATH}" if venv.is_dir() else None


def agent_rows() -> list[dict]:
    """Every catalog agent profile, with whether its command is installed here."""
    import shlex
    import shutil

    rows = []
    for name in catalog.agents()["profiles"]:
        prof = AgentProfile.named(name)
        exe = shlex.split(prof.command)[0] if prof.command else None
        found = shutil.which(exe, path=_agent_path(prof) or os.environ.get("PATH")) if exe else None
        rows.append({**prof.model_dump(exclude={"prefix_cache"}), "suggested_context": prof.suggested_context,
                     "installed": found})
    return rows


class ContextTooSmall(RigbenchError):
    """The server's context cannot hold the agent's first request."""


def preflight(cfg: EvalConfig) -> int | None:
    """Refuse a run whose engine cannot hold the agent's first request (its profile's); returns the server's
    context where it says (llama-server's /props)."""
    if cfg.agent not in ("builtin", "cmd") or not cfg.url:
        return None
    n_ctx = gateway_for(cfg.url, cfg.api_key).n_ctx
    prof = profile_for(cfg)
    need = prof.first_prompt + prof.output_tokens
    if n_ctx is not None and n_ctx < need:
        raise ContextTooSmall(
            f"the server's context ({n_ctx:,} tokens) cannot hold {prof.name}'s first request (~{prof.first_prompt:,} "
            f"tokens) and a reply; restart it with a larger context: rigbench serve -c {prof.suggested_context} "
            f"(or --agent-profile NAME if the agent is another)")
    return n_ctx


def agent_env(task: Task, cfg: EvalConfig, base: str, n_ctx: int | None = None) -> dict[str, str]:
    """What --agent-cmd gets: its gateway session both OpenAI-style and Anthropic-style, the instruction, and its
    profile's own settings (the context it may fill, where the agent has such a setting)."""
    v1 = base.rstrip("/") + "/v1"
    env = {"OPENAI_BASE_URL": v1, "OPENAI_API_BASE": v1, "OPENAI_API_KEY": cfg.api_key, "OPENAI_MODEL": cfg.model,
           "ANTHROPIC_BASE_URL": base, "ANTHROPIC_AUTH_TOKEN": cfg.api_key, "ANTHROPIC_MODEL": cfg.model,
           "TASK_INSTRUCTION": task.instruction}
    prof = profile_for(cfg)
    for k, v in prof.env.items():    # a setting from a value not known is left to the agent's own default
        if ("{n_ctx}" not in v or n_ctx is not None) and ("{max_tokens}" not in v or cfg.max_response_tokens):
            env[k] = v.format(n_ctx=n_ctx, model=cfg.model, max_tokens=cfg.max_response_tokens)
    if path := _agent_path(prof):
        env["PATH"] = path
    return env


class Summary(BaseModel):
    """A run's score: the pass rate counts only outcomes the agent could be blamed for."""

    tasks: int
    solved: int
    scored: int                  # success + failure + timeout
    errors: int
    pass_rate: float | None      # solved / scored; None when nothing was scored

    @classmethod
    def of(cls, outcomes: list[TaskOutcome]) -> Summary:
        scored = [o for o in outcomes if o.status in SCORED]
        solved = sum(o.status == "success" for o in scored)
        return cls(tasks=len(outcomes), solved=solved, scored=len(scored),
                   errors=sum(o.status == "error" for o in outcomes),
                   pass_rate=round(solved / len(scored), 4) if scored else None)


class TaskOutcome(BaseModel):
    task: str
    status: str
    wall_s: float
    turns: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    reward: float | None = None
    detail: str = ""
    escalated_from: str | None = None     # the first attempt's status when this is the escalated rerun
    first_wall_s: float = 0.0             # and the first attempt's wall time

    @classmethod
    def from_row(cls, r: dict) -> TaskOutcome:
        """A stored task result (store.task_rows) as an outcome."""
        return cls(task=r["task"], status=r["status"], wall_s=r["wall_s"] or 0, turns=r["turns"] or 0,
                   tokens_in=r["tokens_in"] or 0, tokens_out=r["tokens_out"] or 0, reward=r["reward"],
                   detail=r["detail"] or "")


def new_run(db, cfg: EvalConfig, folder: Path, names: list[str] | None, tags: list[str] | None,
            dataset: dict | None = None) -> int:
    """An eval run in the store, holding what `--resume` needs to run it again (and a dataset's pinned commit)."""
    return store.new_run(db, "eval", url=cfg.url, model=cfg.model,
                         config={"tasks": str(Path(folder).resolve()), "names": names, "tags": tags,
                                 "eval": json.loads(cfg.model_dump_json()), "dataset": dataset})


def reopen_run(db, run_id: int, folder: Path | None = None) -> tuple[EvalConfig, list[Task]]:
    """The configuration and tasks of a stored eval run, marked running again. `folder` replaces the stored
    task folder: a run resumed on another machine (one shared store) finds its tasks where they are there."""
    prev = store.get_run(db, run_id)
    if not prev or prev["kind"] != "eval":
        raise RigbenchError(f"no eval run {run_id} in the store; `rigbench runs` lists them")
    c = prev["config"]
    where = Path(folder) if folder else Path(c["tasks"])
    if not where.is_dir():
        raise RigbenchError(f"run {run_id}'s tasks were at {c['tasks']}, not on this machine; "
                            f"give --tasks DIR with the same tasks")
    tasks = load_dataset(where, c["names"], c["tags"])
    store.set_run_status(db, run_id, "running")
    return EvalConfig(**c["eval"]), tasks


_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL", re.I)


def secrets(cfg: EvalConfig) -> list[str]:
    vals = [v for k, v in os.environ.items() if _SECRET_NAME.search(k) and len(v) >= 6]
    if cfg.api_key and cfg.api_key != "rigbench":
        vals.append(cfg.api_key)
    return sorted(set(vals), key=len, reverse=True)


def redact(data, hidden: list[str]):
    text = json.dumps(data, default=str)
    for s in hidden:
        text = text.replace(json.dumps(s)[1:-1], "[REDACTED]")
    return json.loads(text)


class Interrupted(Exception):
    """The run was stopped (a signal in the main thread); the task stops at its next step."""


class Cancel:
    """Stops a run from the main thread: the sandboxes running now are killed, and their tasks are stored
    as `interrupted` (not finished, so `--resume` runs them again)."""

    def __init__(self):
        self.event = threading.Event()
        self._lock = threading.Lock()
        self._live: set[Sandbox] = set()
        self.running: dict[str, int] = {}          # task -> attempt, for the rows left when threads are abandoned

    def watch(self, sb: Sandbox) -> None:
        with self._lock:
            self._live.add(sb)
        if self.event.is_set():
            sb.kill()

    def forget(self, sb: Sandbox) -> None:
        with self._lock:
            self._live.discard(sb)

    def __call__(self) -> None:
        self.event.set()
        with self._lock:
            live = list(self._live)
        for sb in live:
            sb.kill()

    def check(self) -> None:
        if self.event.is_set():
            raise Interrupted("the run was interrupted")


class Trace:
    """Writes one task attempt's events to the store in order, with secrets redacted. Every event but a note
    is also where an interrupted run stops the task: the agent records one at every step (notes are written
    from error handlers, which must finish)."""

    def __init__(self, db, run_id: int, task: str, attempt: int, hidden: list[str], cancel: Cancel | None = None):
        self.db, self.run_id, self.task, self.attempt, self.hidden = db, run_id, task, attempt, hidden
        self.cancel = cancel
        self.seq, self.t0 = 0, time.monotonic()
        self._lock = threading.Lock()     # the gateway writes its turns from a thread of its own

    def __call__(self, kind: str, data: dict) -> None:
        self.at(kind, data, round(time.monotonic() - self.t0, 4))
        if self.cancel and kind != "note":
            self.cancel.check()

    def at(self, kind: str, data: dict, t: float) -> None:
        """An event that happened `t` seconds into the task (the gateway's turns are written after the fact)."""
        with self._lock:
            self.seq += 1
            store.add_event(self.db, self.run_id, self.task, self.attempt, self.seq, t, kind, redact(data, self.hidden))


def run_agent(task: Task, sb: Sandbox, cfg: EvalConfig, trace: Trace, limit: float, base: str | None = None,
              n_ctx: int | None = None):
    """Let the agent work on the task; `base`: its gateway session's URL (the engine's own without one)."""
    from rigbench.agent import Agent, AgentConfig, AgentStats, LimitsExceeded, single_turn

    stats = AgentStats()
    if cfg.agent == "noop":
        trace("note", {"agent": "noop"})
        return stats, ""
    if cfg.agent == "oracle":
        if task.solution is None:
            return stats, "no reference solution"
        sb.copy_in(task.solution, "/solution/solve.sh")
        r = sb.run("bash /solution/solve.sh", timeout=limit)
        trace("tool_output", {"agent": "oracle", "exit_code": r.exit_code, "output": r.output[-8000:]})
        if r.timed_out:
            raise TimeoutError("the reference solution ran past the time limit")
        return stats, ""
    if cfg.agent == "cmd":
        sb.write_file("/logs/agent/instruction.md", task.instruction)
        trace("tool_call", {"agent": "cmd", "command": cfg.agent_cmd})
        # the agent's own process must reach the endpoint whatever the task's network policy
        if base and (port := urlsplit(base).port) and urlsplit(base).hostname == "127.0.0.1":
            sb.reach_host(port)
        r = sb.run(cfg.agent_cmd or "true", timeout=limit, env=agent_env(task, cfg, base or cfg.url or "", n_ctx),
                   network=True)
        trace("tool_output", {"agent": "cmd", "exit_code": r.exit_code, "output": r.output[-20000:]})
        if r.timed_out:
            raise TimeoutError("the agent command ran past the time limit")
        if r.exit_code != 0:
            last = next((x.strip() for x in reversed(r.output.splitlines()) if x.strip()), "")
            return stats, f"the agent command exited with code {r.exit_code}: {last[:200]}"
        return stats, ""
    acfg = AgentConfig(url=base or cfg.url or "", model=cfg.model, api_key=cfg.api_key, max_steps=cfg.max_steps,
                       time_limit_s=limit, command_timeout_s=cfg.command_timeout_s,
                       max_response_tokens=cfg.max_response_tokens or 2048, context=n_ctx)
    if task.mode == "single-turn":
        answer, stats = single_turn(acfg, task.instruction, trace)
        sb.write_file("/app/response.md", answer)
        return stats, ""
    agent = Agent(acfg, sb, trace)
    try:
        agent.run(task.instruction)
    except LimitsExceeded as e:
        return agent.stats, str(e)
    except TimeoutError:
        raise _Timeout(agent.stats) from None
    except Exception as e:
        import openai

        if isinstance(e, openai.APITimeoutError):
            raise _Timeout(agent.stats) from None
        if isinstance(e, openai.APIConnectionError | openai.InternalServerError):
            raise EngineDied(f"engine died: {cfg.url} stopped answering ({type(e).__name__}: {str(e)[:200]})") from None
        raise
    return agent.stats, ""


class EngineDied(Exception):
    """The model endpoint stopped answering mid-task: the harness's fault, not the agent's."""


class _Timeout(Exception):
    def __init__(self, stats):
        super().__init__("time limit")
        self.stats = stats


def open_sandbox(task: Task, cfg: EvalConfig, root: Path) -> tuple[Sandbox, list[str]]:
    net = network_policy(task, cfg)
    if cfg.sandbox == "docker":
        if task.dockerfile is None and not task.docker_image:
            raise TaskUnsupported(f"{task.name} ships no Dockerfile; run it with the bubblewrap sandbox")
        sb = DockerSandbox(task.limits(), root, task.dockerfile, task.context_dir, task.name,
                           image=task.docker_image, build=cfg.build, build_timeout=task.build_timeout_s, network=net)
        return sb, sb.notes
    bw = BwrapSandbox(task.limits(), root, writable=requirements(task).writable)
    try:
        notes = apply_dockerfile(bw, task)
    except BaseException:
        bw.close()
        raise
    bw.network = net
    return bw, notes


def run_task(task: Task, cfg: EvalConfig, db, run_id: int, root: Path, cancel: Cancel | None = None,
             attempt: int | None = None) -> TaskOutcome:
    """One attempt of a task: a new one, or the `attempt` reserved for it by a scheduler elsewhere
    (`store.queue_task`), which may be run again after its worker was lost and is still stored once."""
    cancel = cancel or Cancel()
    retried = False
    if attempt is None:
        attempt = store.start_task(db, run_id, task.name)
    else:
        retried = store.claim_task(db, run_id, task.name, attempt)
    cancel.running[task.name] = attempt
    trace = Trace(db, run_id, task.name, attempt, secrets(cfg), cancel)
    t0 = time.monotonic()
    limit = cfg.time_limit_s or task.agent_timeout_s
    status, detail, reward = "failure", "", None
    from rigbench.agent import AgentStats
    stats = AgentStats()
    sb = session = gw = None
    try:
        if cfg.url and cfg.agent in ("builtin", "cmd"):
            gw = gateway_for(cfg.url, cfg.api_key)
            session = gw.open(trace.at, trace.t0)
        sb, notes = open_sandbox(task, cfg, Path(tempfile.mkdtemp(prefix=f"{task.name}-", dir=root)))
        cancel.watch(sb)
        trace("note", {"sandbox": sb.kind, "workdir": sb.workdir, "notes": notes, "time_limit_s": limit,
                       "limits": sb.limits.model_dump(), "network": sb.network, "host": socket.gethostname(),
                       "pid": os.getpid(), "url": cfg.url, "retried": retried,
                       "gateway": gw.base(session) if gw else None,
                       "agent_profile": profile_for(cfg).name if gw else None})
        try:
            stats, detail = run_agent(task, sb, cfg, trace, limit, gw.base(session) if gw else None,
                                      gw.n_ctx if gw else None)
        except (TimeoutError, _Timeout) as e:
            stats = getattr(e, "stats", stats)
            status, detail = "timeout", f"the agent ran past {limit:.0f} s"
        if gw:
            stats = _gateway_stats(gw.close(session))
        cancel.check()
        verdict = verify(task, sb, trace)
        cancel.check()
        reward = verdict.reward
        if verdict.error:
            status, detail = ("timeout" if status == "timeout" else "error"), "; ".join(
                x for x in (detail, verdict.error) if x)
        elif status != "timeout":
            status = "success" if reward >= 1.0 else "failure"
        why = session.blame(cfg.agent == "builtin") if status in ("failure", "timeout") and session else None
        if status == "failure" and session and not session.model_turns and detail.startswith("the agent command"):
            why = f"{detail} (it never asked the model anything)"    # not installed, not runnable, misconfigured
        if why:
            status, detail = "error", why     # the model did not get a fair chance: not the model's failure
            trace("note", {"error": why, "blamed": "harness"})
    except TaskUnsupported as e:
        status, detail = "error", f"skipped: {e}"
        trace("note", {"skipped": str(e)})
    except EngineDied as e:
        status, detail = "error", str(e)
        trace("note", {"error": detail})
    except Interrupted:
        status, detail = "interrupted", "the run was interrupted"
    except Exception as e:  # one broken task must not end the run; the reason is kept
        status, detail = "error", f"{type(e).__name__}: {str(e)[:500]}"
        if session and (why := session.blame(True)):
            detail = f"{why}; {detail}"
        trace("note", {"error": detail})
    finally:
        if gw and session and session.token in gw.sessions:
            stats = _gateway_stats(gw.close(session))
        if sb is not None:
            cancel.forget(sb)
            sb.close()
    if cancel.event.is_set():
        status, detail = "interrupted", "the run was interrupted"
    wall = round(time.monotonic() - t0, 2)
    store.finish_task(db, run_id, task.name, attempt, status=status, reward=reward, wall_s=wall, turns=stats.turns,
                      tokens_in=stats.tokens_in, tokens_out=stats.tokens_out, detail=detail)
    cancel.running.pop(task.name, None)
    return TaskOutcome(task=task.name, status=status, wall_s=wall, turns=stats.turns, tokens_in=stats.tokens_in,
                       tokens_out=stats.tokens_out, reward=reward, detail=detail)


def _gateway_stats(session: Session):
    from rigbench.agent import AgentStats

    turns, tokens_in, tokens_out = session.totals()
    return AgentStats(turns=turns, tokens_in=tokens_in, tokens_out=tokens_out)


def run_eval(tasks: list[Task], cfg: EvalConfig, db, run_id: int,
             on_done: Callable[[TaskOutcome], None] | None = None, grace: float = 10.0,
             again: bool = False) -> list[TaskOutcome]:
    """Run the tasks not finished yet in this run (all of them for a new run, or with `again`), `cfg.parallel`
    at a time.

    A KeyboardInterrupt (Ctrl-C, or SIGTERM / SIGHUP mapped to it by the CLI) kills the running sandboxes,
    stores their tasks as `interrupted` and is raised again; finished tasks are kept.
    """
    finished = FINISHED - {"error"} if cfg.retry_errors else FINISHED
    done = {} if again else {r["task"]: r for r in store.task_rows(db, run_id) if r["status"] in finished}
    todo = list(reversed([t for t in tasks if t.name not in done]))
    root = Path(tempfile.mkdtemp(prefix=f"rigbench-run-{run_id}-", dir=cfg.workdir))
    root.chmod(0o711)   # the sandbox user passes through to its task's folder, and lists nothing
    lock = threading.Lock()
    results: list[TaskOutcome] = []
    cancel = Cancel()

    def worker() -> None:
        while not cancel.event.is_set():
            with lock:
                if not todo:
                    return
                t = todo.pop()
            o = run_task(t, cfg, db, run_id, root, cancel)
            for _ in range(cfg.retry_errors):
                if o.status != "error" or cancel.event.is_set():
                    break
                o = run_task(t, cfg, db, run_id, root, cancel)
            with lock:
                results.append(o)
                if on_done and o.status != "interrupted":
                    on_done(o)

    # daemon threads: an interrupted run returns after `grace` even if a model request is still out
    threads = [threading.Thread(target=worker, daemon=True) for _ in range(max(1, min(cfg.parallel, len(todo))))]
    for th in threads:
        th.start()
    try:
        for th in threads:
            th.join()
    except KeyboardInterrupt:
        cancel()
        deadline = time.monotonic() + grace
        for th in threads:
            th.join(max(0.0, deadline - time.monotonic()))
        for task, attempt in list(cancel.running.items()):
            store.finish_task(db, run_id, task, attempt, status="interrupted", detail="the run was interrupted")
        raise
    finally:
        remove_tree(root)
    previous = [TaskOutcome.from_row(r) for r in done.values()]
    order = {t.name: i for i, t in enumerate(tasks)}
    return sorted(previous + results, key=lambda o: order.get(o.task, 1 << 30))


ESCALATE = ("failure", "timeout")


def escalate(tasks: list[Task], outcomes: list[TaskOutcome], cfg: EvalConfig, db, run_id: int,
             on_done: Callable[[TaskOutcome], None] | None = None) -> tuple[list[TaskOutcome], dict]:
    """Rerun the tasks that failed or timed out on `cfg.escalate_to`, as a new attempt of each in the same run.

    Returns the outcomes with the reruns in place of the first attempts, and what escalation cost: the wall time of
    the first attempts that were thrown away plus the reruns, stored as the run's `escalation` aggregate."""
    first = {o.task: o for o in outcomes}
    redo = [t for t in tasks if t.name in first and first[t.name].status in ESCALATE]
    strong = cfg.model_copy(update={"url": cfg.escalate_to, "model": cfg.escalate_model or cfg.model})
    reruns = run_eval(redo, strong, db, run_id, on_done=on_done, again=True) if redo else []
    for o in reruns:
        f = first[o.task]
        o.escalated_from, o.first_wall_s = f.status, f.wall_s
        o.detail = f"escalated to {cfg.escalate_to} after {f.status} in {f.wall_s:.1f} s" + (
            f"; {o.detail}" if o.detail else "")
        last = max(r["attempt"] for r in store.task_rows(db, run_id, final_only=False) if r["task"] == o.task)
        store.finish_task(db, run_id, o.task, last, detail=o.detail)
    cost = {"to": cfg.escalate_to, "model": strong.model, "tasks": len(reruns),
            "rescued": sum(o.status == "success" for o in reruns),
            "first_attempts_s": round(sum(o.first_wall_s for o in reruns), 2),
            "reruns_s": round(sum(o.wall_s for o in reruns), 2),
            "all_first_s": round(sum(o.wall_s for o in outcomes), 2)}
    cost["extra_s"] = cost["reruns_s"]
    store.set_summary(db, run_id, "escalation", cost)
    by_name = {o.task: o for o in reruns}
    return [by_name.get(o.task, o) for o in outcomes], cost
