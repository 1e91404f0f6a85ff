"""Runs, requests and aggregates in SQLAlchemy Core tables (a SQLite file by default, any URL with --db, such
as PostgreSQL shared by many machines). The schema is Alembic's (migrations/ in this package): a store is
upgraded to the newest revision when it is opened."""

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
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    delete,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError

from rigbench.errors import StoreError

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
    Index("uq_task_results_run_task_attempt", "run_id", "task", "attempt", unique=True),
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


MIGRATIONS = Path(__file__).with_name("migrations")
BASELINE = "0001"      # the schema rigbench created with create_all before it had migrations


def default_url() -> str:
    return os.environ.get("RIGBENCH_DB") or f"sqlite:///{Path('.rigbench/rigbench.db').resolve()}"


def engine_url(url: str) -> str:
    """`postgresql://` means psycopg 3 (the `scale` extra), not SQLAlchemy's default psycopg2."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    return url


_engines: dict[str, Engine] = {}


def connect(url: str | None = None) -> Engine:
    """The store at `url` (default: .rigbench/rigbench.db), upgraded to the newest schema. One engine per URL
    and process: a Ray worker that runs many tasks keeps its connection pool."""
    url = engine_url(url or default_url())
    file = Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None
    if url in _engines and (file is None or file.exists()):
        return _engines[url]
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        # several processes (parallel tasks, Ray workers on one machine) write one file: wait for the lock
        engine = create_engine(url, connect_args={"timeout": 60})
    else:
        try:
            engine = create_engine(url, pool_pre_ping=True)
        except ModuleNotFoundError as e:
            raise StoreError(f"no database driver for {url.split(':')[0]} ({e.name}); "
                                f"pip install 'rigbench[scale]'") from None
    try:
        upgrade(engine)
    except OperationalError as e:
        raise StoreError(f"cannot open the store {engine.url.render_as_string(hide_password=True)}: "
                            f"{str(e.orig).strip().splitlines()[0]}") from None
    _engines[url] = engine
    return engine


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the store's schema to `revision` with Alembic. Many workers may open one store at once: on
    PostgreSQL an advisory lock held for the transaction makes them take turns, on SQLite a lock file next to
    the database does (SQLite runs DDL outside the driver's transactions)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    lock = None
    if engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
        import fcntl
        lock = open(f"{engine.url.database}.lock", "w")  # noqa: SIM115 - held until the upgrade is done
        fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(72711017)"))
            cfg.attributes["connection"] = conn
            names = set(inspect(conn).get_table_names())
            if "runs" in names and "alembic_version" not in names:
                command.stamp(cfg, BASELINE)
            command.upgrade(cfg, revision)
    finally:
        if lock is not None:
            lock.close()


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


# experiments: candidates x stages, each step naming the bench or eval run it made
experiments = Table(
    "experiments", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", Text, nullable=False),
    Column("status", String(16), nullable=False),        # running | done | failed | interrupted
    Column("started_at", DateTime, nullable=False), Column("finished_at", DateTime),
    Column("config", JSON), Column("error", Text),
)

experiment_steps = Table(
    "experiment_steps", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("experiment_id", Integer, ForeignKey("experiments.id"), nullable=False, index=True),
    Column("candidate", String(200), nullable=False),
    Column("stage", String(16), nullable=False),         # plan | serve | bench | eval
    Column("repeat", Integer, nullable=False),
    Column("status", String(16), nullable=False),        # running | done | failed | interrupted | refused
    Column("run_id", Integer, ForeignKey("runs.id")),
    Column("data", JSON),
)


def new_experiment(db: Engine, name: str, config: dict) -> int:
    with db.begin() as c:
        row = c.execute(insert(experiments).values(name=name, status="running", started_at=_now(),
                                                   config=json.loads(json.dumps(config, default=str))))
        return row.inserted_primary_key[0]


def get_experiment(db: Engine, experiment_id: int) -> dict | None:
    with db.connect() as c:
        r = c.execute(select(experiments).where(experiments.c.id == experiment_id)).first()
    return dict(r._mapping) if r else None


def finish_experiment(db: Engine, experiment_id: int, status: str, error: str | None = None) -> None:
    with db.begin() as c:
        c.execute(update(experiments).where(experiments.c.id == experiment_id)
                  .values(status=status, finished_at=None if status == "running" else _now(), error=error))


def put_step(db: Engine, experiment_id: int, candidate: str, stage: str, repeat: int, status: str,
             run_id: int | None = None, data: dict | None = None) -> None:
    """Record (or replace) one step of an experiment: the latest word on (candidate, stage, repeat)."""
    key = ((experiment_steps.c.experiment_id == experiment_id) & (experiment_steps.c.candidate == candidate)
           & (experiment_steps.c.stage == stage) & (experiment_steps.c.repeat == repeat))
    values = {"status": status, "run_id": run_id, "data": json.loads(json.dumps(data or {}, default=str))}
    with db.begin() as c:
        if c.execute(select(experiment_steps.c.id).where(key)).first():
            c.execute(update(experiment_steps).where(key).values(**values))
        else:
            c.execute(insert(experiment_steps).values(experiment_id=experiment_id, candidate=candidate, stage=stage,
                                                      repeat=repeat, **values))


def experiment_steps_of(db: Engine, experiment_id: int) -> list[dict]:
    with db.connect() as c:
        return [dict(r._mapping) for r in c.execute(select(experiment_steps).where(
            experiment_steps.c.experiment_id == experiment_id).order_by(experiment_steps.c.id))]


def list_experiments(db: Engine) -> list[dict]:
    with db.connect() as c:
        return [dict(r._mapping) for r in c.execute(select(experiments).order_by(experiments.c.id))]


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


# the machine during a run, as rigbench.monitor sampled it
samples = Table(
    "samples", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", Integer, ForeignKey("runs.id"), nullable=False, index=True),
    Column("t", Float, nullable=False), Column("data", JSON),
)


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
