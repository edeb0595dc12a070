"""API keys: a name to tell them apart, and when each was last used.

- ``api_keys.name``: given at ``genq keys create --name``, shown by ``genq keys list``.
- ``api_keys.last_used_at``: when an API process last accepted the key, written by that process
  at most once a minute (see ``genq.auth.KeyUse``).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("name", sa.String(200), nullable=True))
    op.add_column("api_keys", sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:  # SQLite drops columns by rebuilding the table
        batch.drop_column("last_used_at")
        batch.drop_column("name")
