"""Lease upkeep beyond claim and release: keeping a planning window's claims alive while it
runs, and letting go of the claims of a run that died.

Like every store function these run in the caller's transaction and never commit."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, select, update
from sqlalchemy.orm import Session

from genq.store.fenced import among, chunks
from genq.store.status import JobStatus, RequestStatus, sources
from genq.store.tables import Job, Request, utcnow
from genq.store.tally import PLAIN, Tally, apply_tallies, cancel_requests

_R = RequestStatus


_CANCELLING = select(Job.id).where(Job.status == JobStatus.CANCELLING)


def _held_by(worker_id: str, held: Sequence[tuple[str, int]]) -> ColumnElement[bool]:
    """The ``(request_id, fence)`` claims (at most one statement's worth, see
    genq.store.fenced), as long as ``worker_id`` still holds them."""
    return and_(among(held), Request.lease_owner == worker_id)


def renew(
    session: Session,
    *,
    worker_id: str,
    held: Sequence[tuple[str, int]],
    lease_seconds: float,
    now: datetime | None = None,
) -> set[str]:
    """Extend the leases of ``(request_id, fence)`` claims a worker holds and has not run yet,
    so a planning window that outlasts one lease is not taken over piece by piece. A claim in a
    cancelling job is cancelled instead: work not started yet is dropped, as a cancel promises.
    Returns the ids still held (a claim taken over since is neither renewed nor cancelled)."""
    now = now or utcnow()
    if not held:
        return set()
    renewed: set[str] = set()
    # Requests before jobs, the order every store write locks in.
    for part in chunks(held):
        rows = session.execute(
            update(Request)
            .where(
                _held_by(worker_id, part),
                Request.status == _R.RUNNING,
                Request.job_id.not_in(_CANCELLING),
            )
            .values(lease_expires_at=now + timedelta(seconds=lease_seconds), updated_at=now)
            .returning(Request.id),
            execution_options=PLAIN,
        ).all()
        renewed |= {row.id for row in rows}
    cancel_claims(session, worker_id=worker_id, held=held, now=now)
    return renewed


def cancel_claims(
    session: Session,
    *,
    worker_id: str,
    held: Sequence[tuple[str, int]],
    now: datetime | None = None,
) -> set[str]:
    """Cancel the ``(request_id, fence)`` claims a worker holds in cancelling jobs and has not
    started: a cancel reaches work already claimed at the worker's next batch. Returns the ids
    cancelled; the job's counters move with them."""
    now = now or utcnow()
    if not held:
        return set()
    (running,) = sources(_R.RUNNING, to=_R.CANCELLED)
    dropped: list[Any] = []
    for part in chunks(held):
        dropped += session.execute(
            update(Request)
            .where(
                _held_by(worker_id, part),
                Request.status == running,
                Request.job_id.in_(_CANCELLING),
            )
            .values(status=_R.CANCELLED, lease_expires_at=None, updated_at=now)
            .returning(Request.id, Request.job_id),
            execution_options=PLAIN,
        ).all()
    tallies: dict[str, Tally] = {}
    for row in dropped:
        tallies.setdefault(row.job_id, Tally()).cancelled += 1
    apply_tallies(session, tallies, now=now)
    return {row.id for row in dropped}


def cancelling_jobs(session: Session, job_ids: Sequence[str]) -> set[str]:
    """Which of ``job_ids`` are being cancelled."""
    if not job_ids:
        return set()
    rows = session.scalars(
        select(Job.id).where(Job.id.in_(sorted(set(job_ids))), Job.status == JobStatus.CANCELLING)
    )
    return set(rows)


def unstarted_job(session: Session, *, model: str, since: datetime) -> str | None:
    """A job of ``model`` created after ``since`` that no worker has started: new work a
    worker should share its window with (read through the (status, model) index)."""
    return session.scalar(
        select(Job.id)
        .where(Job.status == JobStatus.QUEUED, Job.model == model, Job.created_at > since)
        .limit(1)
    )


def release_orphans(
    session: Session, *, job_id: str, error: str, now: datetime | None = None
) -> list[str]:
    """Put back in the queue every request of ``job_id`` still running under any claim. Only
    for a job that one process works on alone (``genq run``) when that process died: its
    claims belong to no live worker, so waiting for the leases to expire would only stall the
    resumed run. The attempt counts and ``error`` is kept, as for a lost worker, so a request
    that kills its process every time still ends failed. Returns the ids put back."""
    now = now or utcnow()
    (running,) = sources(_R.RUNNING, to=_R.QUEUED)
    rows = session.execute(
        update(Request)
        .where(Request.job_id == job_id, Request.status == running)
        .values(
            status=_R.QUEUED,
            error=error,
            lease_owner=None,
            lease_expires_at=None,
            announced_at=None,
            updated_at=now,
        )
        .returning(Request.id),
        execution_options=PLAIN,
    ).all()
    cancelling = select(Job.id).where(Job.id == job_id, Job.status == JobStatus.CANCELLING)
    _, tallies = cancel_requests(
        session, where=and_(Request.job_id == job_id, Request.job_id.in_(cancelling)), now=now
    )
    apply_tallies(session, tallies, now=now)
    return [row.id for row in rows]
