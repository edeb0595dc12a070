"""OpenAI batches finalize in the background: once its job has ended a batch is
``finalizing`` (``finalizing_at``, and ``outcome``: the status it will end in) while a thread
of an API process writes its output and error files under a lease (``finalize_until``), then
ends. A poll only reads.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "openai_batches", sa.Column("finalizing_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column("openai_batches", sa.Column("outcome", sa.String(16), nullable=True))
    op.add_column(
        "openai_batches", sa.Column("finalize_until", sa.DateTime(timezone=True), nullable=True)
    )
    op.create_index("ix_openai_batches_status", "openai_batches", ["status"])


def downgrade() -> None:
    op.drop_index("ix_openai_batches_status", table_name="openai_batches")
    for column in ("finalize_until", "outcome", "finalizing_at"):
        op.execute(f"ALTER TABLE openai_batches DROP COLUMN {column}")
