"""What the reconciler needs: the database is the authority and a queue message only a hint,
so anything claimable that no live message names is found here and announced again."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Row,
    String,
    and_,
    cast,
    func,
    literal,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from genq.settings import DEFAULT_MAX_ATTEMPTS, DEFAULT_REANNOUNCE_SECONDS
from genq.store.claims import claimable_kinds
from genq.store.records import Announcement, ReapReport
from genq.store.status import JobStatus, RequestStatus, sources
from genq.store.tables import Job, Request, utcnow
from genq.store.tally import PLAIN, Tally, apply_tallies, cancel_requests

DEFAULT_REAP_LIMIT = 10_000
MARK_CHUNK = 5_000  # ids per statement: well under SQLite's and PostgreSQL's bind limits

_R = RequestStatus


def pending_announcements(
    session: Session,
    *,
    now: datetime | None = None,
    reannounce_seconds: float = DEFAULT_REANNOUNCE_SECONDS,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    job_id: str | None = None,
    limit: int = DEFAULT_REAP_LIMIT,
) -> list[Announcement]:
    """Claimable requests that no recent message names: never announced, announced more than
    ``reannounce_seconds`` ago, or running under an expired lease (a claim clears the mark).
    Grouped by model and parameter set, oldest first. A producer passes its new ``job_id``."""
    rows = _pending(
        session,
        now=now or utcnow(),
        reannounce_seconds=reannounce_seconds,
        max_attempts=max_attempts,
        job_id=job_id,
        limit=limit,
    )
    return _grouped(rows)


# Written as literals, as the partial indexes' predicates are: a statement psycopg has prepared
# (generic, its values unknown to the planner) can then still use those indexes.
_QUEUED = Request.status == literal_column("'queued'")
_RETRIED = and_(_QUEUED, Request.attempts > literal_column("0"))


def _pending(
    session: Session,
    *,
    now: datetime,
    reannounce_seconds: float,
    max_attempts: int,
    job_id: str | None,
    limit: int,
) -> Sequence[Row[str, str, str, RequestStatus]]:
    """Expired leases first, then queued requests never announced, then those announced
    longest ago: each a range of an index (the queued ones of the partial index on
    ``announced_at``), so that a pass reads what it returns, not the whole queue."""
    stale = now - timedelta(seconds=reannounce_seconds)
    expired, _queued = claimable_kinds(now=now, max_attempts=max_attempts)
    fresh = Request.attempts < max_attempts
    unnamed = or_(Request.announced_at.is_(None), Request.announced_at < stale)
    oldest = (Request.created_at, Request.idx)
    selections = (
        (and_(expired, unnamed), oldest),
        (and_(_QUEUED, fresh, Request.announced_at.is_(None)), oldest),
        (and_(_QUEUED, fresh, Request.announced_at < stale), (Request.announced_at,)),
    )
    rows: list[Row[str, str, str, RequestStatus]] = []
    for where, order in selections:
        if len(rows) >= limit:
            break
        query = select(Request.id, Request.model, Request.group_key, Request.status).where(where)
        if job_id is not None:
            query = query.where(Request.job_id == job_id)
        rows += session.execute(query.order_by(*order).limit(limit - len(rows))).all()
    return rows


def _grouped(rows: Sequence[Row[str, str, str, Any]]) -> list[Announcement]:
    groups: dict[tuple[str, str], list[str]] = {}
    for row in rows:
        groups.setdefault((row.model, row.group_key), []).append(row.id)
    return [Announcement(model, key, tuple(ids)) for (model, key), ids in groups.items()]


def mark_announced(
    session: Session, *, request_ids: Sequence[str], now: datetime | None = None
) -> int:
    """Record that a queue message now names these requests; returns how many were marked.

    Rows another transaction holds are skipped, not waited for: a worker claiming (which spends
    the message), completing or releasing them is moving them on anyway, and waiting there
    could deadlock with it (PostgreSQL; SQLite has one writer)."""
    now = now or utcnow()
    marked = 0
    for start in range(0, len(request_ids), MARK_CHUNK):
        chunk = list(request_ids[start : start + MARK_CHUNK])
        free = (
            select(Request.id)
            .where(Request.id.in_(chunk))
            .order_by(Request.id)
            .with_for_update(skip_locked=True)
        )
        ids = list(session.scalars(free))
        if not ids:
            continue
        marked += len(
            session.execute(
                update(Request)
                .where(Request.id.in_(ids))
                .values(announced_at=now)
                .returning(Request.id),
                execution_options=PLAIN,
            ).all()
        )
    return marked


def queued_page(
    session: Session, *, job_id: str, after_idx: int = -1, limit: int = DEFAULT_REAP_LIMIT
) -> tuple[list[Announcement], int]:
    """The job's queued requests past position ``after_idx``, at most ``limit`` in input
    order (by the queued-requests index), grouped by parameter set; and the last position
    (``after_idx`` when none)."""
    rows = session.execute(
        select(Request.id, Request.model, Request.group_key, Request.idx)
        .where(Request.job_id == job_id, Request.status == _R.QUEUED, Request.idx > after_idx)
        .order_by(Request.idx)
        .limit(limit)
    ).all()
    return _grouped(rows), rows[-1].idx if rows else after_idx


def unmark_announced(
    session: Session, *, job_id: str, request_ids: Sequence[str] = (), after_idx: int | None = None
) -> None:
    """Clear the mark of the job's queued requests in ``request_ids`` and past ``after_idx``:
    stored as announced, their messages never went out, so the reconciler's next pass
    announces them. Rows another transaction holds are skipped, as in :func:`mark_announced`."""
    where: list[ColumnElement[bool]] = [Request.id.in_(list(c)) for c in _chunks(request_ids)]
    if after_idx is not None:
        where.append(Request.idx > after_idx)
    for each in where:
        held = (
            select(Request.id)
            .where(Request.job_id == job_id, Request.status == _R.QUEUED, each)
            .order_by(Request.id)
            .with_for_update(skip_locked=True)
        )
        session.execute(
            update(Request).where(Request.id.in_(held.scalar_subquery())).values(announced_at=None),
            execution_options=PLAIN,
        )


def _chunks(ids: Sequence[str]) -> list[Sequence[str]]:
    return [ids[start : start + MARK_CHUNK] for start in range(0, len(ids), MARK_CHUNK)]


def reap(
    session: Session,
    *,
    now: datetime | None = None,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    reannounce_seconds: float = DEFAULT_REANNOUNCE_SECONDS,
    limit: int = DEFAULT_REAP_LIMIT,
) -> ReapReport:
    """One reconciler pass. Cancels what cancelling jobs left unheld; fails requests out of
    attempts ("gave up after N attempts: <last error or 'worker lost'>"), so a poison request
    stops looping; and returns what must be announced again (publish, then
    :func:`mark_announced`)."""
    now = now or utcnow()
    cancelling = select(Job.id).where(Job.status == JobStatus.CANCELLING)
    cancelled, tallies = cancel_requests(session, where=Request.job_id.in_(cancelling), now=now)
    apply_tallies(session, tallies, now=now)
    failed = _give_up(session, now=now, max_attempts=max_attempts)
    rows = _pending(
        session,
        now=now,
        reannounce_seconds=reannounce_seconds,
        max_attempts=max_attempts,
        job_id=None,
        limit=limit,
    )
    return ReapReport(
        failed=tuple(failed),
        cancelled=tuple(cancelled),
        expired=tuple(row.id for row in rows if row.status is _R.RUNNING),
        unannounced=tuple(row.id for row in rows if row.status is _R.QUEUED),
        announcements=tuple(_grouped(rows)),
    )


def _give_up(session: Session, *, now: datetime, max_attempts: int) -> list[str]:
    """Fail the requests out of attempts: queued ones a claim gave back (the partial index of
    retried requests), and running ones whose lease ran out (a window's worth per worker)."""
    queued, running = sources(_R.QUEUED, _R.RUNNING, to=_R.FAILED)
    assert queued == _R.QUEUED  # as _RETRIED spells it
    reason = (
        literal("gave up after ")
        + cast(Request.attempts, String)
        + literal(" attempts: ")
        + func.coalesce(Request.error, literal("worker lost"))
    )
    tallies: dict[str, Tally] = {}
    failed: list[str] = []
    for where in (
        _RETRIED,
        and_(Request.status == running, Request.lease_expires_at < now),
    ):
        rows = session.execute(
            update(Request)
            .where(where, Request.attempts >= max_attempts)
            .values(status=_R.FAILED, error=reason, lease_expires_at=None, updated_at=now)
            .returning(Request.id, Request.job_id),
            execution_options=PLAIN,
        ).all()
        for row in rows:
            tallies.setdefault(row.job_id, Tally()).failed += 1
        failed += [row.id for row in rows]
    apply_tallies(session, tallies, now=now)
    return failed
