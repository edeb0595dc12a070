"""Claims, leases and fences: how workers take requests, hand back results, or let go.

A claim is a conditional UPDATE (queued, or running with an expired lease -> running) that
bumps the request's fence; every later write names that fence and is refused once another
claim has taken the request over. Functions run in the caller's transaction; commit promptly,
since on PostgreSQL the claimed rows stay locked until then."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import ColumnElement, and_, insert, or_, select, text, update
from sqlalchemy.orm import Session

from genq.fairshare import pick
from genq.settings import DEFAULT_MAX_ATTEMPTS
from genq.store.fenced import among, chunks
from genq.store.records import Claim, Outcome
from genq.store.shares import backlogs, tenant_weights
from genq.store.status import JobStatus, RequestStatus, sources
from genq.store.tables import Job, Request, Result, utcnow
from genq.store.tally import PLAIN, Tally, apply_tallies, cancel_requests

DEFAULT_CLAIM_LIMIT = 256

_R = RequestStatus


def claimable_kinds(*, now: datetime, max_attempts: int) -> tuple[ColumnElement[bool], ...]:
    """Requests a worker may take, with attempts left (the reconciler fails the others):
    queued ones, and running ones whose lease has run out. Kept apart so that each is one
    range of the (status, model, created_at, idx) index; an OR of the two scans the table."""
    queued, running = sources(_R.QUEUED, _R.RUNNING, to=_R.RUNNING)
    fresh = Request.attempts < max_attempts
    return (
        and_(Request.status == running, Request.lease_expires_at < now, fresh),
        and_(Request.status == queued, fresh),
    )


def claim(
    session: Session,
    *,
    worker_id: str,
    model: str,
    lease_seconds: float,
    request_ids: Sequence[str] | None = None,
    group_key: str | None = None,
    job_id: str | None = None,
    limit: int = DEFAULT_CLAIM_LIMIT,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    order: Literal["fair", "oldest"] = "fair",
    default_weight: float = 1.0,
    now: datetime | None = None,
) -> list[Claim]:
    """Take up to ``limit`` requests of ``model``: those named in ``request_ids``, or with
    ``None`` any claimable ones: expired leases first, then as the fair rule shares the window
    between tenants (by their weights, ``default_weight`` where a tenant has none of its own)
    and their jobs (see genq.fairshare), or with ``order``
    "oldest" oldest first. ``group_key`` and ``job_id`` narrow either to one parameter set
    (oldest first within it) or one job. Requests another worker holds or that have finished
    are left out, so a duplicate message claims nothing. A job's first claim also moves it to
    running; two first claims of one job wait for each other there (not on the requests)."""
    now = now or utcnow()
    kinds = claimable_kinds(now=now, max_attempts=max_attempts)
    scope = [Request.model == model]
    if group_key is not None:
        scope.append(Request.group_key == group_key)
    if job_id is not None:
        scope.append(Request.job_id == job_id)
    if request_ids is not None:
        named = Request.id.in_(list(request_ids))
        ids = _pick(session, and_(named, *scope, or_(*kinds)), limit=limit)
    else:
        expired, queued = kinds
        ids = _pick(session, and_(*scope, expired), limit=limit)
        if order == "fair" and group_key is None:
            ids += _pick_fair(
                session,
                model=model,
                job_id=job_id,
                queued=queued,
                limit=limit - len(ids),
                default_weight=default_weight,
                max_attempts=max_attempts,
            )
        else:
            ids += _pick(session, and_(*scope, queued), limit=limit - len(ids))
    if not ids:
        return []
    # Checked again on SQLite: the pick ran before the write lock, so another writer may have
    # taken a row since. On PostgreSQL the pick locked the rows, so the check would change
    # nothing, and without statistics (a table just filled) its OR of states made the planner
    # read every queued request for each window: a second per claim at 1,000,000 queued.
    again = () if session.get_bind().dialect.name == "postgresql" else (or_(*kinds),)
    rows = session.execute(
        update(Request)
        .where(Request.id.in_(ids), Request.model == model, *again)
        .values(
            status=_R.RUNNING,
            lease_owner=worker_id,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            attempts=Request.attempts + 1,
            fence=Request.fence + 1,
            announced_at=None,  # the message that named it is spent
            updated_at=now,
        )
        .returning(
            Request.id,
            Request.job_id,
            Request.idx,
            Request.custom_id,
            Request.prompt,
            Request.messages,
            Request.params,
            Request.group_key,
            Request.fence,
            Request.attempts,
        ),
        execution_options=PLAIN,
    ).all()
    job_ids = sorted({row.job_id for row in rows})
    job_params: dict[str, dict[str, Any]] = {}
    if job_ids:
        found = session.execute(select(Job.id, Job.params).where(Job.id.in_(job_ids)))
        job_params = {job_id: params for job_id, params in found}
        session.execute(
            update(Job)
            .where(
                Job.id.in_(job_ids),
                Job.status.in_(sources(JobStatus.QUEUED, to=JobStatus.RUNNING)),
            )
            .values(status=JobStatus.RUNNING, started_at=now),
            execution_options=PLAIN,
        )
    return [
        Claim(
            request_id=row.id,
            job_id=row.job_id,
            idx=row.idx,
            custom_id=row.custom_id,
            prompt=row.prompt,
            messages=row.messages,
            params=row.params if row.params is not None else job_params[row.job_id],
            group_key=row.group_key,
            fence=row.fence,
            attempts=row.attempts,
        )
        for row in rows
    ]


def any_claimable(
    session: Session,
    *,
    request_ids: Sequence[str],
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    now: datetime | None = None,
) -> bool:
    """Whether any of ``request_ids`` could be claimed now: what keeps a worker on a queue
    message, which names its requests only as a hint."""
    if not request_ids:
        return False
    kinds = claimable_kinds(now=now or utcnow(), max_attempts=max_attempts)
    found = session.scalar(
        select(Request.id).where(Request.id.in_(list(request_ids)), or_(*kinds)).limit(1)
    )
    return found is not None


def complete(
    session: Session,
    *,
    request_id: str,
    fence: int,
    outcome: Outcome,
    now: datetime | None = None,
) -> bool:
    """Store one request's outcome; False (and nothing written) for a stale claim."""
    return complete_many(session, items=[(request_id, fence, outcome)], now=now)[0]


def complete_many(
    session: Session,
    *,
    items: Sequence[tuple[str, int, Outcome]],
    now: datetime | None = None,
) -> list[bool]:
    """Store a batch of ``(request_id, fence, outcome)``: a success as a result row, an error
    as the request's failure. An item whose request is no longer running under that fence is
    refused (False at its position) and writes nothing. Job counters and status move here too.

    A constant number of statements per batch (per 5,000 requests of it, see
    genq.store.fenced): one UPDATE for the successes and one per distinct error for the
    failures (each fenced, returning what it moved), one INSERT of the result rows, then the
    jobs' counters (genq.store.tally). Write a batch through this, not a loop of
    :func:`complete` in one transaction: requests are locked before jobs, and jobs in id order,
    so two workers finishing requests of the same jobs cannot deadlock."""
    now = now or utcnow()
    done = [False] * len(items)
    first: dict[tuple[str, int], int] = {}
    for pos, (request_id, fence, _) in enumerate(items):
        first.setdefault((request_id, fence), pos)  # a repeat of an item is refused
    moved: dict[tuple[str, int], Any] = {}
    for ok in (True, False):
        chosen = [k for k, pos in first.items() if (items[pos][2].error is None) == ok]
        moved |= _end_requests(session, chosen, items=items, first=first, ok=ok, now=now)
    results: list[dict[str, Any]] = []
    tallies: dict[str, Tally] = {}
    for (request_id, fence), pos in sorted(first.items()):
        row = moved.get((request_id, fence))
        if row is None:
            continue
        outcome = items[pos][2]
        done[pos] = True
        tally = tallies.setdefault(row.job_id, Tally())
        tally.prompt_tokens += outcome.prompt_tokens
        if outcome.error is not None:
            tally.failed += 1
            continue
        tally.succeeded += 1
        tally.completion_tokens += outcome.completion_tokens
        results.append(
            {
                "request_id": request_id,
                "choices": [asdict(c) for c in outcome.choices],
                "prompt_tokens": outcome.prompt_tokens,
                "completion_tokens": outcome.completion_tokens,
                "worker_id": row.lease_owner,
                "fence": fence,
                "started_at": outcome.started_at,
                "finished_at": outcome.finished_at or now,
            }
        )
    if results:
        session.execute(insert(Result), results)
    apply_tallies(session, tallies, now=now)
    return done


def _end_requests(
    session: Session,
    keys: Sequence[tuple[str, int]],
    *,
    items: Sequence[tuple[str, int, Outcome]],
    first: dict[tuple[str, int], int],
    ok: bool,
    now: datetime,
) -> dict[tuple[str, int], Any]:
    """Move the running requests of ``keys`` ``(request_id, fence)`` to succeeded (``ok``) or
    failed with each one's error: a statement per distinct error (a batch that fails usually
    fails with one) and per :data:`genq.store.fenced.KEYS_PER_STATEMENT` keys; returns the
    moved rows by key."""
    status = _R.SUCCEEDED if ok else _R.FAILED
    by_error: dict[str | None, list[tuple[str, int]]] = {}
    for key in keys:
        by_error.setdefault(None if ok else items[first[key]][2].error, []).append(key)
    moved: dict[tuple[str, int], Any] = {}
    for error, same in by_error.items():
        for part in chunks(same):
            found = session.execute(
                update(Request)
                .where(among(part), Request.status.in_(sources(_R.RUNNING, to=status)))
                .values(status=status, error=error, lease_expires_at=None, updated_at=now)
                .returning(Request.id, Request.fence, Request.job_id, Request.lease_owner),
                execution_options=PLAIN,
            ).all()
            moved |= {(row.id, row.fence): row for row in found}
    return moved


def release(
    session: Session,
    *,
    request_id: str,
    fence: int,
    error: str | None = None,
    now: datetime | None = None,
) -> bool:
    """Put a claimed request back in the queue. Without ``error`` (a warm shutdown) the claim
    gives its attempt back; with one (a retryable failure) the attempt counts and the error is
    kept as the request's last, which the reconciler reports if it gives up. In a cancelling
    job the request is cancelled instead. False for a stale claim."""
    return bool(release_many(session, items=[(request_id, fence)], error=error, now=now))


def release_many(
    session: Session,
    *,
    items: Sequence[tuple[str, int]],
    error: str | None = None,
    now: datetime | None = None,
) -> set[str]:
    """:func:`release` for many ``(request_id, fence)`` claims at once, in a constant number
    of statements per :data:`genq.store.fenced.KEYS_PER_STATEMENT` claims; returns the ids put
    back or cancelled."""
    now = now or utcnow()
    released: set[str] = set()
    for part in chunks(items):
        rows = session.execute(
            update(Request)
            .where(among(part), Request.status.in_(sources(_R.RUNNING, to=_R.QUEUED)))
            .values(
                status=_R.QUEUED,
                attempts=Request.attempts - (1 if error is None else 0),
                error=error if error is not None else Request.error,
                lease_owner=None,
                lease_expires_at=None,
                announced_at=None,  # so the reconciler announces it again at its next pass
                updated_at=now,
            )
            .returning(Request.id),
            execution_options=PLAIN,
        ).all()
        released |= {row.id for row in rows}
    if not released:
        return released
    cancelling = select(Job.id).where(Job.status == JobStatus.CANCELLING)
    _, tallies = cancel_requests(
        session,
        where=and_(Request.id.in_(sorted(released)), Request.job_id.in_(cancelling)),
        now=now,
    )
    apply_tallies(session, tallies, now=now)
    return released


QUEUED_INDEXED = text("requests.status = 'queued'")
"""The predicate of the partial index of queued requests, written as it is there: a bound
value would not let a generic plan use that index."""

FAIR_ROUNDS = 3
"""Passes of the fair pick: a job that gave fewer requests than its counters promised (another
worker took some meanwhile) leaves its part of the window to the others in the next pass."""


def _pick_fair(
    session: Session,
    *,
    model: str,
    job_id: str | None,
    queued: ColumnElement[bool],
    limit: int,
    default_weight: float,
    max_attempts: int,
) -> list[str]:
    """Queued requests for a window as genq.fairshare shares it: per job, its first queued
    requests in input order, read through the partial index of queued requests."""
    ids: list[str] = []
    found = backlogs(session, model=model, job_id=job_id)
    weights = tenant_weights(session, {b.tenant for b in found})
    for _ in range(FAIR_ROUNDS):
        if len(ids) >= limit or not found:
            break
        shares = pick(found, limit=limit - len(ids), weights=weights, default_weight=default_weight)
        if not shares:
            break
        short = set()
        taken = _take_shares(session, shares, queued=queued, max_attempts=max_attempts)
        for job, count in sorted(shares.items()):
            got = taken.get(job, [])
            ids += got
            if len(got) < count:
                short.add(job)
        found = [
            replace(
                b,
                queued=0 if b.job_id in short else b.queued - shares.get(b.job_id, 0),
                running=b.running + shares.get(b.job_id, 0),
            )
            for b in found
        ]
    return ids


_SHARES_PG = """
SELECT r.job_id, r.id FROM (VALUES {rows}) AS v(job_id, n)
CROSS JOIN LATERAL (
    SELECT requests.id, requests.job_id, requests.idx FROM requests
    WHERE requests.job_id = v.job_id AND requests.status = 'queued'
        AND requests.attempts < :max_attempts
    ORDER BY requests.idx LIMIT v.n
    FOR UPDATE SKIP LOCKED
) AS r
ORDER BY r.job_id, r.idx
"""


def _take_shares(
    session: Session,
    shares: dict[str, int],
    *,
    queued: ColumnElement[bool],
    max_attempts: int,
) -> dict[str, list[str]]:
    """Each job's first ``shares[job]`` queued requests, in input order, locked (skipping
    those another claim holds). On PostgreSQL one statement for every job (a LATERAL join of
    the shares to the partial index); elsewhere one per job."""
    taken: dict[str, list[str]] = {}
    if session.get_bind().dialect.name == "postgresql":
        jobs = sorted(shares)
        rows = ", ".join(f"(:j{i}, CAST(:n{i} AS integer))" for i in range(len(jobs)))
        params: dict[str, Any] = {"max_attempts": max_attempts}
        for i, job in enumerate(jobs):
            params[f"j{i}"], params[f"n{i}"] = job, shares[job]
        for job, request_id in session.execute(text(_SHARES_PG.format(rows=rows)), params):
            taken.setdefault(job, []).append(request_id)
        return taken
    for job, count in sorted(shares.items()):
        where = and_(Request.job_id == job, QUEUED_INDEXED, queued)
        taken[job] = _pick(session, where, limit=count, by_idx=True)
    return taken


def _pick(
    session: Session, where: ColumnElement[bool], *, limit: int, by_idx: bool = False
) -> list[str]:
    # SKIP LOCKED: rows another transaction is claiming right now are passed over, not waited
    # for, so concurrent workers take disjoint sets; the lock holds until commit. SQLite has
    # one writer and no row locks, and drops the clause. A separate SELECT rather than an
    # UPDATE ... WHERE id IN (SELECT ... LIMIT ... FOR UPDATE SKIP LOCKED): PostgreSQL may
    # re-run such a subquery per row and so take more than the limit.
    if limit <= 0:
        return []
    query = (
        select(Request.id)
        .where(where)
        .order_by(*((Request.idx,) if by_idx else (Request.created_at, Request.idx)))
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(session.scalars(query))
