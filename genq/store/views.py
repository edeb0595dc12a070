"""Reads the HTTP API needs beyond a single job: job lists, results readable while a job runs,
models with work waiting, counts for metrics, worker heartbeats."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, delete, func, insert, or_, select, update
from sqlalchemy.orm import Session

from genq.store.db import Reader
from genq.store.jobs import get_job, list_results
from genq.store.records import JobInfo, ResultRow
from genq.store.status import JobStatus, RequestStatus
from genq.store.tables import (
    MAX_IDX,
    Batch,
    Job,
    PrunedTotals,
    Request,
    WorkerHeartbeat,
    utcnow,
)

_OPEN = (RequestStatus.QUEUED, RequestStatus.RUNNING)


def list_jobs(
    session: Session, *, tenant: str, after: str | None = None, limit: int = 20
) -> list[JobInfo]:
    """The tenant's jobs, newest first, after job id ``after`` (a cursor from a previous page;
    one of another tenant, or unknown, reads as missing)."""
    query = select(Job.id).where(Job.tenant == tenant)
    if after is not None:
        cursor = get_job(session, tenant=tenant, job_id=after)
        query = query.where(
            or_(
                Job.created_at < cursor.created_at,
                and_(Job.created_at == cursor.created_at, Job.id < cursor.id),
            )
        )
    ids = session.scalars(query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit))
    return [get_job(session, tenant=tenant, job_id=job_id) for job_id in ids]


def finished_prefix(
    session: Reader, *, job_id: str, after_idx: int = -1, limit: int = 1000
) -> list[ResultRow]:
    """Finished results in input order from ``after_idx + 1``, up to the first request still
    open: a client paging with the last idx as its cursor sees every result exactly once, even
    while the job runs (results finish out of order)."""
    after_idx = min(after_idx, MAX_IDX)  # a cursor past any position: bound it for the column
    # Positions are dense: the prefix lies within the next ``limit`` of them, and both reads
    # stay in that range (see list_results).
    upto = min(after_idx + limit, MAX_IDX)
    first_open = session.scalar(
        select(func.min(Request.idx)).where(
            Request.job_id == job_id,
            Request.idx > after_idx,
            Request.idx <= upto,
            Request.status.in_(_OPEN),
        )
    )
    rows = list_results(session, job_id=job_id, after_idx=after_idx, limit=limit, upto_idx=upto)
    return rows if first_open is None else [r for r in rows if r.idx < first_open]


def models_with_work(session: Session, *, now: datetime | None = None) -> list[str]:
    """Models with claimable requests: queued, or running under an expired lease."""
    now = now or utcnow()
    claimable = or_(
        Request.status == RequestStatus.QUEUED,
        and_(Request.status == RequestStatus.RUNNING, Request.lease_expires_at < now),
    )
    return list(session.scalars(select(Request.model).where(claimable).distinct()))


def queue_depths(session: Session) -> dict[str, int]:
    """Queued requests per model, from the counters of unfinished jobs and the running
    requests (a bounded index range), never a count over the queued requests themselves."""
    open_ = session.execute(
        select(Job.model, func.sum(Job.total - Job.succeeded - Job.failed - Job.cancelled))
        .where(Job.status.in_(_UNFINISHED))
        .group_by(Job.model)
    )
    running = dict(
        session.execute(
            select(Request.model, func.count())
            .where(Request.status == RequestStatus.RUNNING)
            .group_by(Request.model)
        ).all()
    )
    depths = {model: int(n or 0) - running.get(model, 0) for model, n in open_}
    return {model: n for model, n in depths.items() if n > 0}


def request_counts(session: Session) -> dict[str, int]:
    """Requests by status, from the jobs' counters (one row per job, not per request) and
    the running requests."""
    ended = session.execute(
        select(
            func.coalesce(func.sum(Job.succeeded), 0),
            func.coalesce(func.sum(Job.failed), 0),
            func.coalesce(func.sum(Job.cancelled), 0),
        )
    ).one()
    open_ = session.scalar(
        select(
            func.coalesce(func.sum(Job.total - Job.succeeded - Job.failed - Job.cancelled), 0)
        ).where(Job.status.in_(_UNFINISHED))
    )
    running = session.scalar(
        select(func.count()).select_from(Request).where(Request.status == RequestStatus.RUNNING)
    )
    return {
        "queued": max(0, int(open_ or 0) - int(running or 0)),
        "running": int(running or 0),
        "succeeded": int(ended[0]),
        "failed": int(ended[1]),
        "cancelled": int(ended[2]),
    }


_UNFINISHED = (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.CANCELLING)


def heartbeat(session: Session, *, worker_id: str, model: str, now: datetime | None = None) -> None:
    """Record that ``worker_id`` is alive now."""
    now = now or utcnow()
    moved = session.execute(
        update(WorkerHeartbeat)
        .where(WorkerHeartbeat.worker_id == worker_id)
        .values(seen_at=now, model=model)
    )
    if not moved.rowcount:  # type: ignore[attr-defined]
        session.execute(
            insert(WorkerHeartbeat).values(worker_id=worker_id, model=model, seen_at=now)
        )


def forget_worker(session: Session, *, worker_id: str) -> None:
    """Drop ``worker_id``'s heartbeat: a worker leaving cleanly stops counting as live at once."""
    session.execute(delete(WorkerHeartbeat).where(WorkerHeartbeat.worker_id == worker_id))


TOTALS = ("succeeded", "failed", "cancelled", "prompt_tokens", "completion_tokens")


def job_total(name: str) -> ColumnElement[int]:
    """The jobs' column for the total ``name``: failures a retry requeued still happened."""
    column: ColumnElement[int] = getattr(Job, name)
    return column + Job.retried if name == "failed" else column


def finished_totals(session: Session) -> dict[str, dict[str, int]]:
    """Per model, requests finished by outcome and tokens, since the database began: the jobs'
    tallies plus those of jobs retention deleted. They only grow (Prometheus counters)."""
    totals: dict[str, dict[str, int]] = {}
    for model_column, columns in (
        (Job.model, [job_total(name) for name in TOTALS]),
        (PrunedTotals.model, [getattr(PrunedTotals, name) for name in TOTALS]),
    ):
        rows = session.execute(
            select(model_column, *(func.sum(c) for c in columns)).group_by(model_column)
        )
        for model, *values in rows:
            held = totals.setdefault(model, dict.fromkeys(TOTALS, 0))
            for name, value in zip(TOTALS, values, strict=True):
                held[name] += int(value or 0)
    return totals


def live_workers(
    session: Session, *, within_seconds: float, now: datetime | None = None
) -> dict[str, int]:
    """Workers per model whose last heartbeat is at most ``within_seconds`` old."""
    since = (now or utcnow()) - timedelta(seconds=within_seconds)
    rows = session.execute(
        select(WorkerHeartbeat.model, func.count())
        .where(WorkerHeartbeat.seen_at >= since)
        .group_by(WorkerHeartbeat.model)
    )
    return {model: count for model, count in rows}


def batch_shapes(
    session: Session, *, after_id: int = 0, also: Collection[int] = (), limit: int = 10_000
) -> list[tuple[int, int, float]]:
    """(id, rows, prompt efficiency) of the recorded batches past id ``after_id``, and of those
    of ids ``also`` that exist, in id order, at most ``limit``. By primary key: cheap however
    many batches there are."""
    where = Batch.id > after_id
    if also:
        where = or_(where, Batch.id.in_(sorted(also)))
    query = select(Batch.id, Batch.rows, Batch.prompt_efficiency).where(where)
    rows = session.execute(query.order_by(Batch.id).limit(limit))
    return [(int(i), int(r), float(e)) for i, r, e in rows]


def finished_jobs(
    session: Session, *, after: tuple[datetime, str] | None = None, limit: int = 10_000
) -> list[tuple[str, datetime, datetime]]:
    """(id, created_at, finished_at) of the finished jobs past ``after`` in (finished_at, id)
    order, at most ``limit``: a keyset page, by index however many jobs there are."""
    query = select(Job.id, Job.created_at, Job.finished_at).where(Job.finished_at.is_not(None))
    if after is not None:
        finished, job_id = after
        query = query.where(
            or_(Job.finished_at > finished, and_(Job.finished_at == finished, Job.id > job_id))
        )
    rows = session.execute(query.order_by(Job.finished_at, Job.id).limit(limit))
    return [(str(i), c, f) for i, c, f in rows if f is not None]
