"""The fair rule as the claim applies it, on SQLite and PostgreSQL: windows shared across
tenants and jobs, weights and priorities from the store, quotas refused with nothing stored,
and a cancelled job's claims dropped."""

from __future__ import annotations

from collections import Counter

import pytest
from sqlalchemy import select

from genq.errors import QuotaExceeded
from genq.params import GenerationParams
from genq.producer import submit_job
from genq.settings import Settings
from genq.store import (
    JobStatus,
    NewRequest,
    RequestStatus,
    cancel_claims,
    cancel_job,
    claim,
    create_job,
    get_job,
)
from genq.store.shares import backlogs, set_tenant, usage
from genq.store.tables import Job, Request
from tests.conftest import Database
from tests.genq.store.support import LEASE, MODEL, add_job, at, count


def take(store: Database, *, limit: int, worker: str = "w", order: str = "fair") -> Counter[str]:
    with store.sessions.begin() as session:
        claims = claim(
            session,
            worker_id=worker,
            model=MODEL,
            lease_seconds=LEASE,
            limit=limit,
            order=order,  # type: ignore[arg-type]
            now=at(10),
        )
    return Counter(c.job_id for c in claims)


def test_a_window_is_shared_across_tenants_and_takes_a_small_job_whole(store: Database) -> None:
    with store.sessions.begin() as session:
        big = add_job(session, n=300, tenant="a", now=at(0))
        small = add_job(session, n=5, tenant="b", now=at(1))
        other = add_job(session, n=300, tenant="b", now=at(2))
    oldest = take(store, limit=64, order="oldest", worker="x")
    assert oldest == {big: 64}  # what it was: the large job first, the others wait
    with store.sessions.begin() as session:
        session.execute(Request.__table__.update().values(status="queued", lease_owner=None))
    got = take(store, limit=64)
    assert got[small] == 5
    assert got[big] == 32 and got[small] + got[other] == 32  # tenant by tenant, half each


def test_tenant_weights_and_job_priorities_come_from_the_store(store: Database) -> None:
    with store.sessions.begin() as session:
        a = add_job(session, n=500, tenant="a", now=at(0))
        b = add_job(session, n=500, tenant="b", now=at(1))
        set_tenant(session, name="a", weight=3.0, max_queued_requests=None, max_queued_tokens=None)
    got = take(store, limit=100)
    assert (got[a], got[b]) == (75, 25)
    with store.sessions.begin() as session:
        low = add_job(session, n=100, tenant="c", now=at(2))
        high = create_job(
            session,
            tenant="c",
            model=MODEL,
            params=GenerationParams(),
            requests=[NewRequest(prompt=f"p {i}") for i in range(100)],
            priority=3,
            now=at(3),
        )
    got = take(store, limit=50)
    assert got[low] == 1 and got[high] > 1  # the higher priority first; the lower still moves


def test_work_in_flight_counts_against_a_tenant(store: Database) -> None:
    with store.sessions.begin() as session:
        a = add_job(session, n=400, tenant="a", now=at(0))
    assert take(store, limit=100, worker="w1") == {a: 100}
    with store.sessions.begin() as session:
        b = add_job(session, n=400, tenant="b", now=at(1))
        (found_a,) = [x for x in backlogs(session, model=MODEL) if x.job_id == a]
    assert (found_a.running, found_a.queued) == (100, 300)
    # A second worker's window goes to b until b holds as much as a.
    got = take(store, limit=120, worker="w2")
    assert got == {a: 10, b: 110}


def test_work_is_measured_in_tokens_not_requests(store: Database) -> None:
    with store.sessions.begin() as session:
        long_ = create_job(
            session,
            tenant="a",
            model=MODEL,
            params=GenerationParams(max_new_tokens=200),
            requests=[NewRequest(prompt="x" * 800) for _ in range(200)],
            now=at(0),
        )
        short = create_job(
            session,
            tenant="b",
            model=MODEL,
            params=GenerationParams(max_new_tokens=8),
            requests=[NewRequest(prompt="x" * 8) for _ in range(200)],
            now=at(1),
        )
        assert session.scalar(select(Job.work).where(Job.id == long_)) == 200 * (200 + 200)
    got = take(store, limit=100)
    assert got[short] > 10 * got[long_]


def test_a_quota_refuses_a_submit_with_nothing_stored(store: Database) -> None:
    settings = Settings(database_url=store.url, max_queued_requests=10)
    requests = [NewRequest(prompt="hello there") for _ in range(6)]

    def submit(tenant: str = "a", n: int = 6) -> str:
        return submit_job(
            store.sessions,
            None,
            tenant=tenant,
            model=MODEL,
            params=GenerationParams(max_new_tokens=10),
            requests=requests[:n],
            settings=settings,
        )

    submit()
    with pytest.raises(QuotaExceeded, match="12 requests queued or running, over its limit of 10"):
        submit()
    with store.sessions.begin() as session:
        assert (count(session, Job), count(session, Request)) == (1, 6)
        assert usage(session)["a"].queued == 6
    submit(n=4)  # exactly at the limit
    submit(tenant="b")  # another tenant has its own
    # A tenant's own limit over the default, in tokens: 6 requests of (3 + 10) tokens is 78.
    with store.sessions.begin() as session:
        set_tenant(session, name="c", weight=None, max_queued_requests=100, max_queued_tokens=100)
    submit(tenant="c")
    with pytest.raises(QuotaExceeded, match="about 156 tokens") as raised:
        submit(tenant="c")
    assert raised.value.retry_after > 0
    with store.sessions.begin() as session:
        assert count(session, Job) == 4
        job_id = session.scalar(select(Job.id).where(Job.tenant == "c"))
        cancel_job(session, tenant="c", job_id=job_id, now=at(5))
    submit(tenant="c")  # what ended no longer counts


def test_claims_of_a_cancelled_job_are_dropped_and_counted(store: Database) -> None:
    with store.sessions.begin() as session:
        job_id = add_job(session, n=4, now=at(0))
    with store.sessions.begin() as session:
        claims = claim(session, worker_id="w", model=MODEL, lease_seconds=LEASE, now=at(1))
        cancel_job(session, tenant="acme", job_id=job_id, now=at(2))
    held = [(c.request_id, c.fence) for c in claims[:3]]
    with store.sessions.begin() as session:
        assert cancel_claims(session, worker_id="other", held=held, now=at(3)) == set()
        assert cancel_claims(session, worker_id="w", held=held, now=at(3)) == {i for i, _ in held}
        job = get_job(session, tenant="acme", job_id=job_id)
        assert (job.status, job.cancelled) == (JobStatus.CANCELLING, 3)
        statuses = session.scalars(select(Request.status).where(Request.job_id == job_id))
        assert Counter(statuses) == {RequestStatus.CANCELLED: 3, RequestStatus.RUNNING: 1}
