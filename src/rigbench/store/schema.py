"""The store's tables (SQLAlchemy Core). Alembic's migrations (migrations/ in this package) build exactly these;
a test compares them."""

from __future__ import annotations

from sqlalchemy import JSON, Column, DateTime, Float, ForeignKey, Index, Integer, MetaData, String, Table, Text

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

# the machine during a run, as rigbench.monitor sampled it
samples = Table(
    "samples", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", Integer, ForeignKey("runs.id"), nullable=False, index=True),
    Column("t", Float, nullable=False), Column("data", JSON),
)
