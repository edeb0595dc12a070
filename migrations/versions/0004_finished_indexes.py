"""Indexes on jobs.finished_at and results.finished_at.

/metrics reads the jobs finished since its last scrape and the results of the last minute, not
the whole tables.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_jobs_finished_at", "jobs", ["finished_at"])
    op.create_index("ix_results_finished_at", "results", ["finished_at"])


def downgrade() -> None:
    op.drop_index("ix_results_finished_at", table_name="results")
    op.drop_index("ix_jobs_finished_at", table_name="jobs")
