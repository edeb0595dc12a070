"""Jobs as producers and clients see them: create, read, cancel, page through results.

Like every store function these run in the caller's transaction and never commit."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.orm import Session

from genq.errors import InvalidRequest, JobNotFound
from genq.fairshare import estimated_tokens, request_work
from genq.params import PER_ROW_FIELDS, GenerationParams
from genq.store.db import Reader, bulk_insert
from genq.store.records import Choice, JobInfo, NewRequest, ResultRow
from genq.store.status import JobStatus, RequestStatus, check_transition, sources
from genq.store.tables import (
    MAX_IDX,
    REFUSED_PROMPT,
    Job,
    Request,
    Result,
    looks_like_id,
    new_id,
    new_ids,
    utcnow,
)
from genq.store.tally import PLAIN, Tally, apply_tallies, cancel_requests
from genq.store.webhooks import job_ended

log = logging.getLogger(__name__)

DEFAULT_PAGE = 1000
MAX_PARAM_SETS = 64
"""Most parameter sets a job lists (a job may have more)."""
_CANCELLED = (JobStatus.CANCELLING, JobStatus.CANCELLED)

# Built once, on the table's columns rather than the entity's (which take the ORM's slower
# path): clients poll jobs, and building the statement cost as much as running it.
_JOB_COLUMNS = Job.__table__.c
_JOB_BY_ID = select(*(_JOB_COLUMNS[f.name] for f in fields(JobInfo))).where(
    _JOB_COLUMNS.id == bindparam("job_id"), _JOB_COLUMNS.tenant == bindparam("tenant")
)


INSERT_ROWS = 10_000
"""Request ids made at once, and how often a stream's model is asked again."""


def create_job(
    session: Session,
    *,
    tenant: str,
    model: str | Callable[[], str],
    params: GenerationParams,
    requests: Iterable[NewRequest],
    metadata: dict[str, Any] | None = None,
    priority: int = 0,
    announced_at: datetime | None = None,
    webhook_url: str | None = None,
    now: datetime | None = None,
) -> str:
    """Write a job and all its requests (queued; those refused at intake failed) in the
    caller's transaction; return the job id. ``requests`` are read as they come and written
    as they are read (see :func:`bulk_insert`), so a million-request job from a stream is
    never held whole in memory. ``model`` may be a function, asked at each
    chunk and at the end, for a model that the stream itself settles (a file's first line
    that names one): rows written before it changed are moved to the final one. Queued
    requests carry ``announced_at`` (a producer about to announce them passes now)."""
    now = now or utcnow()
    model_of = model if callable(model) else lambda: model
    job_id = new_id("job")
    # Most requests use the job's parameters: hash those once, store them once (on the job).
    job_key = params.group_key()
    # Requests resolved against one set of parameters share one object: look each object up
    # once (by identity; the requests hold them alive) for its key and stored form.
    seen: dict[int, tuple[str, dict[str, Any] | None, GenerationParams]] = {}
    sets: dict[str, ParamSet] = {}
    refused = 0
    work = 0
    total = 0
    written: set[str] = set()
    # The job's row first (the requests refer to it); its counts once they are all in.
    session.execute(
        insert(Job),
        [
            {
                "id": job_id,
                "tenant": tenant,
                "model": model_of(),
                "params": params.model_dump(mode="json"),
                "param_sets": None,
                "metadata_": metadata,
                "priority": priority,
                "webhook_url": webhook_url,
                "work": 0,
                "status": JobStatus.QUEUED,
                **dict.fromkeys(("total", "succeeded", "failed", "cancelled", "refused"), 0),
                **dict.fromkeys(("prompt_tokens", "completion_tokens"), 0),
                "created_at": now,
                "started_at": None,
                "finished_at": None,
            }
        ],
    )

    def rows() -> Iterator[dict[str, Any]]:
        nonlocal refused, work, total
        row_model = model_of()
        ids: list[str] = []
        for idx, new in enumerate(requests):
            if not ids:  # ids a chunk at a time; the model as the stream has settled it
                ids = new_ids("req", INSERT_ROWS)
                row_model = model_of()
                written.add(row_model)
            found = seen.get(id(new.params))
            if found is None:
                own = new.params if new.params is not None and new.params != params else None
                if own is None:
                    found = (job_key, None, params)
                else:
                    found = (own.group_key(), own.model_dump(mode="json"), own)
                seen[id(new.params)] = found
            key, stored, resolved = found
            if new.error is None:
                sets.setdefault(key, ParamSet(resolved)).requests += 1
                work += request_work(
                    estimated_tokens(new.prompt, new.messages),
                    max_new_tokens=resolved.max_new_tokens,
                    rows=resolved.num_return_sequences,
                )
            else:
                refused += 1
            total = idx + 1
            # Columns left out (the lease) start NULL.
            yield {
                "id": ids.pop(),
                "job_id": job_id,
                "idx": idx,
                "custom_id": new.custom_id,
                "model": row_model,
                "group_key": key,
                "prompt": REFUSED_PROMPT if new.error is not None else new.prompt,
                "messages": None if new.messages is None else list(new.messages),
                "params": stored,
                "status": RequestStatus.QUEUED if new.error is None else RequestStatus.FAILED,
                "error": new.error,
                "attempts": 0,
                "fence": 0,
                "announced_at": announced_at if new.error is None else None,
                "created_at": now,
                "updated_at": now,
            }

    bulk_insert(session, Request, rows())
    if not total:
        raise InvalidRequest("requests", "a job needs at least one request")
    final = model_of()
    if written != {final}:
        session.execute(update(Request).where(Request.job_id == job_id).values(model=final))
    session.execute(
        update(Job)
        .where(Job.id == job_id)
        .values(
            model=final,
            param_sets=[s.public(k) for k, s in sorted(sets.items())[:MAX_PARAM_SETS]],
            work=work,
            total=total,
            failed=refused,
            refused=refused,
            # A job of refused lines only has nothing to run: it ends as it is made.
            status=JobStatus.QUEUED if sets else JobStatus.COMPLETED,
            finished_at=None if sets else now,
        ),
        execution_options=PLAIN,
    )
    if not sets:
        job_ended(session, job_id=job_id, now=now)
    return job_id


@dataclass
class ParamSet:
    """Requests of one job that share a parameter set (they may differ in seed and stop)."""

    params: GenerationParams
    requests: int = 0

    def public(self, key: str) -> dict[str, Any]:
        shared = self.params.model_dump(mode="json", exclude=set(PER_ROW_FIELDS))
        return {"key": key, "params": shared, "requests": self.requests}


def get_job(session: Reader, *, tenant: str, job_id: str) -> JobInfo:
    """The job, if it belongs to ``tenant``; :class:`JobNotFound` otherwise."""
    if not looks_like_id(job_id):
        raise JobNotFound(f"no job {job_id!r}")
    row = session.execute(_JOB_BY_ID, {"job_id": job_id, "tenant": tenant}).one_or_none()
    if row is None:
        raise JobNotFound(f"no job {job_id}")
    return JobInfo(**row._asdict())


def find_job(session: Session, *, tenant: str, key: str, value: str) -> JobInfo | None:
    """The newest job of ``tenant`` whose metadata holds ``key: value`` (a string), if any: how
    a client that tags its jobs (``genq run`` with its output path) finds one again."""
    job_id = session.scalar(
        select(Job.id)
        .where(Job.tenant == tenant, Job.metadata_[key].as_string() == value)
        .order_by(Job.created_at.desc())
        .limit(1)
    )
    return None if job_id is None else get_job(session, tenant=tenant, job_id=job_id)


def cancel_job(
    session: Session, *, tenant: str, job_id: str, now: datetime | None = None
) -> JobInfo:
    """Cancel the job's queued requests now; running ones may finish, and the job stays
    ``cancelling`` until they have. Cancelling a cancelling or cancelled job changes nothing;
    a completed one raises :class:`IllegalTransition`."""
    now = now or utcnow()
    job = get_job(session, tenant=tenant, job_id=job_id)
    if job.status in _CANCELLED:
        return job
    check_transition(job.status, JobStatus.CANCELLING)
    # Requests before the job row, the order claims and completions lock in, so a cancel
    # racing the job's first claim cannot deadlock with it. The counts wait until the job is
    # cancelling: that is what makes it settle as cancelled rather than completed.
    _, tallies = cancel_requests(session, where=Request.job_id == job_id, now=now)
    moved = session.execute(
        update(Job)
        .where(
            Job.id == job_id,
            Job.status.in_(sources(JobStatus.QUEUED, JobStatus.RUNNING, to=JobStatus.CANCELLING)),
        )
        .values(status=JobStatus.CANCELLING)
        .returning(Job.id),
        execution_options=PLAIN,
    ).one_or_none()
    apply_tallies(session, {job_id: tallies.get(job_id, Tally())}, now=now)
    job = get_job(session, tenant=tenant, job_id=job_id)
    if moved is None and job.status not in _CANCELLED:
        check_transition(job.status, JobStatus.CANCELLING)  # it completed since we read it
    log.info(
        "job %s cancelled: %d queued requests dropped, %d running may finish",
        job_id,
        tallies.get(job_id, Tally()).cancelled,
        job.total - job.succeeded - job.failed - job.cancelled,
        extra={"job_id": job_id, "tenant": tenant},
    )
    return job


def list_results(
    session: Reader,
    *,
    job_id: str,
    after_idx: int = -1,
    limit: int = DEFAULT_PAGE,
    upto_idx: int | None = None,
) -> list[ResultRow]:
    """Finished requests of a job (succeeded, failed or cancelled) in input order, from
    position ``after_idx + 1`` on, and up to ``upto_idx`` when given. Callers check the tenant
    with :func:`get_job` first. Plain columns, no ORM entities: it runs on a bare connection
    as well as in a session.

    Positions are dense (0 to total - 1), so a page bounded by ``upto_idx`` reads at most that
    many index entries whatever plan the database picks: without statistics (a table just
    filled) PostgreSQL would otherwise read every finished row past ``after_idx`` and sort them,
    for every page."""
    after_idx = min(after_idx, MAX_IDX)
    bounds = [Request.idx > after_idx]
    if upto_idx is not None:
        bounds.append(Request.idx <= min(upto_idx, MAX_IDX))
    terminal = [s for s in RequestStatus if s.is_terminal]
    rows = session.execute(
        select(
            Request.id,
            Request.idx,
            Request.custom_id,
            Request.status,
            Request.error,
            Request.params,
            (Request.prompt == REFUSED_PROMPT).label("refused"),
            Result.choices,
            Result.prompt_tokens,
            Result.completion_tokens,
        )
        .outerjoin(Result, Result.request_id == Request.id)
        .where(Request.job_id == job_id, *bounds, Request.status.in_(terminal))
        .order_by(Request.idx)
        .limit(limit)
    ).all()
    return [
        ResultRow(
            request_id=row.id,
            idx=row.idx,
            custom_id=row.custom_id,
            status=row.status,
            choices=tuple(Choice(**c) for c in row.choices) if row.choices else (),
            error=row.error,
            prompt_tokens=row.prompt_tokens or 0,
            completion_tokens=row.completion_tokens or 0,
            params=row.params,
            refused=bool(row.refused),
        )
        for row in rows
    ]
