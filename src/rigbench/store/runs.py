"""Runs (bench and eval), their requests and aggregates, eval tasks and their events, and the machine's samples
during a run."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from rigbench.store.database import now as _now
from rigbench.store.schema import aggregates, events, requests, runs, samples, task_results


def new_run(db: Engine, kind: str, **fields: Any) -> int:
    with db.begin() as c:
        row = c.execute(insert(runs).values(kind=kind, status="running", started_at=_now(), **fields))
        return row.inserted_primary_key[0]


def add_request(db: Engine, run_id: int, r) -> None:
    with db.begin() as c:
        c.execute(insert(requests).values(
            run_id=run_id, scenario=r.scenario, idx=r.index, start=r.start, ttft=r.ttft, e2e=r.e2e, tpot=r.tpot,
            prompt_tokens=r.prompt_tokens, output_tokens=r.output_tokens, cached_tokens=r.cached_tokens,
            n_chunks=len(r.chunk_times), itl=[round(x, 6) for x in r.itl], server_timings=r.server_timings,
            error=r.error))


def add_summary(db: Engine, run_id: int, scenario: str, summary: dict) -> None:
    with db.begin() as c:
        c.execute(insert(aggregates).values(run_id=run_id, scenario=scenario, summary=json.loads(json.dumps(summary))))


def finish_run(db: Engine, run_id: int, status: str, error: str | None = None) -> None:
    with db.begin() as c:
        c.execute(update(runs).where(runs.c.id == run_id).values(status=status, finished_at=_now(), error=error))


def list_runs(db: Engine, kind: str | None = None) -> list[dict]:
    q = select(runs).order_by(runs.c.id)
    if kind:
        q = q.where(runs.c.kind == kind)
    with db.connect() as c:
        rows = [dict(r._mapping) for r in c.execute(q)]
        for r in rows:
            r["requests"] = c.execute(select(func.count()).select_from(requests)
                                      .where(requests.c.run_id == r["id"])).scalar_one()
            r["tasks"] = c.execute(select(func.count(func.distinct(task_results.c.task)))
                                   .where(task_results.c.run_id == r["id"])).scalar_one()
    return rows


def run_requests(db: Engine, run_id: int) -> list[dict]:
    with db.connect() as c:
        return [dict(r._mapping) for r in c.execute(select(requests).where(requests.c.run_id == run_id)
                                                    .order_by(requests.c.id))]


def run_summaries(db: Engine, run_id: int) -> list[dict]:
    with db.connect() as c:
        return [dict(r._mapping) for r in c.execute(select(aggregates).where(aggregates.c.run_id == run_id)
                                                    .order_by(aggregates.c.id))]


def start_task(db: Engine, run_id: int, task: str) -> int:
    """A new attempt of a task in a run (an interrupted one before it stays on record); returns the attempt."""
    with db.begin() as c:
        attempt = _next_attempt(c, run_id, task)
        c.execute(insert(task_results).values(run_id=run_id, task=task, attempt=attempt, status="running",
                                              started_at=_now()))
    return attempt


def queue_task(db: Engine, run_id: int, task: str) -> int:
    """Reserve the next attempt of a task for a worker elsewhere (status `queued`); returns the attempt. The
    worker claims that exact row (`claim_task`), so however often it is retried the attempt is one row."""
    with db.begin() as c:
        attempt = _next_attempt(c, run_id, task)
        c.execute(insert(task_results).values(run_id=run_id, task=task, attempt=attempt, status="queued"))
    return attempt


def _next_attempt(c, run_id: int, task: str) -> int:
    key = (task_results.c.run_id == run_id) & (task_results.c.task == task)
    last = c.execute(select(func.max(task_results.c.attempt)).where(key)).scalar_one()
    c.execute(update(task_results).where(key & task_results.c.status.in_(("running", "queued")))
              .values(status="interrupted"))
    return (last or 0) + 1


def claim_task(db: Engine, run_id: int, task: str, attempt: int) -> bool:
    """Start the given attempt, writing its row whether or not it exists (idempotent, keyed by run, task and
    attempt). A row found `running` means an earlier try of this attempt lost its worker: its events are
    dropped so the attempt's trace is this try's alone. Returns whether it was such a retry."""
    key = ((task_results.c.run_id == run_id) & (task_results.c.task == task) & (task_results.c.attempt == attempt))
    fresh = dict(status="running", started_at=_now(), finished_at=None, reward=None, wall_s=None, turns=None,
                 tokens_in=None, tokens_out=None, detail=None)
    with db.begin() as c:
        prev = c.execute(select(task_results.c.status).where(key)).scalar_one_or_none()
        if prev is None:
            try:
                with c.begin_nested():
                    c.execute(insert(task_results).values(run_id=run_id, task=task, attempt=attempt, **fresh))
            except IntegrityError:      # another try of the same attempt wrote it first
                prev = "running"
        if prev is not None:
            c.execute(update(task_results).where(key).values(**fresh))
            c.execute(delete(events).where((events.c.run_id == run_id) & (events.c.task == task)
                                           & (events.c.attempt == attempt)))
    return prev == "running"


def finish_task(db: Engine, run_id: int, task: str, attempt: int, **fields: Any) -> None:
    # PostgreSQL refuses NUL in text; a command's output can hold one
    fields = {k: v.replace("\x00", "") if isinstance(v, str) else v for k, v in fields.items()}
    with db.begin() as c:
        c.execute(update(task_results).where((task_results.c.run_id == run_id) & (task_results.c.task == task)
                                             & (task_results.c.attempt == attempt))
                  .values(finished_at=_now(), **fields))


def add_event(db: Engine, run_id: int, task: str, attempt: int, seq: int, t: float, kind: str, data: dict) -> None:
    with db.begin() as c:
        c.execute(insert(events).values(run_id=run_id, task=task, attempt=attempt, seq=seq, t=t, kind=kind,
                                        data=json.loads(json.dumps(data, default=str))))


def task_rows(db: Engine, run_id: int, final_only: bool = True) -> list[dict]:
    """Task outcomes of a run; with final_only, the latest attempt of each task."""
    with db.connect() as c:
        rows = [dict(r._mapping) for r in c.execute(select(task_results).where(task_results.c.run_id == run_id)
                                                    .order_by(task_results.c.task, task_results.c.attempt))]
    if not final_only:
        return rows
    latest: dict[str, dict] = {}
    for r in rows:
        latest[r["task"]] = r
    return list(latest.values())


def task_events(db: Engine, run_id: int, task: str | None = None) -> list[dict]:
    q = select(events).where(events.c.run_id == run_id)
    if task:
        q = q.where(events.c.task == task)
    with db.connect() as c:
        return [dict(r._mapping) for r in c.execute(q.order_by(events.c.task, events.c.attempt, events.c.seq))]


def get_run(db: Engine, run_id: int) -> dict | None:
    with db.connect() as c:
        r = c.execute(select(runs).where(runs.c.id == run_id)).first()
    return dict(r._mapping) if r else None


def set_run_status(db: Engine, run_id: int, status: str) -> None:
    with db.begin() as c:
        c.execute(update(runs).where(runs.c.id == run_id).values(status=status, finished_at=None, error=None))


def add_request_rows(db: Engine, run_id: int, rows: list[dict]) -> None:
    """Many request rows at once (the router writes its accounting in batches, off the request path)."""
    if rows:
        with db.begin() as c:
            c.execute(insert(requests), [{"run_id": run_id, **r} for r in rows])


def set_summary(db: Engine, run_id: int, scenario: str, summary: dict) -> None:
    """Replace a run's aggregate for `scenario` (a running router keeps its per-upstream totals current)."""
    with db.begin() as c:
        c.execute(delete(aggregates).where((aggregates.c.run_id == run_id) & (aggregates.c.scenario == scenario)))
        c.execute(insert(aggregates).values(run_id=run_id, scenario=scenario, summary=json.loads(json.dumps(summary))))


def add_samples(db: Engine, run_id: int, rows: list) -> None:
    """Samples (rigbench.monitor.Sample) of a run, in one transaction."""
    if rows:
        with db.begin() as c:
            c.execute(insert(samples), [{"run_id": run_id, "t": s.t, "data": s.model_dump(mode="json")}
                                        for s in rows])


def run_samples(db: Engine, run_id: int) -> list[dict]:
    with db.connect() as c:
        return [r.data for r in c.execute(select(samples.c.data).where(samples.c.run_id == run_id)
                                          .order_by(samples.c.id))]
