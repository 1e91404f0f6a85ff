"""baseline: the store's tables as rigbench created them before migrations (runs, requests, aggregates,
task_results, events). A store made by an older rigbench is stamped at this revision rather than rebuilt.

Revision ID: 0001
Revises:
Create Date: 2026-12-01
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", sa.DateTime, nullable=False),
        sa.Column("finished_at", sa.DateTime),
        sa.Column("url", sa.Text), sa.Column("model", sa.Text), sa.Column("engine", sa.Text),
        sa.Column("engine_version", sa.Text), sa.Column("flags", sa.Text), sa.Column("gpu", sa.Text),
        sa.Column("environment", sa.JSON), sa.Column("config", sa.JSON), sa.Column("error", sa.Text),
    )
    op.create_table(
        "requests",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id"), nullable=False, index=True),
        sa.Column("scenario", sa.String(64)), sa.Column("idx", sa.Integer), sa.Column("start", sa.Float),
        sa.Column("ttft", sa.Float), sa.Column("e2e", sa.Float), sa.Column("tpot", sa.Float),
        sa.Column("prompt_tokens", sa.Integer), sa.Column("output_tokens", sa.Integer),
        sa.Column("cached_tokens", sa.Integer), sa.Column("n_chunks", sa.Integer), sa.Column("itl", sa.JSON),
        sa.Column("server_timings", sa.JSON), sa.Column("error", sa.Text),
    )
    op.create_table(
        "aggregates",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id"), nullable=False, index=True),
        sa.Column("scenario", sa.String(64)), sa.Column("summary", sa.JSON),
    )
    op.create_table(
        "task_results",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id"), nullable=False, index=True),
        sa.Column("task", sa.String(200), nullable=False), sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reward", sa.Float), sa.Column("wall_s", sa.Float), sa.Column("turns", sa.Integer),
        sa.Column("tokens_in", sa.Integer), sa.Column("tokens_out", sa.Integer), sa.Column("detail", sa.Text),
        sa.Column("started_at", sa.DateTime), sa.Column("finished_at", sa.DateTime),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id"), nullable=False, index=True),
        sa.Column("task", sa.String(200), nullable=False), sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("seq", sa.Integer, nullable=False), sa.Column("t", sa.Float, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False), sa.Column("data", sa.JSON),
    )


def downgrade() -> None:
    for name in ("events", "task_results", "aggregates", "requests", "runs"):
        op.drop_table(name)
