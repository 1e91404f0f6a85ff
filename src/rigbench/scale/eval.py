"""Eval tasks as Ray tasks: each runs in its own sandbox on whichever worker Ray picks, against the endpoint
named for that worker, and writes its rows to the shared store as it goes.

The driver reserves every task's attempt in the store before it is submitted (`queued`); the worker claims
that row. Ray reruns a task whose worker process or node died (`max_retries`), and the rerun claims the
same (run, task, attempt) row again, so a lost worker costs time, never a duplicate or a missing row.
"""

from __future__ import annotations

import io
import socket
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path

from rigbench import store
from rigbench.scale.cluster import init
from rigbench.tasks.formats import Task, load_task
from rigbench.tasks.runner import FINISHED, EvalConfig, TaskOutcome, run_task

_remote_fn = {}


def bundle(folder: Path) -> bytes:
    """A task folder as a gzip'd tar: workers need no shared file system and no checkout of the tasks."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return buf.getvalue()


def unbundle(data: bytes, into: Path) -> Path:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        names = {m.name.split("/")[0] for m in tar.getmembers()}
        tar.extractall(into, filter="data")   # refuses links out, absolute paths, devices
    if len(names) != 1:
        raise ValueError("a task bundle holds one folder")
    return into / names.pop()


def endpoint_for(endpoints: dict[str, str], default: str | None) -> str | None:
    """The endpoint named for this worker (by node IP or host name), else the run's own `--url`. A URL on
    localhost means each worker's own local server."""
    if not endpoints:
        return default
    import ray

    ip = ray.util.get_node_ip_address()
    return endpoints.get(ip) or endpoints.get(socket.gethostname()) or endpoints.get("*") or default


def _run_on_worker(data: bytes, cfg_json: str, db_url: str, run_id: int, attempt: int,
                   endpoints: dict[str, str]) -> dict:
    from rigbench.sandbox.files import remove_tree

    cfg = EvalConfig.model_validate_json(cfg_json)
    cfg.url = endpoint_for(endpoints, cfg.url)
    tmp = Path(tempfile.mkdtemp(prefix=f"rigbench-ray-{run_id}-"))
    tmp.chmod(0o711)    # the sandbox user passes through to its task's folder, and lists nothing
    try:
        task = load_task(unbundle(data, tmp / "task"))
        (tmp / "run").mkdir(mode=0o711)
        return run_task(task, cfg, store.connect(db_url), run_id, tmp / "run", attempt=attempt).model_dump()
    finally:
        remove_tree(tmp)


def _remote(max_retries: int):
    import ray

    if max_retries not in _remote_fn:
        # system failures only (the worker or its node died); a task's own error is an outcome, not a retry
        _remote_fn[max_retries] = ray.remote(num_cpus=1, max_retries=max_retries,
                                             retry_exceptions=False)(_run_on_worker)
    return _remote_fn[max_retries]


def run_eval(tasks: list[Task], cfg: EvalConfig, db_url: str, run_id: int, address: str = "auto",
             on_done: Callable[[TaskOutcome], None] | None = None, endpoints: dict[str, str] | None = None,
             max_retries: int = 3) -> list[TaskOutcome]:
    """`tasks.runner.run_eval` on a Ray cluster: the tasks not finished yet in this run, one per CPU slot.
    A task whose worker is lost more than `max_retries` times is stored `interrupted` (`--resume` reruns it).
    Ctrl-C cancels what is in flight and stores it as `interrupted`, then is raised again."""
    import ray

    init(address)
    if db_url.startswith("sqlite:///"):   # a worker's working folder is not this process's
        db_url = f"sqlite:///{Path(db_url.removeprefix('sqlite:///')).resolve()}"
    db = store.connect(db_url)
    done = {r["task"]: r for r in store.task_rows(db, run_id) if r["status"] in FINISHED}
    remote = _remote(max_retries)
    cfg_json = cfg.model_dump_json()
    pending: dict = {}
    for t in tasks:
        if t.name in done:
            continue
        attempt = store.queue_task(db, run_id, t.name)
        ref = remote.remote(bundle(Path(t.path)), cfg_json, db_url, run_id, attempt, endpoints or {})
        pending[ref] = (t.name, attempt)
    results: list[TaskOutcome] = []
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            name, attempt = pending.pop(ready[0])
            try:
                o = TaskOutcome.model_validate(ray.get(ready[0]))
            except ray.exceptions.RayError as e:
                detail = f"its worker was lost {max_retries + 1} times ({type(e).__name__})"
                store.finish_task(db, run_id, name, attempt, status="interrupted", detail=detail)
                o = TaskOutcome(task=name, status="interrupted", wall_s=0, detail=detail)
            results.append(o)
            if on_done:
                on_done(o)
    except KeyboardInterrupt:
        for ref in pending:
            ray.cancel(ref, force=True)
        for name, attempt in pending.values():
            store.finish_task(db, run_id, name, attempt, status="interrupted", detail="the run was interrupted")
        raise
    previous = [TaskOutcome.from_row(r) for r in done.values()]
    order = {t.name: i for i, t in enumerate(tasks)}
    return sorted(previous + results, key=lambda o: order.get(o.task, 1 << 30))
