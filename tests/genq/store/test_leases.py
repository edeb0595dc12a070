from __future__ import annotations

from sqlalchemy import select

from genq.store import (
    JobStatus,
    RequestStatus,
    cancel_job,
    claim,
    complete,
    get_job,
    reap,
    release_orphans,
    renew,
)
from genq.store.tables import Request
from tests.conftest import Database
from tests.genq.store.support import LEASE, MODEL, TENANT, add_job, at, ok, request_ids, statuses

R = RequestStatus


def leases(store: Database, job_id: str) -> list[tuple[str | None, object]]:
    with store.sessions.begin() as session:
        rows = session.execute(
            select(Request.lease_owner, Request.lease_expires_at)
            .where(Request.job_id == job_id)
            .order_by(Request.idx)
        ).all()
    return [(owner, expires) for owner, expires in rows]


def test_renew_extends_only_the_claims_still_held(store: Database) -> None:
    with store.sessions.begin() as session:
        job_id = add_job(session, n=3)
    with store.sessions.begin() as session:
        a, b, c = sorted(
            claim(session, worker_id="w1", model=MODEL, lease_seconds=LEASE, now=at(0)),
            key=lambda c: c.idx,
        )
    with store.sessions.begin() as session:
        # b's lease ran out and w2 took it over; c's fence is a stale one.
        claim(
            session,
            worker_id="w2",
            model=MODEL,
            lease_seconds=LEASE,
            request_ids=[b.request_id],
            now=at(LEASE + 1),
        )
        kept = renew(
            session,
            worker_id="w1",
            held=[(a.request_id, a.fence), (b.request_id, b.fence), (c.request_id, c.fence - 1)],
            lease_seconds=LEASE,
            now=at(LEASE + 2),
        )
    assert kept == {a.request_id}
    assert leases(store, job_id) == [
        ("w1", at(2 * LEASE + 2)),
        ("w2", at(2 * LEASE + 1)),
        ("w1", at(LEASE)),
    ]


def test_renew_drops_the_unrun_claims_of_a_cancelled_job(store: Database) -> None:
    with store.sessions.begin() as session:
        job_id = add_job(session, n=3)
    with store.sessions.begin() as session:
        a, b, c = sorted(
            claim(session, worker_id="w", model=MODEL, lease_seconds=LEASE, now=at(0)),
            key=lambda c: c.idx,
        )
    with store.sessions.begin() as session:
        assert complete(session, request_id=a.request_id, fence=a.fence, outcome=ok(), now=at(1))
        assert cancel_job(session, tenant=TENANT, job_id=job_id, now=at(2)).status is (
            JobStatus.CANCELLING
        )
    with store.sessions.begin() as session:
        kept = renew(
            session,
            worker_id="w",
            held=[(b.request_id, b.fence), (c.request_id, c.fence)],
            lease_seconds=LEASE,
            now=at(3),
        )
        job = get_job(session, tenant=TENANT, job_id=job_id)
        assert kept == set()
        assert statuses(session, job_id) == [R.SUCCEEDED, R.CANCELLED, R.CANCELLED]
    assert (job.status, job.succeeded, job.cancelled, job.finished_at) == (
        JobStatus.CANCELLED,
        1,
        2,
        at(3),
    )


def test_release_orphans_puts_a_dead_runs_claims_back_and_counts_the_attempt(
    store: Database,
) -> None:
    with store.sessions.begin() as session:
        job_id = add_job(session, n=3)
        other = add_job(session, n=1)
        ids = request_ids(session, job_id)
    with store.sessions.begin() as session:
        first, second, _ = sorted(
            claim(
                session,
                worker_id="dead",
                model=MODEL,
                lease_seconds=LEASE,
                job_id=job_id,
                now=at(0),
            ),
            key=lambda c: c.idx,
        )
        claim(session, worker_id="live", model=MODEL, lease_seconds=LEASE, job_id=other, now=at(0))
        assert complete(
            session, request_id=first.request_id, fence=first.fence, outcome=ok(), now=at(1)
        )
    with store.sessions.begin() as session:
        released = release_orphans(session, job_id=job_id, error="worker lost: run died", now=at(2))
        assert sorted(released) == sorted(ids[1:])
        assert statuses(session, job_id) == [R.SUCCEEDED, R.QUEUED, R.QUEUED]
        assert statuses(session, other) == [R.RUNNING]  # another job's claims stay
        row = session.get_one(Request, second.request_id)
        assert (row.attempts, row.error, row.lease_owner) == (1, "worker lost: run died", None)
    # Out of attempts, the reconciler fails it with that reason.
    with store.sessions.begin() as session:
        report = reap(session, max_attempts=1, now=at(3))
        row = session.get_one(Request, second.request_id)
    assert second.request_id in report.failed
    assert row.error == "gave up after 1 attempts: worker lost: run died"
