"""Two partial indexes that keep a reconciler pass independent of the queue's length:

- ``ix_requests_queued_announced_at``: queued requests by when a message last named them (NULL:
  never), for those to announce again;
- ``ix_requests_queued_retried_attempts``: queued requests a claim gave back, for those out of
  attempts (few: a request is queued with attempts only after a release).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

QUEUED = "status = 'queued'"
RETRIED = "status = 'queued' AND attempts > 0"


def upgrade() -> None:
    op.create_index(
        "ix_requests_queued_announced_at",
        "requests",
        ["announced_at"],
        postgresql_where=sa.text(QUEUED),
        sqlite_where=sa.text(QUEUED),
    )
    op.create_index(
        "ix_requests_queued_retried_attempts",
        "requests",
        ["attempts"],
        postgresql_where=sa.text(RETRIED),
        sqlite_where=sa.text(RETRIED),
    )


def downgrade() -> None:
    op.drop_index("ix_requests_queued_retried_attempts", table_name="requests")
    op.drop_index("ix_requests_queued_announced_at", table_name="requests")
