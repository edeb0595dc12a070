"""The producer on fakeredis: what lands on which queue, and what happens when Redis is away."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

import fakeredis
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from genq.errors import InvalidRequest
from genq.params import GenerationParams
from genq.producer import (
    GENERATE_TASK,
    CeleryPublisher,
    JobAnnouncer,
    announce,
    retry_job,
    stop_announcing,
    submit_job,
)
from genq.settings import Settings
from genq.store import Announcement, Choice, NewRequest, Outcome, claim, complete_many
from genq.store.tables import Job, Request
from tests.genq.conftest import messages
from worker.celery_app import make_celery

SHORT = GenerationParams(max_new_tokens=8)


def stored(sessions: sessionmaker[Session], job_id: str) -> list[tuple[str, str, bool]]:
    """(id, group key, announced) of the job's requests, in input order."""
    with sessions.begin() as session:
        rows = session.execute(
            select(Request.id, Request.group_key, Request.announced_at)
            .where(Request.job_id == job_id)
            .order_by(Request.idx)
        ).all()
    return [(row.id, row.group_key, row.announced_at is not None) for row in rows]


def prompts(n: int, params: GenerationParams | None = None) -> list[NewRequest]:
    return [NewRequest(custom_id=f"c{i}", prompt=f"prompt {i}", params=params) for i in range(n)]


def test_messages_go_to_the_queue_of_their_model_in_chunks_of_one_parameter_set(
    redis_server: fakeredis.FakeServer,
    sessions: sessionmaker[Session],
    publisher: CeleryPublisher,
    settings: Settings,
) -> None:
    mixed = prompts(3) + prompts(2, SHORT)
    job = submit_job(
        sessions,
        publisher,
        tenant="acme",
        model="tiny-gpt2",
        params=GenerationParams(),
        requests=mixed,
        settings=settings,
    )
    other = submit_job(
        sessions,
        publisher,
        tenant="acme",
        model="other-model",
        params=SHORT,
        requests=prompts(1),
        settings=settings,
    )
    rows = stored(sessions, job)
    assert all(announced for _, _, announced in rows + stored(sessions, other))
    sent = messages(redis_server, "tiny-gpt2")
    assert {name for name, _ in sent} == {GENERATE_TASK}
    assert {kwargs["model"] for _, kwargs in sent} == {"tiny-gpt2"}
    # Every request named exactly once, at most message_size ids a message, each message
    # naming requests of the parameter set it declares.
    named = [i for _, kwargs in sent for i in kwargs["request_ids"]]
    assert sorted(named) == sorted(i for i, _, _ in rows)
    key_of = {i: key for i, key, _ in rows}
    for _, kwargs in sent:
        assert 1 <= len(kwargs["request_ids"]) <= settings.message_size
        assert {key_of[i] for i in kwargs["request_ids"]} == {kwargs["group_key"]}
    assert sorted(len(kwargs["request_ids"]) for _, kwargs in sent) == [1, 2, 2]
    assert {kwargs["group_key"] for _, kwargs in sent} == {
        GenerationParams().group_key(),
        SHORT.group_key(),
    }
    (only,) = messages(redis_server, "other-model")
    assert only[1]["request_ids"] == [i for i, _, _ in stored(sessions, other)]


def test_a_job_submitted_while_redis_is_down_is_stored_and_announced_later(
    redis_server: fakeredis.FakeServer,
    sessions: sessionmaker[Session],
    publisher: CeleryPublisher,
    settings: Settings,
) -> None:
    redis_server.connected = False
    started = time.monotonic()
    job = submit_job(
        sessions,
        publisher,
        tenant="acme",
        model="tiny-gpt2",
        params=GenerationParams(),
        requests=prompts(3),
        settings=settings,
    )
    assert time.monotonic() - started < 2  # fails fast, no retry loop
    assert [announced for _, _, announced in stored(sessions, job)] == [False] * 3
    redis_server.connected = True
    assert messages(redis_server, "tiny-gpt2") == []
    assert announce(sessions, publisher, settings=settings) == 3
    assert all(announced for _, _, announced in stored(sessions, job))
    named = [i for _, kwargs in messages(redis_server, "tiny-gpt2") for i in kwargs["request_ids"]]
    assert sorted(named) == sorted(i for i, _, _ in stored(sessions, job))
    # Announced once: a second pass finds nothing left to announce.
    assert announce(sessions, publisher, settings=settings) == 0


def test_the_publisher_recovers_when_redis_comes_back(
    redis_server: fakeredis.FakeServer, sessions: sessionmaker[Session], settings: Settings
) -> None:
    publisher = CeleryPublisher(make_celery(settings))
    submit = partial(
        submit_job,
        sessions,
        publisher,
        tenant="acme",
        model="tiny-gpt2",
        params=GenerationParams(),
        settings=settings,
    )
    first = submit(requests=prompts(1))
    redis_server.connected = False
    second = submit(requests=prompts(1))
    redis_server.connected = True
    third = submit(requests=prompts(1))
    publisher.close()
    announced = {job: stored(sessions, job)[0][2] for job in (first, second, third)}
    assert announced == {first: True, second: False, third: True}
    assert len(messages(redis_server, "tiny-gpt2")) == 2


@pytest.mark.parametrize("model", ["", "two words", "x" * 201, "tab\tname"])
def test_a_bad_model_name_is_refused_before_anything_is_stored(
    redis_server: fakeredis.FakeServer,
    sessions: sessionmaker[Session],
    publisher: CeleryPublisher,
    model: str,
) -> None:
    with pytest.raises(InvalidRequest, match="^model:"):
        submit_job(
            sessions,
            publisher,
            tenant="acme",
            model=model,
            params=GenerationParams(),
            requests=prompts(1),
        )
    with sessions.begin() as session:
        assert session.scalar(select(Job.id)) is None


class Recording:
    """A publisher that records messages and, from its ``fail_at``-th call, fails; ``then``
    runs at that call instead when given."""

    def __init__(self, fail_at: int | None = None, then: Callable[[], None] | None = None):
        self.sent: list[str] = []
        self.calls = 0
        self.fail_at, self.then = fail_at, then

    def publish(self, message: Announcement) -> None:
        self.calls += 1
        if self.calls == self.fail_at:
            if self.then is None:
                raise ConnectionError("queue gone")
            self.then()
        self.sent.extend(message.request_ids)


def wait_announcers() -> None:
    for announcer in list(JobAnnouncer.running):
        announcer.join(timeout=30)
    assert not JobAnnouncer.running


@pytest.fixture
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pages of 4 requests (messages of 2, the settings'): a 10-request job has a tail."""
    monkeypatch.setattr("genq.producer.DEFAULT_REAP_LIMIT", 4)


@pytest.mark.usefixtures("small_pages")
def test_a_large_jobs_tail_is_announced_from_a_thread_each_request_once(
    redis_server: fakeredis.FakeServer,
    sessions: sessionmaker[Session],
    publisher: CeleryPublisher,
    settings: Settings,
) -> None:
    job = submit_job(
        sessions,
        publisher,
        tenant="acme",
        model="tiny-gpt2",
        params=GenerationParams(),
        requests=prompts(10),
        settings=settings,
    )
    wait_announcers()
    rows = stored(sessions, job)
    named = [i for _, kwargs in messages(redis_server, "tiny-gpt2") for i in kwargs["request_ids"]]
    assert named == [i for i, _, _ in rows]  # in input order, each once
    assert all(announced for _, _, announced in rows)


@pytest.mark.usefixtures("small_pages")
def test_what_a_failed_queue_left_unpublished_is_unmarked_for_the_reconciler(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    recording = Recording(fail_at=4)  # pages 1 (calls 1, 2) and half of page 2 go out
    job = submit_job(
        sessions,
        recording,
        tenant="acme",
        model="tiny-gpt2",
        params=GenerationParams(),
        requests=prompts(10),
        settings=settings,
    )
    wait_announcers()
    rows = stored(sessions, job)
    assert recording.sent == [i for i, _, _ in rows[:6]]
    assert [announced for _, _, announced in rows] == [True] * 6 + [False] * 4
    # The reconciler's pass announces exactly the rest.
    assert announce(sessions, Recording(), settings=settings) == 4


@pytest.mark.usefixtures("small_pages")
def test_an_announcer_stopped_at_shutdown_unmarks_what_it_did_not_publish(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    def shutdown() -> None:  # arrives while page 2 is being published
        for announcer in list(JobAnnouncer.running):
            announcer.stopping.set()

    recording = Recording(fail_at=3, then=shutdown)
    job = submit_job(
        sessions,
        recording,
        tenant="acme",
        model="tiny-gpt2",
        params=GenerationParams(),
        requests=prompts(10),
        settings=settings,
    )
    stop_announcing(timeout=30)
    wait_announcers()
    rows = stored(sessions, job)
    assert recording.sent == [i for i, _, _ in rows[:8]]  # page 2 finished, page 3 never began
    assert [announced for _, _, announced in rows] == [True] * 8 + [False] * 2


def test_a_retry_announces_the_requests_it_queued_again(
    sessions: sessionmaker[Session], settings: Settings
) -> None:
    job = submit_job(
        sessions,
        None,
        tenant="acme",
        model="tiny-gpt2",
        params=GenerationParams(),
        requests=prompts(5),
        settings=settings,
    )
    with sessions.begin() as session:
        claims = claim(session, worker_id="w", model="tiny-gpt2", lease_seconds=60)
        failing = {c.request_id for c in claims if c.idx in (0, 4)}
        done = Outcome(choices=(Choice("x", "length", 1),))
        outcomes = [
            (c.request_id, c.fence, Outcome(error="boom") if c.request_id in failing else done)
            for c in claims
        ]
        complete_many(session, items=outcomes)
    recording = Recording()
    info, count = retry_job(sessions, recording, tenant="acme", job_id=job, settings=settings)
    assert count == 2 and info.status == "queued"
    wait_announcers()
    assert sorted(recording.sent) == sorted(failing)  # each once, nothing else
    marked = {rid for rid, _, announced in stored(sessions, job) if announced}
    assert marked == failing
