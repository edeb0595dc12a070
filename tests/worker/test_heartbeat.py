"""Worker heartbeats: a thread that keeps a worker live, leaves cleanly, and shrugs off a store
that cannot be reached."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import datetime

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from genq.store import make_engine, session_factory, upgrade
from genq.store.tables import WorkerHeartbeat
from genq.store.views import live_workers
from tests.integration.cluster import wait_for
from worker.heartbeat import Heartbeat


@pytest.fixture
def sessions(sqlite_url: Callable[[], str]) -> Iterator[sessionmaker[Session]]:
    url = sqlite_url()
    upgrade(url)
    engine = make_engine(url)
    yield session_factory(engine)
    engine.dispose()


def seen(sessions: sessionmaker[Session]) -> dict[str, datetime]:
    with sessions.begin() as session:
        rows = session.execute(select(WorkerHeartbeat.worker_id, WorkerHeartbeat.seen_at))
        return {worker_id: seen_at for worker_id, seen_at in rows}


def live(sessions: sessionmaker[Session]) -> dict[str, int]:
    with sessions.begin() as session:
        return live_workers(session, within_seconds=60)


def test_a_worker_beats_while_it_runs_and_its_row_goes_when_it_stops(
    sessions: sessionmaker[Session],
) -> None:
    beats = Heartbeat(sessions, worker_id="w1", model="tiny-gpt2", every=0.05)
    beats.start()
    first = wait_for(lambda: seen(sessions).get("w1"), timeout=10, what="the first beat")
    assert live(sessions) == {"tiny-gpt2": 1}
    wait_for(lambda: seen(sessions)["w1"] > first, timeout=10, what="a later beat")
    beats.stop(timeout=5)
    assert (seen(sessions), live(sessions)) == ({}, {})
    assert not beats._thread.is_alive()


class Unreachable:
    """Sessions whose every transaction fails, as when the database is away."""

    def __init__(self) -> None:
        self.tries = 0

    def begin(self) -> Session:
        self.tries += 1
        raise ConnectionError("database unreachable")


def test_missed_beats_are_logged_and_the_thread_keeps_trying(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = Unreachable()
    beats = Heartbeat(store, worker_id="w1", model="tiny-gpt2", every=0.01)  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="worker.heartbeat"):
        beats.start()
        wait_for(lambda: store.tries >= 3, timeout=10, what="three tries")
        assert beats._thread.is_alive()
        beats.stop(timeout=5)  # dropping the row fails too: it would age out
    failed = [r for r in caplog.records if r.getMessage() == "heartbeat of w1 failed"]
    assert len(failed) >= 3 and all(r.__dict__["worker_id"] == "w1" for r in failed)
    assert caplog.records[-1].getMessage() == "could not drop the heartbeat of w1"
