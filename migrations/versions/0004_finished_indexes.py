"""Indexes on jobs.finished_at and results.finished_at.

/metrics reads the jobs finished since its last scrape and the results of the last minute, not
the whole tables. On PostgreSQL the indexes are built concurrently: writes to large tables go on
while they build.

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
    with op.get_context().autocommit_block():  # CREATE INDEX CONCURRENTLY runs outside one
        for table in ("jobs", "results"):
            op.create_index(
                f"ix_{table}_finished_at", table, ["finished_at"], postgresql_concurrently=True
            )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        for table in ("results", "jobs"):
            op.drop_index(f"ix_{table}_finished_at", table_name=table, postgresql_concurrently=True)
