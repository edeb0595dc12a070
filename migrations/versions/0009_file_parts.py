"""Files in parts: a file's bytes are rows of ``file_parts`` (``seq`` from 0, about 1 MiB
each), so an upload is written and a download or a job's intake read a part at a time, in
memory that does not grow with the file. Existing files move over as one part each.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "file_parts",
        sa.Column("file_id", sa.String(40), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["file_id"], ["files.id"], name="fk_file_parts_file_id_files", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("file_id", "seq", name="pk_file_parts"),
    )
    op.execute("INSERT INTO file_parts (file_id, seq, data) SELECT id, 0, content FROM files")
    # A plain DROP COLUMN on both backends (SQLite has it since 3.35): a batch rebuild of
    # ``files`` would drop the old table, and with it, by the cascade, every part.
    op.execute("ALTER TABLE files DROP COLUMN content")


def downgrade() -> None:
    op.add_column("files", sa.Column("content", sa.LargeBinary(), nullable=True))
    bind = op.get_bind()
    ids = bind.execute(sa.text("SELECT id FROM files")).scalars().all()
    for file_id in ids:
        parts = bind.execute(
            sa.text("SELECT data FROM file_parts WHERE file_id = :id ORDER BY seq"), {"id": file_id}
        ).scalars()
        bind.execute(
            sa.text("UPDATE files SET content = :content WHERE id = :id"),
            {"id": file_id, "content": b"".join(parts)},
        )
    if bind.dialect.name != "sqlite":
        op.alter_column("files", "content", nullable=False)
    op.drop_table("file_parts")
