"""Retrying a completed job's failures: only those requeue (not refused lines, not successes),
the job goes back to queued and ends again, the finished counters never go down, a stale
claim's write is refused, and what cannot be retried says why."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import insert, select

from genq.errors import Conflict, JobNotFound
from genq.params import GenerationParams
from genq.store import NewRequest, claim, complete_many, create_job, get_job
from genq.store.records import Outcome
from genq.store.retry import retry_failed
from genq.store.status import JobStatus
from genq.store.tables import OpenAIBatch, Request, Result
from genq.store.views import finished_totals
from tests.conftest import Database
from tests.genq.store.support import LEASE, MODEL, TENANT, add_job, at, ok


def run(store: Database, *, fail: set[int], when: float) -> list[tuple[str, int]]:
    """Claim what is queued and end it: the positions in ``fail`` fail, the rest succeed.
    Returns the (request id, fence) of the claims."""
    with store.sessions.begin() as session:
        claims = claim(session, worker_id="w", model=MODEL, lease_seconds=LEASE, now=at(when))
        items = [
            (c.request_id, c.fence, Outcome(error="boom") if c.idx in fail else ok())
            for c in claims
        ]
        complete_many(session, items=items, now=at(when))
    return [(c.request_id, c.fence) for c in claims]


def mixed_job(store: Database) -> str:
    """Five requests and a line refused at intake; positions 1 and 3 fail when run."""
    requests = [NewRequest(custom_id=f"c{i}", prompt=f"p {i}") for i in range(5)]
    requests.append(NewRequest(custom_id="bad", error="line 6: malformed JSON"))
    with store.sessions.begin() as session:
        job_id = create_job(
            session,
            tenant=TENANT,
            model=MODEL,
            params=GenerationParams(),
            requests=requests,
            now=at(0),
        )
    run(store, fail={1, 3}, when=1)
    return job_id


def test_only_the_failures_that_ran_go_back(store: Database) -> None:
    job_id = mixed_job(store)
    with store.sessions.begin() as session:
        before = get_job(session, tenant=TENANT, job_id=job_id)
        totals = finished_totals(session)[MODEL]
        kept = dict(session.execute(select(Result.request_id, Result.fence)).all())
    assert (before.status, before.succeeded, before.failed, before.refused) == (
        JobStatus.COMPLETED,
        3,
        3,
        1,
    )
    with store.sessions.begin() as session:
        job, count = retry_failed(session, tenant=TENANT, job_id=job_id, now=at(5))
    assert count == 2
    assert (job.status, job.failed, job.retried, job.finished_at) == (
        JobStatus.QUEUED,
        1,
        2,
        None,
    )
    assert job.started_at == before.started_at and job.succeeded == 3
    with store.sessions.begin() as session:
        rows = session.execute(
            select(Request.idx, Request.status, Request.attempts, Request.error).order_by(
                Request.idx
            )
        ).all()
        assert [tuple(r) for r in rows] == [
            (0, "succeeded", 1, None),
            (1, "queued", 0, None),
            (2, "succeeded", 1, None),
            (3, "queued", 0, None),
            (4, "succeeded", 1, None),
            (5, "failed", 0, "line 6: malformed JSON"),
        ]
        assert finished_totals(session)[MODEL] == totals  # a counter never goes down
    stale = [(rid, fence) for rid, fence in kept.items()]
    # The second run: both succeed, the job completes again.
    second = run(store, fail=set(), when=10)
    assert len(second) == 2
    with store.sessions.begin() as session:
        done = get_job(session, tenant=TENANT, job_id=job_id)
        after = finished_totals(session)[MODEL]
        # Successes were never touched: their result rows are the first run's.
        assert {rid: f for rid, f in stale} == {
            rid: f
            for rid, f in session.execute(select(Result.request_id, Result.fence)).all()
            if rid in kept
        }
    assert (done.status, done.succeeded, done.failed, done.retried) == (
        JobStatus.COMPLETED,
        5,
        1,
        2,
    )
    assert done.finished_at == at(10)
    assert after["succeeded"] == totals["succeeded"] + 2 and after["failed"] == totals["failed"]


def test_a_stale_claims_write_is_refused_after_a_retry(store: Database) -> None:
    with store.sessions.begin() as session:
        job_id = add_job(session, n=1, now=at(0))
    (first,) = run(store, fail={0}, when=1)
    with store.sessions.begin() as session:
        retry_failed(session, tenant=TENANT, job_id=job_id, now=at(2))
    with store.sessions.begin() as session:
        late = complete_many(session, items=[(first[0], first[1], ok())], now=at(3))
    assert late == [False]
    with store.sessions.begin() as session:
        assert get_job(session, tenant=TENANT, job_id=job_id).status is JobStatus.QUEUED


def test_nothing_to_retry_leaves_the_job_as_it_was(store: Database) -> None:
    with store.sessions.begin() as session:
        job_id = add_job(session, n=2, now=at(0))
    run(store, fail=set(), when=1)
    with store.sessions.begin() as session:
        before = get_job(session, tenant=TENANT, job_id=job_id)
        job, count = retry_failed(session, tenant=TENANT, job_id=job_id, now=at(2))
    assert count == 0 and job == before


def test_what_cannot_be_retried_says_why(store: Database) -> None:
    with store.sessions.begin() as session:
        running = add_job(session, n=1, now=at(0))
        claim(session, worker_id="w", model=MODEL, lease_seconds=LEASE, now=at(1))
    with (
        pytest.raises(Conflict, match="is running: only a completed"),
        store.sessions.begin() as session,
    ):
        retry_failed(session, tenant=TENANT, job_id=running, now=at(2))
    with pytest.raises(JobNotFound), store.sessions.begin() as session:
        retry_failed(session, tenant="someone-else", job_id=running, now=at(2))

    with store.sessions.begin() as session:
        old = add_job(session, n=1, now=at(0))
    run(store, fail={0}, when=3)
    with pytest.raises(Conflict, match="retention"), store.sessions.begin() as session:
        retry_failed(session, tenant=TENANT, job_id=old, not_before=at(3) + timedelta(1))
    with store.sessions.begin() as session:
        session.execute(
            insert(OpenAIBatch).values(
                id="batch_1",
                tenant=TENANT,
                job_id=old,
                endpoint="/v1/completions",
                input_file_id="file_x",
                completion_window="24h",
                status="completed",
                invalid=0,
                created_at=at(0),
                expires_at=at(86400),
            )
        )
    with pytest.raises(Conflict, match="OpenAI batch"), store.sessions.begin() as session:
        retry_failed(session, tenant=TENANT, job_id=old, now=at(4))
