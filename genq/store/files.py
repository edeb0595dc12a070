"""Files of the OpenAI-compatible API: batch inputs uploaded by clients, outputs genq writes.

A file's bytes are stored in parts of :data:`PART_BYTES` (``file_parts``), written and read a
part at a time: a 200 MB upload, its download and the intake of its lines never hold it whole."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, delete, insert, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from genq.errors import NotFound
from genq.store.tables import File, FilePart, looks_like_id, new_id, utcnow

PART_BYTES = 1 << 20
"""Bytes of one stored part of a file (the last may be shorter)."""


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
    content: bytes | Iterable[bytes],
    now: datetime | None = None,
) -> FileInfo:
    """Store a file of ``content`` (bytes, or chunks of any size, read one at a time)."""
    writer = FileWriter(session, tenant=tenant, purpose=purpose, filename=filename, now=now)
    for chunk in [content] if isinstance(content, bytes) else content:
        writer.write(chunk)
    return writer.close()


class FileWriter:
    """A file written as it is made, in the caller's transaction: its row first, then a part
    each time :data:`PART_BYTES` have come, then its size at :meth:`close`."""

    def __init__(
        self,
        session: Session,
        *,
        tenant: str,
        purpose: str,
        filename: str,
        now: datetime | None = None,
    ) -> None:
        self.session = session
        self.info = FileInfo(new_id("file"), tenant, purpose, filename, 0, now or utcnow())
        session.execute(insert(File).values(**vars(self.info)))
        self._pending: list[bytes] = []
        self._held = 0
        self._seq = 0
        self._size = 0

    def write(self, data: bytes) -> None:
        self._pending.append(data)
        self._held += len(data)
        if self._held >= PART_BYTES:
            joined = b"".join(self._pending)
            whole = len(joined) - len(joined) % PART_BYTES
            for start in range(0, whole, PART_BYTES):
                self._store(joined[start : start + PART_BYTES])
            self._pending = [joined[whole:]]
            self._held = len(joined) - whole

    def close(self) -> FileInfo:
        if self._held:
            self._store(b"".join(self._pending))
        self._pending, self._held = [], 0
        self.session.execute(update(File).where(File.id == self.info.id).values(bytes=self._size))
        self.info = FileInfo(**{**vars(self.info), "bytes": self._size})
        return self.info

    def _store(self, part: bytes) -> None:
        self.session.execute(
            insert(FilePart).values(file_id=self.info.id, seq=self._seq, data=part)
        )
        self._seq += 1
        self._size += len(part)


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
    """The whole file (for small ones; :func:`read_parts` streams)."""
    get_file(session, tenant=tenant, file_id=file_id)
    return b"".join(session.scalars(_PARTS.where(FilePart.file_id == file_id)))


_PARTS = select(FilePart.data).order_by(FilePart.seq)


def read_parts(sessions: sessionmaker[Session], *, tenant: str, file_id: str) -> Iterator[bytes]:
    """The tenant's file, a part per short transaction (a file never changes once stored), so
    neither memory nor a transaction grows with it. :class:`NotFound` at once for no such
    file; a file deleted while it is read ends in :class:`NotFound`, never in a short read."""
    with sessions.begin() as session:
        size = get_file(session, tenant=tenant, file_id=file_id).bytes
    return _parts(sessions, file_id, size)


def _parts(sessions: sessionmaker[Session], file_id: str, size: int) -> Iterator[bytes]:
    read = 0
    seq = 0
    while read < size:
        with sessions.begin() as session:
            part = session.scalar(
                select(FilePart.data).where(FilePart.file_id == file_id, FilePart.seq == seq)
            )
        if part is None:
            raise NotFound(f"file {file_id} was deleted while it was read")
        read += len(part)
        seq += 1
        yield part
