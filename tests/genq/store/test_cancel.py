from __future__ import annotations

import pytest

from genq.errors import IllegalTransition, JobNotFound
from genq.store import (
    JobStatus,
    Outcome,
    RequestStatus,
    cancel_job,
    claim,
    complete,
    get_job,
    list_results,
    release,
)
from tests.conftest import Database
from tests.genq.store.support import LEASE, MODEL, TENANT, add_job, at, ok, request_ids, statuses

R = RequestStatus


def test_cancel_stops_queued_work_now_and_lets_running_work_finish(store: Database) -> None:
    with store.sessions.begin() as session:
        job_id = add_job(session, n=4)
        ids = request_ids(session, job_id)
    with store.sessions.begin() as session:
        a, b = sorted(
            claim(
                session,
                worker_id="w",
                model=MODEL,
                lease_seconds=LEASE,
                request_ids=ids[:2],
                now=at(0),
            ),
            key=lambda c: c.idx,
        )
    with store.sessions.begin() as session:
        job = cancel_job(session, tenant=TENANT, job_id=job_id, now=at(1))
    assert (job.status, job.cancelled, job.finished_at) == (JobStatus.CANCELLING, 2, None)
    with store.sessions.begin() as session:
        assert statuses(session, job_id) == [R.RUNNING, R.RUNNING, R.CANCELLED, R.CANCELLED]
        assert claim(session, worker_id="w2", model=MODEL, lease_seconds=LEASE, now=at(2)) == []
    with store.sessions.begin() as session:
        assert complete(
            session, request_id=a.request_id, fence=a.fence, outcome=ok("kept"), now=at(2)
        )
        assert get_job(session, tenant=TENANT, job_id=job_id).status is JobStatus.CANCELLING
    with store.sessions.begin() as session:
        failure = Outcome(error="boom")
        assert complete(session, request_id=b.request_id, fence=b.fence, outcome=failure, now=at(3))
    with store.sessions.begin() as session:
        job = get_job(session, tenant=TENANT, job_id=job_id)
        rows = list_results(session, job_id=job_id)
    assert (job.status, job.succeeded, job.failed, job.cancelled) == (JobStatus.CANCELLED, 1, 1, 2)
    assert job.finished_at == at(3)
    assert [(r.status, r.choices[0].text if r.choices else r.error) for r in rows] == [
        (R.SUCCEEDED, "kept"),
        (R.FAILED, "boom"),
        (R.CANCELLED, None),
        (R.CANCELLED, None),
    ]


def test_a_job_with_nothing_running_is_cancelled_at_once(store: Database) -> None:
    with store.sessions.begin() as session:
        job_id = add_job(session, n=3)
    with store.sessions.begin() as session:
        job = cancel_job(session, tenant=TENANT, job_id=job_id, now=at(4))
    assert (job.status, job.cancelled, job.finished_at) == (JobStatus.CANCELLED, 3, at(4))
    with store.sessions.begin() as session:
        # Cancelling again is harmless and changes nothing.
        assert cancel_job(session, tenant=TENANT, job_id=job_id, now=at(9)) == job


def test_a_released_request_of_a_cancelling_job_is_cancelled(store: Database) -> None:
    with store.sessions.begin() as session:
        job_id = add_job(session, n=1)
    with store.sessions.begin() as session:
        (c,) = claim(session, worker_id="w", model=MODEL, lease_seconds=LEASE, now=at(0))
        cancel_job(session, tenant=TENANT, job_id=job_id, now=at(1))
    with store.sessions.begin() as session:
        assert release(session, request_id=c.request_id, fence=c.fence, now=at(5))
    with store.sessions.begin() as session:
        job = get_job(session, tenant=TENANT, job_id=job_id)
        assert (job.status, job.cancelled, job.finished_at) == (JobStatus.CANCELLED, 1, at(5))
        assert statuses(session, job_id) == [R.CANCELLED]


def test_a_completed_job_cannot_be_cancelled(store: Database) -> None:
    with store.sessions.begin() as session:
        job_id = add_job(session, n=1)
    with store.sessions.begin() as session:
        (c,) = claim(session, worker_id="w", model=MODEL, lease_seconds=LEASE)
        complete(session, request_id=c.request_id, fence=c.fence, outcome=ok())
    refused = pytest.raises(IllegalTransition, match="completed to cancelling")
    with refused, store.sessions.begin() as session:
        cancel_job(session, tenant=TENANT, job_id=job_id)
    with store.sessions.begin() as session:
        assert get_job(session, tenant=TENANT, job_id=job_id).status is JobStatus.COMPLETED


def test_another_tenant_cannot_cancel(store: Database) -> None:
    with store.sessions.begin() as session:
        job_id = add_job(session, n=2, tenant="acme")
    with pytest.raises(JobNotFound), store.sessions.begin() as session:
        cancel_job(session, tenant="mallory", job_id=job_id)
    with store.sessions.begin() as session:
        assert statuses(session, job_id) == [R.QUEUED, R.QUEUED]


def test_a_cancel_is_logged_once_with_its_job_id(
    store: Database, caplog: pytest.LogCaptureFixture
) -> None:
    with store.sessions.begin() as session:
        job_id = add_job(session, n=2)
        ids = request_ids(session, job_id)
        claim(
            session,
            worker_id="w",
            model=MODEL,
            lease_seconds=LEASE,
            request_ids=ids[:1],
            now=at(0),
        )
    with caplog.at_level("INFO", logger="genq.store.jobs"):
        for _ in range(2):  # the second cancel changes nothing and says nothing
            with store.sessions.begin() as session:
                cancel_job(session, tenant=TENANT, job_id=job_id, now=at(1))
    (record,) = [r for r in caplog.records if r.name == "genq.store.jobs"]
    assert record.job_id == job_id  # type: ignore[attr-defined]
    assert record.getMessage() == (
        f"job {job_id} cancelled: 1 queued requests dropped, 1 running may finish"
    )
