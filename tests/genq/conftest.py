"""Fixtures for the torch-free core: a fake Redis behind Celery, a store, a publisher."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from typing import Any

import fakeredis
import kombu.transport.redis
import pytest
from sqlalchemy.orm import Session, sessionmaker

from genq.producer import CeleryPublisher, queue_for
from genq.settings import Settings
from genq.store import make_engine, session_factory, upgrade
from worker.celery_app import make_celery


@pytest.fixture
def redis_server(monkeypatch: pytest.MonkeyPatch) -> fakeredis.FakeServer:
    """A fake Redis behind kombu's Redis transport; ``connected = False`` takes it down."""
    server = fakeredis.FakeServer()

    class Connection(fakeredis.FakeRedisConnection):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, server=server, **kwargs)

    monkeypatch.setattr(kombu.transport.redis.Channel, "connection_class", Connection)
    return server


@pytest.fixture
def settings(sqlite_url: Callable[[], str]) -> Settings:
    return Settings(database_url=sqlite_url(), redis_url="redis://127.0.0.1:1/0", message_size=2)


@pytest.fixture
def sessions(settings: Settings) -> Iterator[sessionmaker[Session]]:
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    yield session_factory(engine)
    engine.dispose()


@pytest.fixture
def publisher(settings: Settings) -> Iterator[CeleryPublisher]:
    publisher = CeleryPublisher(make_celery(settings))
    yield publisher
    publisher.close()


def messages(server: fakeredis.FakeServer, model: str) -> list[tuple[str, dict[str, Any]]]:
    """(task name, kwargs) of each message waiting on ``model``'s queue, oldest first."""
    client = fakeredis.FakeRedis(server=server)
    found = []
    for raw in reversed(client.lrange(queue_for(model), 0, -1)):  # LPUSH: newest first
        envelope = json.loads(raw)
        _, kwargs, _ = json.loads(base64.b64decode(envelope["body"]))
        found.append((envelope["headers"]["task"], kwargs))
    return found
