"""Claim, run, write on tiny-gpt2 and an embedded SQLite store: the code every worker runs."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from genq.logs import JsonFormatter
from genq.params import GenerationParams
from genq.settings import Settings
from genq.store import (
    JobStatus,
    NewRequest,
    RequestStatus,
    cancel_job,
    claim,
    complete,
    create_job,
    get_job,
    list_batches,
    list_results,
    session_factory,
    upgrade,
)
from genq.store.db import make_engine as make_db_engine
from genq.store.records import Choice, Outcome
from genq.store.tables import Request, utcnow
from worker.embedded import drain
from worker.engine import Engine
from worker.models import LoadedModel
from worker.service import Generator, Runtime, handle_message
from worker.types import BatchReport, GenRequest

from .conftest import request, run_all, varied_prompts

MODEL = "tiny-gpt2"
TENANT = "acme"
SHORT = GenerationParams(max_new_tokens=5)
LONGER = GenerationParams(max_new_tokens=7)

RuntimeFactory = Callable[..., Runtime]


class Hooked:
    """Wraps a generator: ``before(report)`` runs ahead of each report reaching the worker."""

    def __init__(self, inner: Generator, before: Callable[[BatchReport], None]) -> None:
        self.inner, self.before = inner, before

    def run(self, requests: Iterable[GenRequest]) -> Iterator[BatchReport]:
        for report in self.inner.run(requests):
            self.before(report)
            yield report


@pytest.fixture
def runtime(
    tmp_path: Path, tiny: LoadedModel, make_engine: Callable[..., Engine]
) -> Iterator[RuntimeFactory]:
    """Factory of runtimes on one upgraded SQLite store (per test), serving tiny-gpt2."""
    url = f"sqlite:///{tmp_path / 'genq.db'}"
    upgrade(url)
    db = make_db_engine(url)
    sessions = session_factory(db)

    def make(
        *,
        worker_id: str = "w1",
        engine: Generator | None = None,
        window: int = 256,
        max_batch_size: int = 64,
        **settings: Any,
    ) -> Runtime:
        generator = engine or make_engine(tiny, max_batch_size=max_batch_size)
        return Runtime(
            settings=Settings(database_url=url, buffer_seconds=0, **settings),
            sessions=sessions,
            model=MODEL,
            worker_id=worker_id,
            make_engine=lambda: generator,
            window=window,
        )

    yield make
    db.dispose()


def add_job(rt: Runtime, prompts: list[str], params: GenerationParams = SHORT) -> list[str]:
    """A job of ``prompts``; returns its request ids in input order."""
    with rt.sessions.begin() as session:
        job_id = create_job(
            session,
            tenant=TENANT,
            model=MODEL,
            params=params,
            requests=[NewRequest(custom_id=f"c{i}", prompt=p) for i, p in enumerate(prompts)],
        )
        return ids_of(session, job_id)


def ids_of(session: Session, job_id: str) -> list[str]:
    query = select(Request.id).where(Request.job_id == job_id).order_by(Request.idx)
    return list(session.scalars(query))


def job_of(rt: Runtime, request_id: str) -> str:
    with rt.sessions.begin() as session:
        return session.get_one(Request, request_id).job_id


def texts(rt: Runtime, ids: list[str]) -> dict[str, str]:
    with rt.sessions.begin() as session:
        rows = list_results(session, job_id=job_of(rt, ids[0]))
    return {r.request_id: r.choices[0].text for r in rows if r.choices}


def rows(rt: Runtime, ids: list[str]) -> list[tuple[RequestStatus, int]]:
    with rt.sessions.begin() as session:
        found = session.execute(
            select(Request.id, Request.status, Request.attempts).where(Request.id.in_(ids))
        ).all()
    order = {request_id: n for n, request_id in enumerate(ids)}
    return [(r.status, r.attempts) for r in sorted(found, key=lambda r: order[r.id])]


def message(rt: Runtime, ids: list[str], params: GenerationParams = SHORT) -> int:
    return handle_message(rt, model=MODEL, group_key=params.group_key(), request_ids=ids)


def test_a_message_runs_the_fair_pick_in_batches_of_one_parameter_set_across_jobs(
    runtime: RuntimeFactory, tiny: LoadedModel, make_engine: Callable[..., Engine]
) -> None:
    rt = runtime()
    # Prompts of one length: the planner then has no reason to cut them apart by length.
    prompts = [f"Note {n}: the river ran past the old mill and turned the wheel." for n in range(9)]
    a = add_job(rt, prompts[:3])
    b = add_job(rt, prompts[3:6])
    c = add_job(rt, prompts[6:], params=LONGER)
    # The message is a hint: the worker runs what the fair rule picks, every job here.
    assert message(rt, a) == 9
    assert [s for s, _ in rows(rt, a + b + c)] == [RequestStatus.SUCCEEDED] * 9
    with rt.sessions.begin() as session:
        batches = list_batches(session)
    assert {batch.group_key for batch in batches} == {SHORT.group_key(), LONGER.group_key()}
    assert all(
        set(batch.request_ids) <= set(c) or not set(batch.request_ids) & set(c) for batch in batches
    )
    assert any(
        set(batch.request_ids) & set(a) and set(batch.request_ids) & set(b) for batch in batches
    )
    alone = make_engine(tiny)
    for ids, offset in [(a, 0), (b, 3)]:
        got = texts(rt, ids)
        for n, request_id in enumerate(ids):
            expected = run_all(alone, [request("x", prompts[offset + n], max_new_tokens=5)])["x"]
            assert got[request_id] == expected.choices[0].text
    # A duplicate of the message finds nothing to claim and writes nothing.
    assert message(rt, a) == 0
    with rt.sessions.begin() as session:
        assert len(list_batches(session)) == len(batches)


def test_the_window_bounds_each_claim_and_the_next_joins_the_running_batch(
    runtime: RuntimeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    import worker.service

    sizes: list[int] = []

    def counted(*args: Any, **kwargs: Any) -> Any:
        claims = claim(*args, **kwargs)
        sizes.append(len(claims))
        return claims

    monkeypatch.setattr(worker.service, "claim", counted)
    rt = runtime(window=2)
    ids = add_job(rt, varied_prompts(7))
    assert message(rt, ids) == 7
    with rt.sessions.begin() as session:
        batches = list_batches(session)
    assert max(sizes) == 2 and sum(sizes) == 7
    # Windows claimed ahead joined the decode batch while the one before ran: more rows in a
    # step than one window holds.
    assert max(batch.rows for batch in batches) > 2
    assert sorted(i for batch in batches for i in batch.request_ids) == sorted(ids)


def test_suspects_run_alone_after_the_others(runtime: RuntimeFactory) -> None:
    rt = runtime()
    ids = add_job(rt, varied_prompts(4))
    long_ago = utcnow() - timedelta(seconds=100)
    with rt.sessions.begin() as session:  # a worker took three and died
        claim(
            session,
            worker_id="dead",
            model=MODEL,
            lease_seconds=1,
            request_ids=ids[:3],
            now=long_ago,
        )
    assert message(rt, ids) == 4
    with rt.sessions.begin() as session:
        batches = list_batches(session)
    assert sorted(len(b.request_ids) for b in batches) == [1, 1, 1, 1]
    assert batches[0].request_ids == (ids[3],)  # the innocent one first
    # Each suspect's attempt counted once for the dead worker and once for its own run: the
    # times it was claimed only to be put back did not count.
    assert rows(rt, ids) == [(RequestStatus.SUCCEEDED, 2)] * 3 + [(RequestStatus.SUCCEEDED, 1)]


def test_a_stale_claim_cannot_overwrite_the_result_of_the_claim_that_took_over(
    runtime: RuntimeFactory, tiny: LoadedModel, make_engine: Callable[..., Engine]
) -> None:
    def take_over(report: BatchReport) -> None:
        # While the first worker generates, its lease runs out and w2 finishes the request.
        (request_id,) = report.keys
        with rt.sessions.begin() as session:
            (theirs,) = claim(
                session,
                worker_id="w2",
                model=MODEL,
                lease_seconds=60,
                request_ids=[request_id],
                now=utcnow() + timedelta(seconds=120),
            )
            outcome = Outcome(choices=(Choice("theirs", "length", 1),), prompt_tokens=1)
            assert complete(session, request_id=request_id, fence=theirs.fence, outcome=outcome)

    rt = runtime(engine=Hooked(make_engine(tiny), take_over), lease_seconds=60)
    ids = add_job(rt, varied_prompts(1))
    assert message(rt, ids) == 0
    assert texts(rt, ids) == {ids[0]: "theirs"}
    with rt.sessions.begin() as session:
        (batch,) = list_batches(session)
        job = get_job(session, tenant=TENANT, job_id=job_of(rt, ids[0]))
    assert (batch.worker_id, batch.request_ids, batch.refused) == ("w1", (ids[0],), 1)
    assert (job.status, job.succeeded) == (JobStatus.COMPLETED, 1)


def test_a_stop_between_batches_releases_the_rest_with_their_attempts(
    runtime: RuntimeFactory,
) -> None:
    rt = runtime(max_batch_size=2)
    reported: list[str] = []

    def stop(report: BatchReport) -> None:  # called once the report is written
        reported.extend(report.keys)
        rt.stopping.set()

    rt.on_batch = stop
    ids = add_job(rt, varied_prompts(20))
    # What the engine had generated when the stop was seen is written too (at most what the
    # store thread had queued), and only that: the rest goes back.
    assert message(rt, ids) == len(reported) < 8
    statuses = dict(zip(ids, rows(rt, ids), strict=True))
    assert {statuses[i] for i in reported} == {(RequestStatus.SUCCEEDED, 1)}
    assert {s for i, s in statuses.items() if i not in reported} == {(RequestStatus.QUEUED, 0)}


def test_a_bad_stored_parameter_fails_only_its_request(runtime: RuntimeFactory) -> None:
    rt = runtime()
    ids = add_job(rt, varied_prompts(3))
    with rt.sessions.begin() as session:  # written by an older version, say
        session.execute(
            update(Request).where(Request.id == ids[1]).values(params={"max_new_tokens": 0})
        )
    assert message(rt, ids) == 3
    with rt.sessions.begin() as session:
        results = list_results(session, job_id=job_of(rt, ids[0]))
    assert [r.status for r in results] == [
        RequestStatus.SUCCEEDED,
        RequestStatus.FAILED,
        RequestStatus.SUCCEEDED,
    ]
    assert results[1].error is not None and results[1].error.startswith("params.max_new_tokens")


def test_a_cancelled_job_drops_the_claims_it_has_not_started(
    runtime: RuntimeFactory, tiny: LoadedModel, make_engine: Callable[..., Engine]
) -> None:
    seen: list[BatchReport] = []

    def cancel_after_first(report: BatchReport) -> None:
        seen.append(report)
        if len(seen) == 1:
            with rt.sessions.begin() as session:
                cancel_job(session, tenant=TENANT, job_id=job_of(rt, report.keys[0]))
        time.sleep(1.1)  # past a third of the lease: the next write renews what is left

    engine = Hooked(make_engine(tiny, max_batch_size=2), cancel_after_first)
    # A lease long enough not to run out on a busy machine (an expired lease is not held).
    rt = runtime(engine=engine, lease_seconds=3)
    ids = add_job(rt, varied_prompts(6))
    assert message(rt, ids) == 2
    with rt.sessions.begin() as session:
        job = get_job(session, tenant=TENANT, job_id=job_of(rt, ids[0]))
    # The batch running at the cancel finished and was kept; the claims not started yet were
    # dropped at the next lease renewal, and the engine stopped: nothing left to write.
    assert (job.status, job.succeeded, job.cancelled) == (JobStatus.CANCELLED, 2, 4)
    assert set(texts(rt, ids)) == set(seen[0].keys) and len(seen) == 1


def test_a_cancel_stops_the_job_at_the_next_batch(runtime: RuntimeFactory) -> None:
    rt = runtime(max_batch_size=8)
    ids = add_job(rt, varied_prompts(120))
    job_id = job_of(rt, ids[0])
    at_cancel: list[int] = []

    def cancel_once(report: BatchReport) -> None:
        if not at_cancel:
            with rt.sessions.begin() as session:
                job = cancel_job(session, tenant=TENANT, job_id=job_id)
            at_cancel.append(job.succeeded)

    rt.on_batch = cancel_once
    drain(rt)
    with rt.sessions.begin() as session:
        job = get_job(session, tenant=TENANT, job_id=job_id)
    # What was in the decode batch at the cancel (at most 8 rows) finished, and what had been
    # generated but not yet written (the store thread's queue and the report handed to it: at
    # most 8 each); nothing else did, though all 120 were claimed in one window.
    assert job.status is JobStatus.CANCELLED
    assert 0 < job.succeeded - at_cancel[0] <= 3 * 8
    assert job.succeeded + job.cancelled == 120


def test_a_job_that_arrives_shares_the_worker_at_once(runtime: RuntimeFactory) -> None:
    rt = runtime(max_batch_size=8)
    big = add_job(rt, varied_prompts(200))
    small: list[list[str]] = []
    done_at_arrival: list[int] = []

    def arrive(report: BatchReport) -> None:
        if not small:
            with rt.sessions.begin() as session:
                done_at_arrival.append(
                    get_job(session, tenant=TENANT, job_id=job_of(rt, big[0])).succeeded
                )
            small.append(add_job(rt, varied_prompts(5)))
            small.append(add_job(rt, varied_prompts(5), params=LONGER))

    rt.on_batch = arrive
    drain(rt)
    with rt.sessions.begin() as session:
        done = {
            r.request_id: r.status
            for job in (big, *small)
            for r in list_results(session, job_id=job_of(rt, job[0]))
        }
        finished = {
            request_id: at
            for request_id, at in session.execute(
                select(Request.id, Request.updated_at).where(Request.id.in_(list(done)))
            )
        }
    assert set(done.values()) == {RequestStatus.SUCCEEDED} and len(done) == 210
    # Both newcomers (one with other parameters) ended while most of the big job was left.
    last_small = max(finished[i] for job in small for i in job)
    big_before = sum(1 for i in big if finished[i] <= last_small)
    assert big_before - done_at_arrival[0] <= 40, (big_before, done_at_arrival)


def test_jobs_waiting_at_the_pick_do_not_make_a_worker_give_its_window_back(
    runtime: RuntimeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # More jobs than half a window: most wait past each pick, and only arrivals would make
    # the worker give back what it has not started.
    rt = runtime(window=16, max_batch_size=4)
    jobs = [add_job(rt, varied_prompts(3)) for _ in range(30)]
    with caplog.at_level(logging.INFO, logger="worker.service"):
        assert drain(rt) == 90
    assert "go back for a fair pick" not in caplog.text
    assert {s for job in jobs for s, _ in rows(rt, job)} == {RequestStatus.SUCCEEDED}


def test_drain_runs_its_job_to_the_end(runtime: RuntimeFactory) -> None:
    rt = runtime(window=4, max_attempts=2)
    mine = add_job(rt, varied_prompts(6))
    other = add_job(rt, varied_prompts(2))
    with rt.sessions.begin() as session:  # two dead claims: out of attempts
        for attempt in range(2):
            claim(
                session,
                worker_id="dead",
                model=MODEL,
                lease_seconds=1,
                request_ids=[mine[0]],
                max_attempts=2,
                now=utcnow() - timedelta(seconds=100 - 10 * attempt),
            )
    assert drain(rt, job_id=job_of(rt, mine[0])) == 5
    with rt.sessions.begin() as session:
        job = get_job(session, tenant=TENANT, job_id=job_of(rt, mine[0]))
        first = session.get_one(Request, mine[0])
    assert (job.status, job.succeeded, job.failed) == (JobStatus.COMPLETED, 5, 1)
    assert first.error == "gave up after 2 attempts: worker lost"
    assert {s for s, _ in rows(rt, other)} == {RequestStatus.QUEUED}
    assert drain(rt) == 2


def test_log_lines_name_their_batch_requests_jobs_and_worker(
    runtime: RuntimeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    rt = runtime(worker_id="w-logs")
    prompts = [f"Note {n}: the river ran past the old mill and turned the wheel." for n in range(4)]
    a, b = add_job(rt, prompts[:2]), add_job(rt, prompts[2:])
    with rt.sessions.begin() as session:  # one request that fails alone
        session.execute(update(Request).where(Request.id == b[1]).values(params={"top_k": -1}))
    with caplog.at_level(logging.INFO, logger="worker.service"):
        assert message(rt, a) == 4
    with rt.sessions.begin() as session:
        (batch,) = list_batches(session)
    lines = [json.loads(JsonFormatter().format(r)) for r in caplog.records]
    (ran,) = [x for x in lines if x["message"].startswith("batch ")]
    assert (ran["batch_id"], ran["worker_id"], ran["model"]) == (batch.id, "w-logs", MODEL)
    assert sorted(ran["request_ids"]) == sorted(a + b[:1])
    assert ran["job_ids"] == sorted({job_of(rt, a[0]), job_of(rt, b[0])})
    (failed,) = [x for x in lines if x["message"].startswith("request ")]
    assert (failed["request_id"], failed["job_id"], failed["worker_id"]) == (
        b[1],
        job_of(rt, b[1]),
        "w-logs",
    )


def test_a_loaded_engine_leaves_the_collector_only_new_objects(
    tiny: LoadedModel, tiny_cache: Path
) -> None:
    import gc
    import weakref

    from worker.service import model_engine

    class Node:
        pass

    garbage = Node()
    garbage.self = garbage  # type: ignore[attr-defined]  # a cycle: only the collector frees it
    gone = weakref.ref(garbage)
    del garbage
    gc.disable()
    try:
        engine = model_engine(Settings(model_cache=tiny_cache, device="cpu"), "tiny-gpt2")()
        assert isinstance(engine, Engine)
        assert gone() is None  # collected before the freeze, not kept for good
        # The model, the libraries and all else alive now: out of every later full collection.
        assert gc.get_freeze_count() > 10_000
        assert len(gc.get_objects()) < gc.get_freeze_count()
    finally:
        gc.enable()
        gc.unfreeze()
