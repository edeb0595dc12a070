"""Files of the OpenAI-compatible API: batch inputs uploaded by clients, outputs genq writes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, delete, insert, or_, select
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


def list_files(
    session: Session,
    *,
    tenant: str,
    purpose: str | None = None,
    after: str | None = None,
    limit: int,
    newest_first: bool = True,
) -> tuple[list[FileInfo], bool]:
    """A page of the tenant's files by creation (``after``: the last id of the previous page),
    and whether more follow."""
    columns = (File.id, File.tenant, File.purpose, File.filename, File.bytes, File.created_at)
    query = select(*columns).where(File.tenant == tenant)
    if purpose is not None:
        query = query.where(File.purpose == purpose)
    if after is not None:
        cursor = get_file(session, tenant=tenant, file_id=after)
        beyond = (
            (File.created_at < cursor.created_at)
            if newest_first
            else (File.created_at > cursor.created_at)
        )
        same = and_(
            File.created_at == cursor.created_at,
            File.id < cursor.id if newest_first else File.id > cursor.id,
        )
        query = query.where(or_(beyond, same))
    order = (File.created_at.desc(), File.id.desc()) if newest_first else (File.created_at, File.id)
    rows = [FileInfo(*row) for row in session.execute(query.order_by(*order).limit(limit + 1))]
    return rows[:limit], len(rows) > limit


def delete_file(session: Session, *, tenant: str, file_id: str) -> None:
    """Delete one of the tenant's files. Jobs made from it keep their requests (read at
    submit); a batch that names it keeps the id, as OpenAI's do."""
    get_file(session, tenant=tenant, file_id=file_id)  # NotFound, for another tenant's too
    session.execute(delete(File).where(File.id == file_id, File.tenant == tenant))


def file_content(session: Session, *, tenant: str, file_id: str) -> bytes:
    if not looks_like_id(file_id):
        raise NotFound(f"no file {file_id!r}")
    content = session.scalar(select(File.content).where(File.id == file_id, File.tenant == tenant))
    if content is None:
        raise NotFound(f"no file {file_id}")
    return content
