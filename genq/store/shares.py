"""What the fair rule (genq.fairshare) reads from the store, and the per-tenant settings and
limits it is given: backlogs of open jobs, tenants' weights, quotas and usage.

Everything here reads the jobs table (one row per job, its counters kept as requests end) and
the running requests (bounded by the workers' windows), never a scan of all queued requests,
so its cost does not grow with the size of the backlog. Like every store function these run in
the caller's transaction and never commit."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from genq.errors import QuotaExceeded
from genq.fairshare import Backlog, pick
from genq.settings import Settings
from genq.store.db import Reader
from genq.store.status import JobStatus, RequestStatus
from genq.store.tables import Job, Request, Tenant, utcnow

OPEN_JOBS = (JobStatus.QUEUED, JobStatus.RUNNING)
"""Jobs whose queued requests may be claimed (a cancelling job's are being cancelled)."""
UNFINISHED_JOBS = (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.CANCELLING)

RETRY_AFTER_SECONDS = 30
"""The ``Retry-After`` of a submit refused by a quota: about how long a worker takes to move
a tenant's backlog noticeably; a client retrying sooner is only refused again."""


@dataclass(frozen=True)
class TenantLimits:
    name: str
    weight: float
    max_queued_requests: int | None
    max_queued_tokens: int | None


@dataclass(frozen=True)
class TenantUsage:
    """A tenant's accepted and unfinished work: requests (and estimated tokens) queued and
    running."""

    queued: int = 0
    running: int = 0
    queued_tokens: int = 0
    running_tokens: int = 0


def default_limits(settings: Settings) -> TenantLimits:
    """What a tenant without a row of its own has: the ``GENQ_*`` defaults."""
    return TenantLimits(
        name="",
        weight=settings.tenant_weight,
        max_queued_requests=settings.max_queued_requests,
        max_queued_tokens=settings.max_queued_tokens,
    )


def backlogs(session: Reader, *, model: str, job_id: str | None = None) -> list[Backlog]:
    """The open jobs of ``model`` (or ``job_id`` only), each with its queued and running
    requests and work per request, for :func:`genq.fairshare.pick`. Jobs come through the
    (status, model) index of jobs; running requests through the (status, model, ...) index of
    requests, whose running range is bounded by what the workers hold."""
    jobs = select(*_COUNTED, Job.priority, Job.created_at).where(
        Job.status.in_(OPEN_JOBS), Job.model == model
    )
    if job_id is not None:
        jobs = jobs.where(Job.id == job_id)
    rows = session.execute(jobs).all()
    if not rows:
        return []
    held = running_by_job(session, model=model)
    found = []
    for row in rows:
        running = held.get(row.id, 0)
        open_ = _open(row)
        found.append(
            Backlog(
                job_id=row.id,
                tenant=row.tenant,
                queued=max(0, open_ - running),
                cost=_cost(row),
                priority=row.priority,
                running=running,
                age=(row.created_at, row.id),
            )
        )
    return found


def running_by_job(session: Reader, *, model: str | None = None) -> dict[str, int]:
    """Requests running now, per job (of ``model``, if given)."""
    query = select(Request.job_id, func.count()).where(Request.status == RequestStatus.RUNNING)
    if model is not None:
        query = query.where(Request.model == model)
    return {job: n for job, n in session.execute(query.group_by(Request.job_id))}


def tenant_limits(
    session: Reader, names: Iterable[str], *, defaults: TenantLimits
) -> dict[str, TenantLimits]:
    """Each tenant's weight and limits: its own row's values over ``defaults``."""
    names = sorted(set(names))
    rows = {}
    if names:
        rows = {
            t.name: t
            for t in session.execute(
                select(
                    Tenant.name, Tenant.weight, Tenant.max_queued_requests, Tenant.max_queued_tokens
                ).where(Tenant.name.in_(names))
            ).all()
        }
    out = {}
    for name in names:
        own = rows.get(name)
        out[name] = TenantLimits(
            name=name,
            weight=own.weight if own and own.weight is not None else defaults.weight,
            max_queued_requests=(
                own.max_queued_requests
                if own and own.max_queued_requests is not None
                else defaults.max_queued_requests
            ),
            max_queued_tokens=(
                own.max_queued_tokens
                if own and own.max_queued_tokens is not None
                else defaults.max_queued_tokens
            ),
        )
    return out


def tenant_weights(session: Reader, names: Iterable[str]) -> dict[str, float]:
    """The weights of those of ``names`` that have one of their own."""
    names = sorted(set(names))
    if not names:
        return {}
    rows = session.execute(
        select(Tenant.name, Tenant.weight).where(Tenant.name.in_(names), Tenant.weight.is_not(None))
    )
    return {name: weight for name, weight in rows if weight is not None}


def list_tenants(session: Reader) -> list[Tenant]:
    return list(session.scalars(select(Tenant).order_by(Tenant.name)))


def set_tenant(
    session: Session,
    *,
    name: str,
    weight: float | None,
    max_queued_requests: int | None,
    max_queued_tokens: int | None,
    clear: Iterable[str] = (),
    now: datetime | None = None,
) -> None:
    """Set the given values of a tenant (the others keep theirs); names in ``clear`` go back
    to the default."""
    now = now or utcnow()
    given: dict[str, float | int | None] = {
        "weight": weight,
        "max_queued_requests": max_queued_requests,
        "max_queued_tokens": max_queued_tokens,
    }
    values: dict[str, float | int | None] = {k: v for k, v in given.items() if v is not None}
    values |= dict.fromkeys(clear)
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = insert(Tenant).values(name=name, updated_at=now, **values)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=[Tenant.name], set_={**values, "updated_at": now}
        )
    )


def usage(session: Reader, *, tenant: str | None = None) -> dict[str, TenantUsage]:
    """Accepted, unfinished work per tenant (or of ``tenant`` only), from its unfinished jobs'
    counters and the running requests. Tokens are the estimate work is measured in."""
    jobs = select(*_COUNTED).where(Job.status.in_(UNFINISHED_JOBS))
    if tenant is not None:
        jobs = jobs.where(Job.tenant == tenant)
    rows = session.execute(jobs).all()
    held = running_by_job(session) if rows else {}
    totals: dict[str, list[float]] = {}
    for row in rows:
        open_ = _open(row)
        running = min(held.get(row.id, 0), open_)
        cost = _cost(row)
        t = totals.setdefault(row.tenant, [0, 0, 0.0, 0.0])
        t[0] += open_ - running
        t[1] += running
        t[2] += (open_ - running) * cost
        t[3] += running * cost
    return {
        name: TenantUsage(int(q), int(r), round(qt), round(rt))
        for name, (q, r, qt, rt) in totals.items()
    }


@dataclass(frozen=True)
class Standing:
    """Where an open job stands: its queued and running requests, and its part of the next
    window the fair rule would claim now (as a share of the window, and in requests)."""

    queued: int
    running: int
    next_window: int
    share: float
    jobs_waiting: int  # open jobs of its model with queued work, itself included

    def public(self) -> dict[str, float | int]:
        return {
            "queued": self.queued,
            "running": self.running,
            "next_window": self.next_window,
            "share": round(self.share, 4),
            "jobs_waiting": self.jobs_waiting,
        }


def standings(
    session: Reader, *, model: str, window: int, default_weight: float = 1.0
) -> dict[str, Standing]:
    """Every open job of ``model`` as it stands now (see :class:`Standing`)."""
    found = backlogs(session, model=model)
    weights = tenant_weights(session, {b.tenant for b in found})
    shares = pick(found, limit=window, weights=weights, default_weight=default_weight)
    taken = sum(shares.values()) or 1
    waiting = sum(1 for b in found if b.queued)
    return {
        b.job_id: Standing(
            queued=b.queued,
            running=b.running,
            next_window=shares.get(b.job_id, 0),
            share=shares.get(b.job_id, 0) / taken,
            jobs_waiting=waiting,
        )
        for b in found
    }


def check_quota(session: Session, *, tenant: str, defaults: TenantLimits) -> None:
    """Refuse (:class:`QuotaExceeded`) when the tenant's unfinished work, the job being
    submitted in this transaction included, is over one of its limits; the caller's rollback
    then stores nothing. On PostgreSQL a lock per tenant, held to commit, makes concurrent
    submits of one tenant check one after the other."""
    limits = tenant_limits(session, [tenant], defaults=defaults)[tenant]
    if limits.max_queued_requests is None and limits.max_queued_tokens is None:
        return
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": f"genq-quota:{tenant}"}
        )
    mine = usage(session, tenant=tenant).get(tenant, TenantUsage())
    requests = mine.queued + mine.running
    tokens = mine.queued_tokens + mine.running_tokens
    if limits.max_queued_requests is not None and requests > limits.max_queued_requests:
        raise QuotaExceeded(
            f"tenant {tenant!r} would have {requests} requests queued or running, over its "
            f"limit of {limits.max_queued_requests}; nothing was stored. Retry when some "
            f"have finished, or submit fewer",
            retry_after=RETRY_AFTER_SECONDS,
        )
    if limits.max_queued_tokens is not None and tokens > limits.max_queued_tokens:
        raise QuotaExceeded(
            f"tenant {tenant!r} would have about {tokens} tokens (prompt + max_new_tokens) "
            f"queued or running, over its limit of {limits.max_queued_tokens}; nothing was "
            f"stored. Retry when some have finished, or submit less",
            retry_after=RETRY_AFTER_SECONDS,
        )


_COUNTED = (
    Job.id,
    Job.tenant,
    Job.total,
    Job.succeeded,
    Job.failed,
    Job.cancelled,
    Job.refused,
    Job.work,
)
"""A job's columns that tell its open requests and their work."""


def _open(row: Any) -> int:
    """Requests of the job not ended yet (queued or running)."""
    return int(row.total - row.succeeded - row.failed - row.cancelled)


def _cost(row: Any) -> float:
    """Work per request of the job: its estimated work over the requests that can run."""
    runnable = row.total - row.refused
    return float(row.work / runnable) if runnable > 0 and row.work > 0 else 1.0
