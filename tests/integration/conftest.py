"""Integration fixtures: a real redis-server per test, a fresh PostgreSQL database per test, and
a cluster of real ``genq worker`` processes on tiny-gpt2 (killed at teardown)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from genq.store import upgrade
from tests.integration.cluster import Cluster, RedisServer
from tests.worker.conftest import tiny, tiny_cache
from worker.models import LoadedModel

__all__ = ["tiny", "tiny_cache"]  # the model the workers load, built once per session


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A started redis-server on a free port of 127.0.0.1; ``restart()`` empties it."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server not installed: apt install redis-server")
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def cluster(
    postgres_url: Callable[[], str],
    redis_server: RedisServer,
    tiny: LoadedModel,
    tiny_cache: Path,
    tmp_path: Path,
) -> Iterator[Cluster]:
    """Workers, a Redis and a PostgreSQL database at the newest schema; start workers with
    ``cluster.start_worker()``. Worker logs are printed when a test fails."""
    url = postgres_url()
    upgrade(url)
    logs = tmp_path / "logs"
    logs.mkdir()
    # tiny-gpt2 is built here (the tiny fixture), so workers only load it.
    built = Cluster(database_url=url, redis=redis_server, model_cache=tiny_cache, logs=logs)
    try:
        yield built
    finally:
        built.close()
        for log in sorted(logs.iterdir()):
            print(f"----- {log.name}\n{log.read_text(errors='replace')[-4000:]}")
