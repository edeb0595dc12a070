"""Concurrent claimers, on PostgreSQL only: SQLite has a single writer, so there is no race."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import select, text

from genq.store import claim, mark_announced
from genq.store.db import make_engine, session_factory, upgrade
from genq.store.tables import Request
from tests.conftest import Database
from tests.genq.store.support import LEASE, MODEL, add_job, request_ids


@pytest.fixture
def pg(postgres_url: Callable[[], str]) -> Iterator[Database]:
    url = postgres_url()
    upgrade(url)
    engine = make_engine(url, pool_size=4)
    yield Database(url=url, engine=engine, sessions=session_factory(engine))
    engine.dispose()


def test_two_workers_claiming_any_never_share_a_request(pg: Database) -> None:
    with pg.sessions.begin() as session:
        jobs = [add_job(session, n=150) for _ in range(2)]
        every = {i for job in jobs for i in request_ids(session, job)}
    start = threading.Barrier(2)

    def work(worker_id: str) -> list[str]:
        taken: list[str] = []
        start.wait()
        while True:
            with pg.sessions.begin() as session:
                claims = claim(
                    session, worker_id=worker_id, model=MODEL, lease_seconds=LEASE, limit=7
                )
            if not claims:
                return taken
            taken += [c.request_id for c in claims]

    with ThreadPoolExecutor(max_workers=2) as pool:
        first, second = pool.map(work, ["w1", "w2"])
    assert not set(first) & set(second)
    assert len(first) + len(second) == len(every)
    assert set(first) | set(second) == every


def test_a_claim_in_flight_is_skipped_not_waited_for(pg: Database) -> None:
    with pg.sessions.begin() as session:
        ids = request_ids(session, add_job(session, n=7))
    with pg.sessions.begin() as session:
        # The job's first claim moves it to running, and a second first claim would wait on
        # that row: start the job here, so the rest is about the request rows alone.
        (first,) = claim(session, worker_id="w0", model=MODEL, lease_seconds=LEASE, limit=1)
    with pg.sessions.begin() as holder:
        held = claim(holder, worker_id="w1", model=MODEL, lease_seconds=LEASE, limit=3)
        # Not committed: w1's rows are locked. A blocked claim would hit the lock timeout.
        with pg.sessions.begin() as other:
            other.execute(text("SET LOCAL lock_timeout = '2s'"))
            named = claim(
                other,
                worker_id="w2",
                model=MODEL,
                lease_seconds=LEASE,
                request_ids=[c.request_id for c in held],
            )
            rest = claim(other, worker_id="w2", model=MODEL, lease_seconds=LEASE, limit=10)
    assert named == []
    assert sorted(c.request_id for c in [first, *held, *rest]) == sorted(ids)


def test_marking_announced_skips_rows_a_worker_holds(pg: Database) -> None:
    with pg.sessions.begin() as session:
        ids = request_ids(session, add_job(session, n=4))
    with pg.sessions.begin() as holder:
        # A worker mid-transaction on two of them (claiming, say): marking must not wait for
        # it, which could deadlock, and need not mark them, since they are moving on.
        held = claim(holder, worker_id="w1", model=MODEL, lease_seconds=LEASE, request_ids=ids[:2])
        with pg.sessions.begin() as other:
            other.execute(text("SET LOCAL lock_timeout = '2s'"))
            marked = mark_announced(other, request_ids=ids)
    assert len(held) == 2 and marked == 2
    with pg.sessions.begin() as session:
        announced = session.execute(
            select(Request.id, Request.announced_at).where(Request.id.in_(ids))
        ).all()
    assert {i for i, at in announced if at is not None} == set(ids[2:])


def test_four_fair_claimers_over_many_jobs_take_each_request_once(pg: Database) -> None:
    with pg.sessions.begin() as session:
        jobs = [add_job(session, n=n, tenant=t) for t in ("a", "b") for n in (90, 7, 30)]
        every = {i for job in jobs for i in request_ids(session, job)}
    start = threading.Barrier(4)

    def work(worker_id: str) -> list[list[str]]:
        windows: list[list[str]] = []
        start.wait()
        while True:
            with pg.sessions.begin() as session:
                claims = claim(
                    session, worker_id=worker_id, model=MODEL, lease_seconds=LEASE, limit=9
                )
            if not claims:
                return windows
            windows.append([c.request_id for c in claims])

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(work, ["w1", "w2", "w3", "w4"]))
    taken = [i for windows in results for window in windows for i in window]
    assert len(taken) == len(set(taken)) == len(every)
    assert set(taken) == every
    # Fair, not oldest first: every job is in one of the first windows of the four workers.
    with pg.sessions.begin() as session:
        first = {i for windows in results for i in windows[0]}
        owners = set(session.scalars(select(Request.job_id).where(Request.id.in_(first))))
    assert len(owners) >= 4


def test_four_workers_completing_overlapping_jobs_keep_exact_counts(pg: Database) -> None:
    from genq.store import complete_many, get_job
    from tests.genq.store.support import TENANT, ok

    with pg.sessions.begin() as session:
        jobs = [add_job(session, n=60, tenant=TENANT) for _ in range(6)]
    start = threading.Barrier(4)

    def work(worker_id: str) -> int:
        written = 0
        start.wait()
        while True:
            with pg.sessions.begin() as session:
                claims = claim(
                    session, worker_id=worker_id, model=MODEL, lease_seconds=LEASE, limit=11
                )
            if not claims:
                return written
            # Every window spans several jobs, in another order each time.
            items = [(c.request_id, c.fence, ok(tokens=1)) for c in reversed(claims)]
            with pg.sessions.begin() as session:
                written += sum(complete_many(session, items=items))

    with ThreadPoolExecutor(max_workers=4) as pool:
        written = sum(pool.map(work, ["w1", "w2", "w3", "w4"]))
    assert written == 360
    with pg.sessions.begin() as session:
        for job_id in jobs:
            job = get_job(session, tenant=TENANT, job_id=job_id)
            assert (job.status, job.succeeded, job.completion_tokens) == ("completed", 60, 60)
