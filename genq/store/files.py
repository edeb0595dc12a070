"""Files of the OpenAI-compatible API: batch inputs uploaded by clients, outputs genq writes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from genq.errors import NotFound
from genq.store.tables import File, looks_like_id, new_id, utcnow


@dataclass(frozen=True)
class FileInfo:
    id: str
    tenant: str
    purpose: str
    filename: str
    bytes: int
    created_at: datetime


def create_file(
    session: Session,
    *,
    tenant: str,
    purpose: str,
    filename: str,
    content: bytes,
    now: datetime | None = None,
) -> FileInfo:
    info = FileInfo(new_id("file"), tenant, purpose, filename, len(content), now or utcnow())
    session.execute(insert(File).values(**vars(info), content=content))
    return info


def get_file(session: Session, *, tenant: str, file_id: str) -> FileInfo:
    if not looks_like_id(file_id):
        raise NotFound(f"no file {file_id!r}")
    row = session.execute(
        select(
            File.id, File.tenant, File.purpose, File.filename, File.bytes, File.created_at
        ).where(File.id == file_id, File.tenant == tenant)
    ).one_or_none()
    if row is None:
        raise NotFound(f"no file {file_id}")
    return FileInfo(*row)


def file_content(session: Session, *, tenant: str, file_id: str) -> bytes:
    if not looks_like_id(file_id):
        raise NotFound(f"no file {file_id!r}")
    content = session.scalar(select(File.content).where(File.id == file_id, File.tenant == tenant))
    if content is None:
        raise NotFound(f"no file {file_id}")
    return content
