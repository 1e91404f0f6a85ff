"""one row per (run, task, attempt): a Ray task retried after its worker was lost writes the same row again
instead of a second one.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""
from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("uq_task_results_run_task_attempt", "task_results", ["run_id", "task", "attempt"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_task_results_run_task_attempt", table_name="task_results")
