"""API fixtures: an app over a fresh upgraded SQLite database, keys for two tenants, and the
embedded worker on tiny-gpt2 (started on demand), all in process."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from api.app import create_app
from api.context import Context
from genq.auth import create_key
from genq.batch_finalizer import BatchFinalizer
from genq.settings import Settings
from genq.store import make_engine, session_factory, upgrade
from tests.worker.conftest import tiny, tiny_cache
from worker.models import LoadedModel
from worker.poller import Poller

__all__ = ["tiny", "tiny_cache"]


@dataclass
class Service:
    context: Context
    client: TestClient
    keys: dict[str, str]
    start_worker: Callable[[], Poller]

    def as_(self, tenant: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[tenant]}"}


@pytest.fixture
def make_service(tmp_path: Path, tiny_cache: Path) -> Iterator[Callable[..., Service]]:
    """Factory: ``make_service(**settings)`` -> a Service with tenants ``a`` and ``b``, on a new
    SQLite file unless ``database_url`` names another (empty) database; with a batch finalizer
    running unless ``finalize=False``."""
    pollers: list[Poller] = []
    clients: list[TestClient] = []
    engines: list[Engine] = []
    finalizers: list[BatchFinalizer] = []

    def make(*, finalize: bool = True, **overrides: object) -> Service:
        url = str(overrides.pop("database_url", f"sqlite:///{tmp_path / f'api-{len(clients)}.db'}"))
        upgrade(url)
        options: dict[str, object] = {
            "database_url": url,
            "model_cache": tiny_cache,
            "default_model": "tiny-gpt2",
            "buffer_seconds": 0.0,
            "device": "cpu",
        }
        settings = Settings(**{**options, **overrides})
        engine = make_engine(url)
        engines.append(engine)
        context = Context(settings, session_factory(engine), None)
        with context.sessions.begin() as session:
            keys = {t: create_key(session, tenant=t) for t in ("a", "b")}
        client = TestClient(create_app(context))
        clients.append(client)
        # The app's own finalizer runs in its lifespan, which a TestClient outside a with
        # block does not start: batches move on through this one.
        if finalize:
            finalizer = BatchFinalizer(context.sessions, every=0.05)
            finalizers.append(finalizer)
            finalizer.start()

        def start_worker() -> Poller:
            poller = Poller(settings, context.sessions, poll_seconds=0.05)
            pollers.append(poller)
            poller.start()
            return poller

        return Service(context, client, keys, start_worker)

    yield make
    for finalizer in finalizers:
        finalizer.stop(timeout=10)
    for poller in pollers:
        poller.stop()
        poller.join(timeout=60)
    for client in clients:
        client.close()
    for engine in engines:
        engine.dispose()


@pytest.fixture
def backend_service(
    make_service: Callable[..., Service], db_url: Callable[[], str], tiny: LoadedModel
) -> Callable[..., Service]:
    """Factory like ``make_service``, once on SQLite and once on PostgreSQL."""
    return lambda **settings: make_service(database_url=db_url(), **settings)


@pytest.fixture
def service(make_service: Callable[..., Service], tiny: LoadedModel) -> Service:
    """A service with the tiny model built (workers only load it)."""
    return make_service()


@pytest.fixture
def live_url(service: Service) -> Iterator[str]:
    """A uvicorn server over the service's app on a free loopback port: its base URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    server = uvicorn.Server(
        uvicorn.Config(create_app(service.context), host="127.0.0.1", port=port, log_level="error")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=20)
