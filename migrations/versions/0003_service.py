"""Service tables: API keys, files, OpenAI-compatible batches, worker heartbeats.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _time(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("tenant", sa.String(200), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        _time("created_at"),
        _time("revoked_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
        sa.UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
    )
    op.create_table(
        "files",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("tenant", sa.String(200), nullable=False),
        sa.Column("purpose", sa.String(32), nullable=False),
        sa.Column("filename", sa.String(256), nullable=False),
        sa.Column("bytes", sa.Integer(), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        _time("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_files"),
    )
    op.create_index("ix_files_tenant_created_at", "files", ["tenant", "created_at"])
    op.create_table(
        "openai_batches",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("tenant", sa.String(200), nullable=False),
        sa.Column("job_id", sa.String(40), nullable=True),
        sa.Column("endpoint", sa.String(64), nullable=False),
        sa.Column("input_file_id", sa.String(40), nullable=False),
        sa.Column("completion_window", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("metadata", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("errors", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("output_file_id", sa.String(40), nullable=True),
        sa.Column("error_file_id", sa.String(40), nullable=True),
        sa.Column("invalid", sa.Integer(), nullable=False),
        _time("created_at"),
        _time("expires_at"),
        _time("ended_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_openai_batches"),
    )
    op.create_index(
        "ix_openai_batches_tenant_created_at", "openai_batches", ["tenant", "created_at"]
    )
    op.create_table(
        "worker_heartbeats",
        sa.Column("worker_id", sa.String(200), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        _time("seen_at"),
        sa.PrimaryKeyConstraint("worker_id", name="pk_worker_heartbeats"),
    )


def downgrade() -> None:
    op.drop_table("worker_heartbeats")
    op.drop_index("ix_openai_batches_tenant_created_at", table_name="openai_batches")
    op.drop_table("openai_batches")
    op.drop_index("ix_files_tenant_created_at", table_name="files")
    op.drop_table("files")
    op.drop_table("api_keys")
