from __future__ import annotations

from genq.params import GenerationParams
from genq.store import (
    Announcement,
    JobStatus,
    RequestStatus,
    cancel_job,
    claim,
    complete,
    get_job,
    list_results,
    mark_announced,
    pending_announcements,
    reap,
    release,
)
from tests.conftest import Database
from tests.genq.store.support import (
    LEASE,
    MODEL,
    TENANT,
    add_job,
    at,
    ok,
    request_ids,
    statuses,
)

R = RequestStatus
KEY = GenerationParams().group_key()


def test_reap_gives_up_on_a_request_whose_workers_keep_dying(store: Database) -> None:
    with store.sessions.begin() as session:
        job_id = add_job(session, n=1)
    for attempt in range(2):  # each claim's worker vanishes; its lease runs out
        with store.sessions.begin() as session:
            start = at(attempt * 100)
            assert claim(
                session, worker_id="w", model=MODEL, lease_seconds=LEASE, max_attempts=2, now=start
            )
            report = reap(session, max_attempts=2, now=start)
            assert report.failed == ()
    with store.sessions.begin() as session:
        report = reap(session, max_attempts=2, now=at(100 + LEASE + 1))
        (row,) = list_results(session, job_id=job_id)
        job = get_job(session, tenant=TENANT, job_id=job_id)
    assert report.failed == (row.request_id,) and report.expired == ()
    assert (row.status, row.error) == (R.FAILED, "gave up after 2 attempts: worker lost")
    assert (job.status, job.failed, job.finished_at) == (
        JobStatus.COMPLETED,
        1,
        at(100 + LEASE + 1),
    )


def test_reap_reports_the_last_error(store: Database) -> None:
    with store.sessions.begin() as session:
        job_id = add_job(session, n=1)
    with store.sessions.begin() as session:
        (c,) = claim(session, worker_id="w", model=MODEL, lease_seconds=LEASE, now=at(0))
        release(session, request_id=c.request_id, fence=c.fence, error="CUDA error", now=at(1))
    with store.sessions.begin() as session:
        assert reap(session, max_attempts=2, now=at(2)).failed == ()
        report = reap(session, max_attempts=1, now=at(2))
        (row,) = list_results(session, job_id=job_id)
    assert report.failed == (c.request_id,) and report.unannounced == ()
    assert row.error == "gave up after 1 attempts: CUDA error"


def test_reap_finds_expired_and_unannounced_requests(store: Database) -> None:
    with store.sessions.begin() as session:
        job_id = add_job(session, n=4)
        expired, announced, silent, done = request_ids(session, job_id)
    with store.sessions.begin() as session:
        claims = claim(
            session,
            worker_id="w",
            model=MODEL,
            lease_seconds=LEASE,
            request_ids=[expired, done],
            now=at(0),
        )
        (finished,) = [c for c in claims if c.request_id == done]
        complete(session, request_id=done, fence=finished.fence, outcome=ok(), now=at(0))
        assert mark_announced(session, request_ids=[announced], now=at(0)) == 1
    with store.sessions.begin() as session:
        live = reap(session, reannounce_seconds=300, now=at(LEASE - 1))
        report = reap(session, reannounce_seconds=300, now=at(LEASE + 1))
        later = reap(session, reannounce_seconds=300, now=at(301))
    assert (live.expired, live.unannounced) == ((), (silent,))
    assert (report.expired, report.unannounced) == ((expired,), (silent,))
    assert report.announcements == (Announcement(MODEL, KEY, (expired, silent)),)
    assert set(later.unannounced) == {announced, silent}


def test_mark_announced_takes_requests_off_the_list(store: Database) -> None:
    with store.sessions.begin() as session:
        job_id = add_job(session, n=3)
        other = add_job(session, n=2)
        ids = request_ids(session, job_id)
    with store.sessions.begin() as session:
        (mine,) = pending_announcements(session, job_id=job_id, now=at(0))
        assert mine == Announcement(MODEL, KEY, tuple(ids))
        assert mark_announced(session, request_ids=mine.request_ids, now=at(0)) == 3
    with store.sessions.begin() as session:
        assert pending_announcements(session, job_id=job_id, now=at(1)) == []
        (rest,) = pending_announcements(session, now=at(1))
    assert rest.request_ids == tuple(request_ids(session, other))


def test_reap_cancels_what_a_cancelling_job_left_behind(store: Database) -> None:
    with store.sessions.begin() as session:
        job_id = add_job(session, n=2)
    with store.sessions.begin() as session:
        claim(session, worker_id="w", model=MODEL, lease_seconds=LEASE, now=at(0))
        job = cancel_job(session, tenant=TENANT, job_id=job_id, now=at(1))
        assert job.status is JobStatus.CANCELLING
    with store.sessions.begin() as session:
        assert reap(session, now=at(LEASE - 1)).cancelled == ()
        report = reap(session, now=at(LEASE + 1))
        job = get_job(session, tenant=TENANT, job_id=job_id)
        assert statuses(session, job_id) == [R.CANCELLED, R.CANCELLED]
    assert len(report.cancelled) == 2 and report.expired == () and report.failed == ()
    assert (job.status, job.cancelled, job.finished_at) == (
        JobStatus.CANCELLED,
        2,
        at(LEASE + 1),
    )
