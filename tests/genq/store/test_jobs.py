from __future__ import annotations

import re
import time
from datetime import timedelta, timezone

import pytest
from sqlalchemy import select
from sqlalchemy.exc import StatementError

from genq.errors import InvalidRequest, JobNotFound
from genq.params import GenerationParams
from genq.store import (
    JobStatus,
    NewRequest,
    RequestStatus,
    claim,
    complete,
    create_job,
    find_job,
    get_job,
    list_results,
)
from genq.store.tables import Request
from tests.conftest import Database
from tests.genq.store.support import LEASE, MODEL, T0, TENANT, add_job, at, ok

ID = re.compile(r"^(job|req)_[a-z2-7]{24}$")


def test_create_job_writes_every_request_in_order(store: Database) -> None:
    sampled = GenerationParams(do_sample=True, seed=7, max_new_tokens=9)
    requests = [
        NewRequest(custom_id="a", prompt="first"),
        NewRequest(custom_id="b", messages=({"role": "user", "content": "hi"},)),
        NewRequest(custom_id="c", prompt="third", params=sampled),
    ]
    with store.sessions.begin() as session:
        job_id = create_job(
            session,
            tenant=TENANT,
            model=MODEL,
            params=GenerationParams(max_new_tokens=5),
            requests=requests,
            metadata={"batch": "x"},
            now=T0,
        )
    with store.sessions.begin() as session:
        job = get_job(session, tenant=TENANT, job_id=job_id)
        rows = session.scalars(select(Request).order_by(Request.idx)).all()
        assert (job.status, job.total, job.succeeded, job.failed, job.cancelled) == (
            JobStatus.QUEUED,
            3,
            0,
            0,
            0,
        )
        assert (job.model, job.metadata, job.params["max_new_tokens"]) == (MODEL, {"batch": "x"}, 5)
        assert job.created_at == T0 and job.started_at is None
        assert [(r.idx, r.custom_id, r.prompt) for r in rows] == [
            (0, "a", "first"),
            (1, "b", None),
            (2, "c", "third"),
        ]
        assert rows[1].messages == [{"role": "user", "content": "hi"}]
        assert {r.status for r in rows} == {RequestStatus.QUEUED}
        assert {(r.attempts, r.fence, r.announced_at) for r in rows} == {(0, 0, None)}
        # The third request keeps its own parameters and so its own parameter set.
        # Stored once, on the job, unless a request brings its own.
        assert [r.params is None for r in rows] == [True, True, False]
        assert rows[2].params is not None and rows[2].params["seed"] == 7
        assert (
            rows[0].group_key == rows[1].group_key == GenerationParams(max_new_tokens=5).group_key()
        )
        assert rows[2].group_key == sampled.group_key() != rows[0].group_key
        assert ID.match(job_id) and all(ID.match(r.id) for r in rows)


def test_ids_are_random_and_unique(store: Database) -> None:
    with store.sessions.begin() as session:
        jobs = [add_job(session, n=50) for _ in range(4)]
        ids = list(session.scalars(select(Request.id)))
    assert len(set(jobs)) == 4 and len(set(ids)) == 200
    # 120 random bits each: no shared prefix beyond the type tag.
    assert len({i[4:8] for i in ids}) > 150


def test_a_job_needs_a_request(store: Database) -> None:
    with pytest.raises(InvalidRequest) as info, store.sessions.begin() as session:
        create_job(session, tenant=TENANT, model=MODEL, params=GenerationParams(), requests=[])
    assert info.value.field == "requests"


def test_lines_refused_at_intake_are_failed_from_the_start(store: Database) -> None:
    requests = [
        NewRequest(custom_id="ok", prompt="p"),
        NewRequest(custom_id="bad", error="line 2: prompt: must not be empty"),
    ]
    with store.sessions.begin() as session:
        job_id = create_job(
            session, tenant=TENANT, model=MODEL, params=GenerationParams(), requests=requests
        )
        job = get_job(session, tenant=TENANT, job_id=job_id)
        rows = list_results(session, job_id=job_id)
    assert (job.status, job.total, job.failed, job.refused) == (JobStatus.QUEUED, 2, 1, 1)
    assert job.param_sets == [
        {
            "key": GenerationParams().group_key(),
            "params": job.param_sets[0]["params"],
            "requests": 1,
        }
    ]
    assert [(r.custom_id, r.status, r.error, r.refused) for r in rows] == [
        ("bad", RequestStatus.FAILED, "line 2: prompt: must not be empty", True)
    ]
    with store.sessions.begin() as session:  # a job of refused lines only ends as it is made
        only = create_job(
            session, tenant=TENANT, model=MODEL, params=GenerationParams(), requests=requests[1:]
        )
        assert get_job(session, tenant=TENANT, job_id=only).status is JobStatus.COMPLETED


@pytest.mark.parametrize(
    "kwargs", [{}, {"prompt": "p", "messages": ({"role": "user", "content": "c"},)}]
)
def test_a_request_has_prompt_or_messages(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidRequest, match="exactly one of prompt and messages"):
        NewRequest(**kwargs)  # type: ignore[arg-type]


def test_another_tenants_job_is_not_found(store: Database) -> None:
    with store.sessions.begin() as session:
        job_id = add_job(session, tenant="acme")
    with store.sessions.begin() as session:
        assert get_job(session, tenant="acme", job_id=job_id).id == job_id
        with pytest.raises(JobNotFound):
            get_job(session, tenant="other", job_id=job_id)
        with pytest.raises(JobNotFound):
            get_job(session, tenant="acme", job_id="job_missing")


def test_results_page_in_input_order_and_only_finished(store: Database) -> None:
    with store.sessions.begin() as session:
        job_id = add_job(session, n=4)
    with store.sessions.begin() as session:
        claims = {c.idx: c for c in claim(session, worker_id="w", model=MODEL, lease_seconds=LEASE)}
    with store.sessions.begin() as session:
        for idx in (3, 0, 2):  # out of order; idx 1 stays running
            outcome = ok(text=f"t{idx}")
            c = claims[idx]
            assert complete(
                session, request_id=c.request_id, fence=c.fence, outcome=outcome, now=at(1)
            )
    with store.sessions.begin() as session:
        rows = list_results(session, job_id=job_id)
        page = list_results(session, job_id=job_id, after_idx=0, limit=1)
    assert [(r.idx, r.custom_id, r.status, r.choices[0].text) for r in rows] == [
        (0, "c0", RequestStatus.SUCCEEDED, "t0"),
        (2, "c2", RequestStatus.SUCCEEDED, "t2"),
        (3, "c3", RequestStatus.SUCCEEDED, "t3"),
    ]
    assert (rows[0].prompt_tokens, rows[0].completion_tokens) == (5, 2)
    assert [r.idx for r in page] == [2]


def test_bulk_insert_of_50k_requests(store: Database) -> None:
    """Not a timed test: prints the figure for the record, asserts only on the rows."""
    n = 50_000
    requests = [NewRequest(custom_id=f"line-{i}", prompt=f"prompt number {i}") for i in range(n)]
    started = time.perf_counter()
    with store.sessions.begin() as session:
        job_id = create_job(
            session, tenant=TENANT, model=MODEL, params=GenerationParams(), requests=requests
        )
    seconds = time.perf_counter() - started
    print(f"\ncreate_job of {n} requests on {store.engine.dialect.name}: {seconds:.2f} s")
    with store.sessions.begin() as session:
        assert get_job(session, tenant=TENANT, job_id=job_id).total == n
        last = session.execute(
            select(Request.idx, Request.custom_id).order_by(Request.idx.desc()).limit(1)
        ).one()
    assert tuple(last) == (n - 1, f"line-{n - 1}")


def test_times_come_back_as_aware_utc(store: Database) -> None:
    elsewhere = T0.astimezone(timezone(timedelta(hours=-7)))
    with store.sessions.begin() as session:
        job_id = add_job(session, now=elsewhere)
    with store.sessions.begin() as session:
        created = get_job(session, tenant=TENANT, job_id=job_id).created_at
    assert (created, created.utcoffset()) == (T0, timedelta(0))
    naive = pytest.raises(StatementError, match="naive datetime")
    with naive, store.sessions.begin() as session:
        add_job(session, now=T0.replace(tzinfo=None))


def test_find_job_by_a_metadata_tag(store: Database) -> None:
    with store.sessions.begin() as session:
        params = GenerationParams()
        requests = [NewRequest(prompt="p")]
        tagged = [
            create_job(
                session,
                tenant=TENANT,
                model=MODEL,
                params=params,
                requests=requests,
                metadata={"out": "/tmp/a.jsonl", "n": i},
                now=at(i),
            )
            for i in range(2)
        ]
        create_job(
            session,
            tenant="other",
            model=MODEL,
            params=params,
            requests=requests,
            metadata={"out": "/tmp/a.jsonl"},
            now=at(5),
        )
    with store.sessions.begin() as session:
        newest = find_job(session, tenant=TENANT, key="out", value="/tmp/a.jsonl")
        assert find_job(session, tenant=TENANT, key="out", value="/tmp/b.jsonl") is None
        assert find_job(session, tenant=TENANT, key="missing", value="/tmp/a.jsonl") is None
    assert newest is not None and newest.id == tagged[1]
    assert newest.metadata == {"out": "/tmp/a.jsonl", "n": 1}
