"""The reconciler on fakeredis: lost work is announced again, poison requests stop."""

from __future__ import annotations

from datetime import timedelta

import fakeredis
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from genq.params import GenerationParams
from genq.producer import CeleryPublisher
from genq.reconciler import reconcile_once
from genq.settings import Settings
from genq.store import NewRequest, RequestStatus, claim, create_job
from genq.store.tables import Request, utcnow
from tests.genq.conftest import messages

MODEL = "tiny-gpt2"


def test_a_pass_announces_lost_work_once_and_fails_what_is_out_of_attempts(
    redis_server: fakeredis.FakeServer,
    sessions: sessionmaker[Session],
    publisher: CeleryPublisher,
    settings: Settings,
) -> None:
    settings = settings.model_copy(update={"max_attempts": 2})
    long_ago = utcnow() - timedelta(seconds=100)
    with sessions.begin() as session:
        job_id = create_job(
            session,
            tenant="acme",
            model=MODEL,
            params=GenerationParams(),
            requests=[NewRequest(prompt=f"p{i}") for i in range(4)],
        )
        ids = list(
            session.scalars(
                select(Request.id).where(Request.job_id == job_id).order_by(Request.idx)
            )
        )
        # ids[0]: never announced (its producer died). ids[1]: its worker died once.
        # ids[2]: its workers died twice, out of attempts. ids[3]: held by a live worker.
        for times, request_id in [(1, ids[1]), (2, ids[2])]:
            for attempt in range(times):
                claim(
                    session,
                    worker_id="dead",
                    model=MODEL,
                    lease_seconds=1,
                    request_ids=[request_id],
                    now=long_ago + timedelta(seconds=10 * attempt),
                )
        claim(session, worker_id="live", model=MODEL, lease_seconds=600, request_ids=[ids[3]])
    report = reconcile_once(sessions, publisher, settings)
    assert report.failed == (ids[2],)
    assert (set(report.unannounced), set(report.expired)) == ({ids[0]}, {ids[1]})
    named = [i for _, kwargs in messages(redis_server, MODEL) for i in kwargs["request_ids"]]
    assert sorted(named) == sorted(ids[:2])
    with sessions.begin() as session:
        error = session.scalar(select(Request.error).where(Request.id == ids[2]))
        status = session.scalar(select(Request.status).where(Request.id == ids[2]))
    assert (status, error) == (RequestStatus.FAILED, "gave up after 2 attempts: worker lost")
    # Announced now: the next pass leaves them to their messages.
    again = reconcile_once(sessions, publisher, settings)
    assert again.announcements == () and again.failed == ()
    assert len(messages(redis_server, MODEL)) == 1


def test_a_pass_with_redis_down_announces_at_the_next_one(
    redis_server: fakeredis.FakeServer,
    sessions: sessionmaker[Session],
    publisher: CeleryPublisher,
    settings: Settings,
) -> None:
    with sessions.begin() as session:
        create_job(
            session,
            tenant="acme",
            model=MODEL,
            params=GenerationParams(),
            requests=[NewRequest(prompt="p")],
        )
    redis_server.connected = False
    assert len(reconcile_once(sessions, publisher, settings).unannounced) == 1
    redis_server.connected = True
    assert messages(redis_server, MODEL) == []
    assert len(reconcile_once(sessions, publisher, settings).unannounced) == 1
    assert len(messages(redis_server, MODEL)) == 1
