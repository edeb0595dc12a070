"""Fair sharing: a job's priority and estimated work, per-tenant weights and quotas, the
indexes the fair claim reads through, and when an OpenAI batch was asked to cancel.

- ``jobs.priority`` orders jobs within a tenant; ``jobs.work`` is the job's estimated work
  (tokens x rows, see genq.fairshare) that shares and quotas are measured in.
- ``tenants`` holds what differs from the ``GENQ_*`` defaults: weight, queued-request and
  queued-token limits.
- ``ix_jobs_status_model``: the fair claim reads the open jobs of one model;
  ``ix_requests_queued_job_id_idx`` (partial, queued requests only): then takes one job's
  queued requests in input order.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("jobs", sa.Column("priority", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("jobs", sa.Column("work", sa.BigInteger(), nullable=False, server_default="0"))
    op.add_column(
        "openai_batches",
        sa.Column("cancelling_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "tenants",
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("weight", sa.Float(), nullable=True),
        sa.Column("max_queued_requests", sa.BigInteger(), nullable=True),
        sa.Column("max_queued_tokens", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_tenants"),
    )
    with op.get_context().autocommit_block():  # CREATE INDEX CONCURRENTLY runs outside one
        op.create_index(
            "ix_jobs_status_model", "jobs", ["status", "model"], postgresql_concurrently=True
        )
        op.create_index(
            "ix_requests_queued_job_id_idx",
            "requests",
            ["job_id", "idx"],
            postgresql_where=sa.text("status = 'queued'"),
            sqlite_where=sa.text("status = 'queued'"),
            postgresql_concurrently=True,
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.drop_index(
            "ix_requests_queued_job_id_idx", table_name="requests", postgresql_concurrently=True
        )
        op.drop_index("ix_jobs_status_model", table_name="jobs", postgresql_concurrently=True)
    op.drop_table("tenants")
    with op.batch_alter_table("openai_batches") as batch:
        batch.drop_column("cancelling_at")
    with op.batch_alter_table("jobs") as batch:  # SQLite drops columns by rebuilding the table
        batch.drop_column("work")
        batch.drop_column("priority")
