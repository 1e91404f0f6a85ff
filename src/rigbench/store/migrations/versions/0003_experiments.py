"""experiments: candidates x stages tied together, each step naming the bench or eval run it made (`rigbench
experiment`, `--resume ID`).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "experiments",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", sa.DateTime, nullable=False), sa.Column("finished_at", sa.DateTime),
        sa.Column("config", sa.JSON), sa.Column("error", sa.Text),
    )
    op.create_table(
        "experiment_steps",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("experiment_id", sa.Integer, sa.ForeignKey("experiments.id"), nullable=False),
        sa.Column("candidate", sa.String(200), nullable=False),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("repeat", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id")),
        sa.Column("data", sa.JSON),
    )
    op.create_index("ix_experiment_steps_experiment_id", "experiment_steps", ["experiment_id"])


def downgrade() -> None:
    op.drop_index("ix_experiment_steps_experiment_id", table_name="experiment_steps")
    op.drop_table("experiment_steps")
    op.drop_table("experiments")
