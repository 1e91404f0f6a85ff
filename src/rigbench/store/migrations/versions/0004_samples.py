"""samples: the machine as rigbench's sampler saw it during a run (CPU and GPU used by others, load, steal,
memory, GPU clocks and throttling), one row per sample.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "samples",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id"), nullable=False),
        sa.Column("t", sa.Float, nullable=False),
        sa.Column("data", sa.JSON),
    )
    op.create_index("ix_samples_run_id", "samples", ["run_id"])


def downgrade() -> None:
    op.drop_index("ix_samples_run_id", table_name="samples")
    op.drop_table("samples")
