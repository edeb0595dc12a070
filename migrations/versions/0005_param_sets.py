"""What a job records at creation: its parameter sets (shared parameters, request counts) and
how many of its requests were input lines refused at intake (failed from the start).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("param_sets", sa.JSON(none_as_null=True), nullable=True))
    op.add_column("jobs", sa.Column("refused", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:  # SQLite drops columns by rebuilding the table
        batch.drop_column("refused")
        batch.drop_column("param_sets")
