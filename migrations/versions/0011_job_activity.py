"""What the dashboard reads of one job without a scan of its requests:

- ``job_batches``: a row per (job, recorded batch) with how many of the job's requests that
  batch finished and their new tokens, written with the batch (a job's throughput over time and
  the batches it rode in, read by the job's key however large the job);
- ``ix_requests_failed_job_id_idx``: a job's failed requests in input order (few), for its
  errors and for retrying them;
- ``jobs.retried``: failures a retry put back in the queue, still counted as failures that
  happened (the finished-requests counters never go down).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FAILED = "status = 'failed'"


def upgrade() -> None:
    op.create_table(
        "job_batches",
        sa.Column(
            "job_id",
            sa.String(40),
            sa.ForeignKey("jobs.id", name="fk_job_batches_job_id_jobs", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column(
            "batch_id",
            sa.Integer(),
            sa.ForeignKey("batches.id", name="fk_job_batches_batch_id_batches", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("job_id", "batch_id", name="pk_job_batches"),
    )
    op.create_index("ix_job_batches_batch_id", "job_batches", ["batch_id"])
    op.add_column("jobs", sa.Column("retried", sa.Integer(), server_default="0", nullable=False))
    op.create_index(
        "ix_requests_failed_job_id_idx",
        "requests",
        ["job_id", "idx"],
        postgresql_where=sa.text(FAILED),
        sqlite_where=sa.text(FAILED),
    )


def downgrade() -> None:
    op.drop_index("ix_requests_failed_job_id_idx", table_name="requests")
    # A plain DROP COLUMN on both backends: a batch rebuild of jobs would drop the table that
    # requests cascade from.
    op.execute("ALTER TABLE jobs DROP COLUMN retried")
    op.drop_index("ix_job_batches_batch_id", table_name="job_batches")
    op.drop_table("job_batches")
