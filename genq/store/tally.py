"""Job counters and the job status they imply, moved in the transaction of the requests they
count. Shared by completion, cancellation and the reconciler."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, case, or_, select, update
from sqlalchemy.orm import Session

from genq.store.status import JobStatus, RequestStatus, check_transition, sources
from genq.store.tables import Job, Request
from genq.store.webhooks import job_ended

# Statements below name their rows outright; nothing in the session's identity map to sync.
PLAIN = {"synchronize_session": False}


@dataclass
class Tally:
    """Counter increments for one job, summed over the requests a transaction ends."""

    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


def apply_tallies(session: Session, tallies: Mapping[str, Tally], *, now: datetime) -> None:
    """Add each job's increments and settle its status, in one UPDATE whatever the number of
    jobs (each counter moves by a CASE on the job id). On PostgreSQL the jobs are locked in id
    order first, so two transactions that end requests of the same jobs cannot deadlock."""
    jobs = sorted(tallies)  # an empty tally still settles its job (a cancel's)
    if not jobs:
        return
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(Job.id).where(Job.id.in_(jobs)).order_by(Job.id).with_for_update())
    values: dict[str, Any] = {"succeeded": Job.succeeded}  # a SET even with nothing to add
    for name in ("succeeded", "failed", "cancelled", "prompt_tokens", "completion_tokens"):
        column = getattr(Job, name)
        by_job = {j: getattr(tallies[j], name) for j in jobs if getattr(tallies[j], name)}
        if by_job:
            values[name] = column + case(by_job, value=Job.id, else_=0)
    # One UPDATE adds and reads back: on PostgreSQL it holds the row locks from here to
    # commit, so the counts it returns include every other committed transaction's.
    rows = session.execute(
        update(Job)
        .where(Job.id.in_(jobs))
        .values(**values)
        .returning(Job.id, Job.status, Job.total, Job.succeeded, Job.failed, Job.cancelled),
        execution_options=PLAIN,
    ).all()
    for row in sorted(rows, key=lambda r: r.id):
        ended = row.succeeded + row.failed + row.cancelled
        settle(session, job_id=row.id, status=row.status, open_=row.total - ended, now=now)


def settle(
    session: Session, *, job_id: str, status: JobStatus, open_: int, now: datetime
) -> JobStatus:
    """Finish a job none of whose requests is still open (queued or running)."""
    if open_ > 0 or status.is_terminal:
        return status
    new = JobStatus.CANCELLED if status is JobStatus.CANCELLING else JobStatus.COMPLETED
    check_transition(status, new)
    session.execute(
        update(Job).where(Job.id == job_id).values(status=new, finished_at=now),
        execution_options=PLAIN,
    )
    job_ended(session, job_id=job_id, now=now)  # its webhook's event, in this transaction
    return new


def cancel_requests(
    session: Session, *, where: ColumnElement[bool], now: datetime
) -> tuple[list[str], dict[str, Tally]]:
    """Cancel the requests matching ``where`` that no worker holds (queued ones, and running
    ones whose lease expired; a live claim is left to finish). Returns their ids and the
    counter increments, which the caller applies once the jobs are in the state that decides
    how they settle."""
    queued, running = sources(
        RequestStatus.QUEUED, RequestStatus.RUNNING, to=RequestStatus.CANCELLED
    )
    rows = session.execute(
        update(Request)
        .where(
            where,
            or_(
                Request.status == queued,
                and_(Request.status == running, Request.lease_expires_at < now),
            ),
        )
        .values(status=RequestStatus.CANCELLED, lease_expires_at=None, updated_at=now)
        .returning(Request.id, Request.job_id),
        execution_options=PLAIN,
    ).all()
    tallies: dict[str, Tally] = {}
    for row in rows:
        tallies.setdefault(row.job_id, Tally()).cancelled += 1
    return [row.id for row in rows], tallies
