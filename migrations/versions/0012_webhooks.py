"""Webhooks: a job's ``webhook_url`` (or its tenant's default), a per-tenant signing secret,
and ``webhook_deliveries``: one row per event, written in the transaction that ends the job,
delivered from the API process until a 2xx or the last attempt.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PENDING = "status = 'pending'"


def upgrade() -> None:
    op.add_column("jobs", sa.Column("webhook_url", sa.String(2048), nullable=True))
    op.add_column("tenants", sa.Column("webhook_url", sa.String(2048), nullable=True))
    op.add_column("tenants", sa.Column("webhook_secret", sa.String(128), nullable=True))
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("tenant", sa.String(200), nullable=False),
        sa.Column(
            "job_id",
            sa.String(40),
            sa.ForeignKey("jobs.id", name="fk_webhook_deliveries_job_id_jobs", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_deliveries"),
    )
    op.create_index("ix_webhook_deliveries_job_id", "webhook_deliveries", ["job_id"])
    op.create_index(
        "ix_webhook_deliveries_pending_next_attempt_at",
        "webhook_deliveries",
        ["next_attempt_at"],
        postgresql_where=sa.text(PENDING),
        sqlite_where=sa.text(PENDING),
    )


def downgrade() -> None:
    op.drop_index("ix_webhook_deliveries_pending_next_attempt_at", table_name="webhook_deliveries")
    op.drop_index("ix_webhook_deliveries_job_id", table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
    # Plain DROP COLUMN (see 0011): a batch rebuild of jobs would drop what cascades from it.
    op.execute("ALTER TABLE tenants DROP COLUMN webhook_secret")
    op.execute("ALTER TABLE tenants DROP COLUMN webhook_url")
    op.execute("ALTER TABLE jobs DROP COLUMN webhook_url")
