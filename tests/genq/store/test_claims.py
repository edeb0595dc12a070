from __future__ import annotations

import pytest
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from genq.params import GenerationParams
from genq.store import (
    JobStatus,
    NewRequest,
    Outcome,
    RequestStatus,
    claim,
    complete,
    complete_many,
    create_job,
    get_job,
    list_results,
    release,
)
from genq.store.tables import Request, Result
from tests.conftest import Database
from tests.genq.store.support import (
    LEASE,
    MODEL,
    TENANT,
    add_job,
    at,
    count,
    ok,
    request_ids,
    statuses,
)

R = RequestStatus


def test_claim_named_requests(store: Database) -> None:
    with store.sessions.begin() as session:
        job_id = add_job(session, n=4)
        ids = request_ids(session, job_id)
    with store.sessions.begin() as session:
        claims = claim(
            session,
            worker_id="w1",
            model=MODEL,
            lease_seconds=LEASE,
            request_ids=ids[1:3],
            now=at(1),
        )
    assert sorted(c.request_id for c in claims) == sorted(ids[1:3])
    assert {(c.fence, c.attempts, c.job_id) for c in claims} == {(1, 1, job_id)}
    c = min(claims, key=lambda c: c.idx)
    assert (c.idx, c.custom_id, c.prompt, c.messages) == (1, "c1", "prompt 1", None)
    assert c.params == GenerationParams().model_dump(mode="json")  # the job's, filled in
    assert c.group_key == GenerationParams().group_key()
    with store.sessions.begin() as session:
        assert statuses(session, job_id) == [R.QUEUED, R.RUNNING, R.RUNNING, R.QUEUED]
        row = session.get_one(Request, ids[1])
        assert (row.lease_owner, row.lease_expires_at) == ("w1", at(1 + LEASE))
        job = get_job(session, tenant=TENANT, job_id=job_id)
        assert (job.status, job.started_at) == (JobStatus.RUNNING, at(1))


def test_claim_any_takes_the_oldest_of_its_model(store: Database) -> None:
    with store.sessions.begin() as session:
        older = add_job(session, n=2, now=at(0))
        other_model = add_job(session, n=2, model="other", now=at(0))
        newer = add_job(session, n=2, now=at(1))
    with store.sessions.begin() as session:
        first = claim(session, worker_id="w", model=MODEL, lease_seconds=LEASE, limit=3, now=at(2))
        rest = claim(session, worker_id="w", model=MODEL, lease_seconds=LEASE, limit=3, now=at(2))
        expected = request_ids(session, older) + request_ids(session, newer)
        others = request_ids(session, other_model)
    assert [
        (c.job_id, c.idx) for c in sorted(first, key=lambda c: expected.index(c.request_id))
    ] == [
        (older, 0),
        (older, 1),
        (newer, 0),
    ]
    assert [c.request_id for c in rest] == expected[3:]
    assert not {c.request_id for c in first + rest} & set(others)


def test_a_live_lease_cannot_be_claimed_again(store: Database) -> None:
    with store.sessions.begin() as session:
        ids = request_ids(session, add_job(session, n=1))
    with store.sessions.begin() as session:
        assert len(claim(session, worker_id="w1", model=MODEL, lease_seconds=LEASE, now=at(0))) == 1
    with store.sessions.begin() as session:
        again = claim(
            session, worker_id="w2", model=MODEL, lease_seconds=LEASE, request_ids=ids, now=at(59)
        )
        any_ = claim(session, worker_id="w2", model=MODEL, lease_seconds=LEASE, now=at(59))
        wrong_model = claim(
            session, worker_id="w2", model="other", lease_seconds=LEASE, request_ids=ids, now=at(99)
        )
    assert (again, any_, wrong_model) == ([], [], [])


def test_an_expired_lease_moves_to_a_new_claim_and_fences_off_the_old(store: Database) -> None:
    with store.sessions.begin() as session:
        job_id = add_job(session, n=1)
        ids = request_ids(session, job_id)
    with store.sessions.begin() as session:
        (old,) = claim(session, worker_id="w1", model=MODEL, lease_seconds=LEASE, now=at(0))
    with store.sessions.begin() as session:
        (new,) = claim(
            session, worker_id="w2", model=MODEL, lease_seconds=LEASE, request_ids=ids, now=at(61)
        )
    assert (new.fence, new.attempts) == (old.fence + 1, 2)
    with store.sessions.begin() as session:
        # The first worker wakes up and reports: refused, nothing written.
        stale = complete(
            session, request_id=old.request_id, fence=old.fence, outcome=ok("stale"), now=at(62)
        )
        assert stale is False
        assert count(session, Result) == 0
        assert not release(session, request_id=old.request_id, fence=old.fence, now=at(62))
        assert session.get_one(Request, old.request_id).status == R.RUNNING
    with store.sessions.begin() as session:
        assert complete(
            session, request_id=new.request_id, fence=new.fence, outcome=ok("fresh"), now=at(63)
        )
    with store.sessions.begin() as session:
        (row,) = list_results(session, job_id=job_id)
        result = session.get_one(Result, new.request_id)
    assert row.choices[0].text == "fresh"
    assert (result.worker_id, result.fence) == ("w2", new.fence)


def test_a_request_completes_once(store: Database) -> None:
    with store.sessions.begin() as session:
        add_job(session, n=1)
    with store.sessions.begin() as session:
        (c,) = claim(session, worker_id="w", model=MODEL, lease_seconds=LEASE, now=at(0))
    with store.sessions.begin() as session:
        assert complete(session, request_id=c.request_id, fence=c.fence, outcome=ok("one"))
    with store.sessions.begin() as session:
        assert not complete(session, request_id=c.request_id, fence=c.fence, outcome=ok("two"))
        assert not complete(
            session, request_id=c.request_id, fence=c.fence, outcome=Outcome(error="late")
        )
    with store.sessions.begin() as session:
        assert count(session, Result) == 1
        assert session.scalar(select(Result.choices)) == [
            {"text": "one", "finish_reason": "length", "completion_tokens": 2}
        ]
        row = session.get_one(Request, c.request_id)
        assert (row.status, row.error) == (R.SUCCEEDED, None)
    # And the schema itself holds a second result out, whatever the code does.
    second = {
        "request_id": c.request_id,
        "choices": [],
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "fence": c.fence,
        "finished_at": at(9),
    }
    with pytest.raises(IntegrityError), store.sessions.begin() as session:
        session.execute(insert(Result), [second])


def test_counters_and_status_follow_completion(store: Database) -> None:
    with store.sessions.begin() as session:
        job_id = add_job(session, n=3)
    with store.sessions.begin() as session:
        a, b, c = sorted(
            claim(session, worker_id="w", model=MODEL, lease_seconds=LEASE), key=lambda c: c.idx
        )
    with store.sessions.begin() as session:
        done = complete_many(
            session,
            items=[
                (b.request_id, b.fence, Outcome(error="prompt too long", prompt_tokens=9)),
                (a.request_id, a.fence, ok(tokens=3, prompt_tokens=4)),
                (a.request_id, a.fence + 1, ok()),  # a wrong fence in the same batch
            ],
            now=at(5),
        )
        assert done == [True, True, False]
        job = get_job(session, tenant=TENANT, job_id=job_id)
        assert (job.status, job.succeeded, job.failed, job.finished_at) == (
            JobStatus.RUNNING,
            1,
            1,
            None,
        )
    with store.sessions.begin() as session:
        assert complete(session, request_id=c.request_id, fence=c.fence, outcome=ok(), now=at(7))
    with store.sessions.begin() as session:
        job = get_job(session, tenant=TENANT, job_id=job_id)
        rows = list_results(session, job_id=job_id)
    assert (job.status, job.total, job.succeeded, job.failed, job.cancelled) == (
        JobStatus.COMPLETED,
        3,
        2,
        1,
        0,
    )
    assert (job.prompt_tokens, job.completion_tokens, job.finished_at) == (4 + 9 + 5, 3 + 2, at(7))
    assert [(r.status, r.error) for r in rows] == [
        (R.SUCCEEDED, None),
        (R.FAILED, "prompt too long"),
        (R.SUCCEEDED, None),
    ]


def test_release_gives_the_attempt_back_unless_it_failed(store: Database) -> None:
    with store.sessions.begin() as session:
        ids = request_ids(session, add_job(session, n=2))
    with store.sessions.begin() as session:
        first, second = sorted(
            claim(session, worker_id="w", model=MODEL, lease_seconds=LEASE, now=at(0)),
            key=lambda c: c.idx,
        )
    with store.sessions.begin() as session:
        assert release(session, request_id=first.request_id, fence=first.fence, now=at(1))
        assert release(
            session, request_id=second.request_id, fence=second.fence, error="CUDA error", now=at(1)
        )
    with store.sessions.begin() as session:
        rows = [session.get_one(Request, i) for i in ids]
        assert [(r.status, r.attempts, r.fence, r.error, r.lease_owner) for r in rows] == [
            (R.QUEUED, 0, 1, None, None),
            (R.QUEUED, 1, 1, "CUDA error", None),
        ]
        again = claim(session, worker_id="w2", model=MODEL, lease_seconds=LEASE, now=at(2))
    assert sorted((c.idx, c.fence) for c in again) == [(0, 2), (1, 2)]


def test_a_request_out_of_attempts_is_not_claimed(store: Database) -> None:
    with store.sessions.begin() as session:
        add_job(session, n=1)
    for attempt in range(2):
        with store.sessions.begin() as session:
            got = claim(
                session,
                worker_id="w",
                model=MODEL,
                lease_seconds=LEASE,
                max_attempts=2,
                now=at(100 * attempt),
            )
            assert [c.attempts for c in got] == [attempt + 1]
    with store.sessions.begin() as session:
        assert (
            claim(
                session,
                worker_id="w",
                model=MODEL,
                lease_seconds=LEASE,
                max_attempts=2,
                now=at(500),
            )
            == []
        )


def test_chat_requests_claim_their_messages(store: Database) -> None:
    messages = ({"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"})
    with store.sessions.begin() as session:
        create_job(
            session,
            tenant=TENANT,
            model=MODEL,
            params=GenerationParams(),
            requests=[NewRequest(messages=messages)],
        )
    with store.sessions.begin() as session:
        (c,) = claim(session, worker_id="w", model=MODEL, lease_seconds=LEASE)
    assert (c.prompt, c.messages) == (None, list(messages))


def test_claim_narrows_to_a_parameter_set_and_a_job(store: Database) -> None:
    short, long_ = GenerationParams(max_new_tokens=4), GenerationParams(max_new_tokens=40)
    with store.sessions.begin() as session:
        a = add_job(session, n=2, params=short, now=at(0))
        b = add_job(session, n=2, params=long_, now=at(1))
        c = add_job(session, n=2, params=short, now=at(2))
        ids = {job: request_ids(session, job) for job in (a, b, c)}
    with store.sessions.begin() as session:
        same_set = claim(
            session, worker_id="w", model=MODEL, lease_seconds=LEASE, group_key=short.group_key()
        )
        one_job = claim(session, worker_id="w", model=MODEL, lease_seconds=LEASE, job_id=b)
    assert sorted(c.request_id for c in same_set) == sorted(ids[a] + ids[c])
    assert {c.group_key for c in same_set} == {short.group_key()}
    assert sorted(c.request_id for c in one_job) == sorted(ids[b])
    with store.sessions.begin() as session:
        job_id = add_job(session, n=2, params=short, now=at(3))
        named = request_ids(session, job_id)
        # A name outside the set is not taken even when named.
        assert (
            claim(
                session,
                worker_id="w",
                model=MODEL,
                lease_seconds=LEASE,
                request_ids=named,
                group_key=long_.group_key(),
            )
            == []
        )
