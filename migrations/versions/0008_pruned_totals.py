"""Totals that survive retention: per model, the tallies of the jobs retention deleted, so the
``/metrics`` counters (requests finished, tokens) never go down when old jobs are pruned.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TALLIES = ("succeeded", "failed", "cancelled", "prompt_tokens", "completion_tokens")


def upgrade() -> None:
    op.create_table(
        "pruned_totals",
        sa.Column("model", sa.String(200), nullable=False),
        *(sa.Column(name, sa.BigInteger(), nullable=False) for name in TALLIES),
        sa.PrimaryKeyConstraint("model", name="pk_pruned_totals"),
    )


def downgrade() -> None:
    op.drop_table("pruned_totals")
