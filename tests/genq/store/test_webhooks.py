"""Webhook events in the store: written in the transaction that ends the job (the job's URL,
else its tenant's), one per end, taken under a lease, retried with backoff, failed at the last
attempt, never overwritten by an attempt that lost its lease."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from genq.params import GenerationParams
from genq.store import NewRequest, cancel_job, claim, complete_many, create_job
from genq.store.records import Outcome
from genq.store.retry import retry_failed
from genq.store.tables import Tenant, WebhookDelivery
from genq.store.webhooks import Delivery, record_attempt, take_due, tenant_secret
from tests.conftest import Database
from tests.genq.store.support import LEASE, MODEL, TENANT, at, ok

HOOK = "http://127.0.0.1:9/hook"


def job(store: Database, n: int = 2, *, url: str | None = HOOK, refused: bool = False) -> str:
    requests = [NewRequest(prompt=f"p {i}") for i in range(n)]
    if refused:
        requests = [NewRequest(error="line 1: malformed JSON")]
    with store.sessions.begin() as session:
        return create_job(
            session,
            tenant=TENANT,
            model=MODEL,
            params=GenerationParams(),
            requests=requests,
            webhook_url=url,
            now=at(0),
        )


def finish(store: Database, *, fail: bool = False, when: float = 1) -> None:
    with store.sessions.begin() as session:
        claims = claim(session, worker_id="w", model=MODEL, lease_seconds=LEASE, now=at(when))
        outcome = Outcome(error="boom") if fail else ok()
        complete_many(
            session, items=[(c.request_id, c.fence, outcome) for c in claims], now=at(when)
        )


def events(store: Database) -> list[tuple[str, str, str, str]]:
    with store.sessions.begin() as session:
        rows = session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.created_at))
        return [(d.job_id, d.event, d.url, d.status) for d in rows]


def test_a_jobs_end_writes_its_event_with_the_job(store: Database) -> None:
    done, failed, cancelled = job(store), job(store), job(store)
    quiet = job(store, url=None)
    with store.sessions.begin() as session:
        cancel_job(session, tenant=TENANT, job_id=cancelled, now=at(1))
    with store.sessions.begin() as session:
        claims = claim(session, worker_id="w", model=MODEL, lease_seconds=LEASE, now=at(1))
        outcomes = {done: ok(), failed: Outcome(error="boom"), quiet: ok()}
        complete_many(
            session, items=[(c.request_id, c.fence, outcomes[c.job_id]) for c in claims], now=at(2)
        )
        assert len(events(store)) == 1  # the others' not before the transaction commits
    assert sorted(events(store)) == sorted(
        [
            (done, "job.completed", HOOK, "pending"),
            (failed, "job.failed", HOOK, "pending"),
            (cancelled, "job.cancelled", HOOK, "pending"),
        ]
    )
    with store.sessions.begin() as session:
        payload = session.scalar(
            select(WebhookDelivery.payload).where(WebhookDelivery.job_id == done)
        )
        assert payload is not None
        assert payload["type"] == "job.completed" and payload["data"]["id"] == done
        assert (
            payload["data"]["counts"]["succeeded"] == 2 and payload["data"]["status"] == "completed"
        )
        # The tenant's signing secret was made with its first event.
        assert session.scalar(select(Tenant.webhook_secret)).startswith("whsec_")


def test_the_tenants_default_url_and_a_job_ended_at_creation(store: Database) -> None:
    with store.sessions.begin() as session:
        tenant_secret(session, tenant=TENANT)
        session.execute(update(Tenant).values(webhook_url="http://127.0.0.1:9/default"))
    refused = job(store, url=None, refused=True)  # nothing to run: it ends as it is made
    assert events(store) == [(refused, "job.failed", "http://127.0.0.1:9/default", "pending")]


def test_a_retried_job_ends_again_with_a_second_event(store: Database) -> None:
    job_id = job(store, n=1)
    finish(store, fail=True)
    with store.sessions.begin() as session:
        retry_failed(session, tenant=TENANT, job_id=job_id, now=at(2))
    finish(store, when=3)
    assert [e[1] for e in events(store)] == ["job.failed", "job.completed"]


def attempt(
    session: Session, delivery: Delivery, code: int | None, error: str | None, when: float
) -> str:
    """One attempt's outcome recorded: at most 3 attempts, 5 s of backoff doubled."""
    return record_attempt(
        session,
        delivery=delivery,
        status_code=code,
        error=error,
        max_attempts=3,
        backoff_seconds=5,
        now=at(when),
    )


def test_attempts_under_a_lease_with_backoff_until_the_last(store: Database) -> None:
    job(store, n=1)
    finish(store)
    with store.sessions.begin() as session:
        (first,) = take_due(session, lease_seconds=30, now=at(10))
        assert first.attempt == 1 and first.url == HOOK and first.secret.startswith("whsec_")
        assert take_due(session, lease_seconds=30, now=at(20)) == []  # leased
    with store.sessions.begin() as session:
        kept = attempt(session, first, 500, None, 11)
        assert kept == "pending"
        assert take_due(session, lease_seconds=30, now=at(15)) == []  # 5 s of backoff
        (second,) = take_due(session, lease_seconds=30, now=at(16))
    with store.sessions.begin() as session:
        attempt(session, second, None, "ConnectError", 17)
        assert take_due(session, lease_seconds=30, now=at(26)) == []  # doubled: 10 s
        (third,) = take_due(session, lease_seconds=30, now=at(27))
        # The first attempt's sender, late, cannot overwrite the third's outcome.
        assert attempt(session, first, 200, None, 28) == "delivered"
    with store.sessions.begin() as session:
        row = session.scalar(select(WebhookDelivery))
        assert row is not None and (row.status, row.attempts, row.last_error) == (
            "pending",
            3,
            "ConnectError",
        )
        assert attempt(session, third, 503, None, 29) == "failed"
    with store.sessions.begin() as session:
        row = session.scalar(select(WebhookDelivery))
        assert row is not None and (row.status, row.last_status_code, row.last_error) == (
            "failed",
            503,
            "HTTP 503",
        )
        assert take_due(session, lease_seconds=30, now=at(10_000)) == []
