"""Webhook deliveries in the store: an event written in the transaction that ends its job,
taken by a sender under a lease, and its outcome recorded. The database is the authority: a
sender that dies mid-send leaves a lease that runs out, and the event is sent again (at least
once; the ``webhook-id`` lets a receiver drop a repeat)."""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from genq.store.status import JobStatus
from genq.store.tables import Job, Tenant, WebhookDelivery, new_ids, utcnow

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"


@dataclass(frozen=True)
class Delivery:
    """A delivery a sender holds for one attempt (``attempt``: its number, from 1)."""

    id: str
    url: str
    payload: dict[str, Any]
    secret: str
    attempt: int


def new_secret() -> str:
    """A Standard Webhooks signing secret: ``whsec_`` and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def tenant_secret(session: Session, *, tenant: str, rotate: bool = False) -> str:
    """The tenant's signing secret, made (or with ``rotate``, replaced) here if it has none."""
    held = session.scalar(select(Tenant.webhook_secret).where(Tenant.name == tenant))
    if held is not None and not rotate:
        return held
    secret, now = new_secret(), utcnow()
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = insert(Tenant).values(name=tenant, webhook_secret=secret, updated_at=now)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=[Tenant.name], set_={"webhook_secret": secret, "updated_at": now}
        )
    )
    return secret


def _event(job: Job) -> str:
    if job.status is JobStatus.CANCELLED:
        return "job.cancelled"
    return "job.failed" if job.succeeded == 0 and job.failed > 0 else "job.completed"


def _data(job: Job) -> dict[str, Any]:
    def when(value: datetime | None) -> str | None:
        return value.isoformat() if value is not None else None

    return {
        "id": job.id,
        "object": "job",
        "status": str(job.status),
        "model": job.model,
        "metadata": job.metadata_,
        "counts": {
            "total": job.total,
            "succeeded": job.succeeded,
            "failed": job.failed,
            "cancelled": job.cancelled,
            "refused": job.refused,
        },
        "usage": {"prompt_tokens": job.prompt_tokens, "completion_tokens": job.completion_tokens},
        "created_at": when(job.created_at),
        "started_at": when(job.started_at),
        "finished_at": when(job.finished_at),
    }


def job_ended(session: Session, *, job_id: str, now: datetime) -> str | None:
    """Write the event of a job that has just ended (in the transaction that ended it), when
    the job or its tenant names a webhook; returns the delivery id."""
    job = session.get(Job, job_id, populate_existing=True)
    if job is None:
        return None
    url = job.webhook_url or session.scalar(
        select(Tenant.webhook_url).where(Tenant.name == job.tenant)
    )
    if url is None:
        return None
    tenant_secret(session, tenant=job.tenant)  # the receiver checks with it; made once
    (delivery_id,) = new_ids("msg", 1)
    event = _event(job)
    session.add(
        WebhookDelivery(
            id=delivery_id,
            tenant=job.tenant,
            job_id=job.id,
            event=event,
            url=url,
            payload={"type": event, "timestamp": now.isoformat(), "data": _data(job)},
            status=PENDING,
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
    )
    session.flush()
    return delivery_id


def take_due(
    session: Session, *, lease_seconds: float, limit: int = 20, now: datetime | None = None
) -> list[Delivery]:
    """Take up to ``limit`` pending deliveries that are due, oldest first, for one attempt
    each: their next attempt moves past the lease, so no other sender takes them meanwhile."""
    now = now or utcnow()
    query = (
        select(WebhookDelivery.id)
        .where(WebhookDelivery.status == PENDING, WebhookDelivery.next_attempt_at <= now)
        .order_by(WebhookDelivery.next_attempt_at)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    ids = list(session.scalars(query))
    if not ids:
        return []
    rows = session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id.in_(ids), WebhookDelivery.status == PENDING)
        .values(
            attempts=WebhookDelivery.attempts + 1,
            next_attempt_at=now + timedelta(seconds=lease_seconds),
        )
        .returning(
            WebhookDelivery.id,
            WebhookDelivery.tenant,
            WebhookDelivery.url,
            WebhookDelivery.payload,
            WebhookDelivery.attempts,
        ),
        execution_options={"synchronize_session": False},
    ).all()
    tenants = {r.tenant for r in rows}
    keys = dict(
        session.execute(
            select(Tenant.name, Tenant.webhook_secret).where(Tenant.name.in_(tenants))
        ).all()
    )
    out = []
    for r in sorted(rows, key=lambda r: r.id):
        secret = keys.get(r.tenant) or tenant_secret(session, tenant=r.tenant)
        out.append(Delivery(r.id, r.url, r.payload, secret, int(r.attempts)))
    return out


def record_attempt(
    session: Session,
    *,
    delivery: Delivery,
    status_code: int | None,
    error: str | None,
    max_attempts: int,
    backoff_seconds: float,
    now: datetime | None = None,
) -> str:
    """What one attempt got: a 2xx delivers; anything else waits ``backoff_seconds`` doubled
    per attempt (at most an hour) for the next, until the last attempt fails it. Written only
    while the attempt is still the delivery's latest (a sender whose lease ran out and was
    overtaken writes nothing). Returns the status it leaves."""
    now = now or utcnow()
    ok = status_code is not None and 200 <= status_code < 300
    last = delivery.attempt >= max_attempts
    status = DELIVERED if ok else FAILED if last else PENDING
    wait = min(3600.0, backoff_seconds * 2 ** (delivery.attempt - 1))
    session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id == delivery.id,
            WebhookDelivery.status == PENDING,
            WebhookDelivery.attempts == delivery.attempt,
        )
        .values(
            status=status,
            last_status_code=status_code,
            last_error=None if ok else (error or f"HTTP {status_code}")[:2000],
            delivered_at=now if ok else None,
            next_attempt_at=now + timedelta(seconds=0 if ok else wait),
        ),
        execution_options={"synchronize_session": False},
    )
    return status


def job_deliveries(session: Session, *, job_id: str) -> list[WebhookDelivery]:
    """The job's webhook deliveries, oldest first."""
    return list(
        session.scalars(
            select(WebhookDelivery)
            .where(WebhookDelivery.job_id == job_id)
            .order_by(WebhookDelivery.created_at, WebhookDelivery.id)
        )
    )
