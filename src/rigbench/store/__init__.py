"""Runs, requests and aggregates in SQLAlchemy Core tables (a SQLite file by default, any URL with --db)."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Engine

metadata = MetaData()

runs = Table(
    "runs", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(32), nullable=False),          # bench | eval
    Column("status", String(16), nullable=False),        # running | done | failed | interrupted
    Column("started_at", DateTime, nullable=False),
    Column("finished_at", DateTime),
    Column("url", Text), Column("model", Text), Column("engine", Text), Column("engine_version", Text),
    Column("flags", Text), Column("gpu", Text),
    Column("environment", JSON), Column("config", JSON), Column("error", Text),
)

requests = Table(
    "requests", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", Integer, ForeignKey("runs.id"), nullable=False, index=True),
    Column("scenario", String(64)), Column("idx", Integer), Column("start", Float),
    Column("ttft", Float), Column("e2e", Float), Column("tpot", Float),
    Column("prompt_tokens", Integer), Column("output_tokens", Integer), Column("cached_tokens", Integer),
    Column("n_chunks", Integer), Column("itl", JSON), Column("server_timings", JSON), Column("error", Text),
)

aggregates = Table(
    "aggregates", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", Integer, ForeignKey("runs.id"), nullable=False, index=True),
    Column("scenario", String(64)), Column("summary", JSON),
)

# eval: one row per task attempt's outcome, and every step of every attempt as it happens
task_results = Table(
    "task_results", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", Integer, ForeignKey("runs.id"), nullable=False, index=True),
    Column("task", String(200), nullable=False), Column("attempt", Integer, nullable=False),
    Column("status", String(16), nullable=False),   # running | success | failure | timeout | error | skipped
    Column("reward", Float), Column("wall_s", Float), Column("turns", Integer),
    Column("tokens_in", Integer), Column("tokens_out", Integer), Column("detail", Text),
    Column("started_at", DateTime), Column("finished_at", DateTime),
)

events = Table(
    "events", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", Integer, ForeignKey("runs.id"), nullable=False, index=True),
    Column("task", String(200), nullable=False), Column("attempt", Integer, nullable=False),
    Column("seq", Integer, nullable=False), Column("t", Float, nullable=False),
    Column("kind", String(32), nullable=False),   # request | response | tool_call | tool_output | verifier | note
    Column("data", JSON),
)


def default_url() -> str:
    return os.environ.get("RIGBENCH_DB") or f"sqlite:///{Path('.rigbench/rigbench.db').resolve()}"


def connect(url: str | None = None) -> Engine:
    url = url or default_url()
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url)
    metadata.create_all(engine)
    return engine


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


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
        last = c.execute(select(func.max(task_results.c.attempt)).where(
            (task_results.c.run_id == run_id) & (task_results.c.task == task))).scalar_one()
        attempt = (last or 0) + 1
        c.execute(update(task_results).where((task_results.c.run_id == run_id) & (task_results.c.task == task)
                                             & (task_results.c.status == "running")).values(status="interrupted"))
        c.execute(insert(task_results).values(run_id=run_id, task=task, attempt=attempt, status="running",
                                              started_at=_now()))
    return attempt


def finish_task(db: Engine, run_id: int, task: str, attempt: int, **fields: Any) -> None:
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
