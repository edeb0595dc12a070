"""The reads that polls run: the held SQLite connection sees every commit, steps aside when
busy, and is replaced when it breaks; polls of one job share a read for the cache time."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

import pytest
from sqlalchemy import Connection, text, update
from sqlalchemy.exc import OperationalError

from api import deps
from api.context import Context
from api.reads import InlineReader
from genq.store.tables import Job
from tests.api.conftest import Service
from tests.api.support import prompts

T = TypeVar("T")


def _submit(service: Service, tenant: str = "a") -> str:
    answer = service.client.post("/v1/jobs", json=prompts(3), headers=service.as_(tenant))
    assert answer.status_code == 202, answer.text
    return str(answer.json()["id"])


def _set_succeeded(service: Service, job_id: str, succeeded: int) -> None:
    with service.context.sessions.begin() as session:
        session.execute(update(Job).where(Job.id == job_id).values(succeeded=succeeded))


def _succeeded(connection: Connection, job_id: str) -> int:
    return int(
        connection.execute(
            text("SELECT succeeded FROM jobs WHERE id = :id"), {"id": job_id}
        ).scalar_one()
    )


def test_the_held_connection_sees_each_commit(make_service: Callable[..., Service]) -> None:
    service = make_service()
    job_id = _submit(service)
    reader = InlineReader(service.context.engine)
    assert reader.read(lambda c: _succeeded(c, job_id)) == 0
    _set_succeeded(service, job_id, 2)
    assert reader.read(lambda c: _succeeded(c, job_id)) == 2


def test_a_busy_reader_reads_on_a_pooled_connection(make_service: Callable[..., Service]) -> None:
    reader = InlineReader(make_service().context.engine)
    held = reader.read(lambda c: c)
    assert reader.read(lambda c: c) is held
    used: list[Connection] = []
    reader._lock.acquire()  # another event loop thread is reading
    try:
        # In a thread, so that a read waiting for the lock fails the test instead of hanging it.
        thread = threading.Thread(target=lambda: used.append(reader.read(lambda c: c)))
        thread.start()
        thread.join(timeout=10)
    finally:
        reader._lock.release()
    assert not thread.is_alive() and used and used[0] is not held


def test_a_database_error_replaces_the_connection(make_service: Callable[..., Service]) -> None:
    reader = InlineReader(make_service().context.engine)
    held = reader.read(lambda c: c)
    with pytest.raises(OperationalError):
        reader.read(lambda c: c.execute(text("SELECT * FROM no_such_table")))
    assert held.closed
    fresh = reader.read(lambda c: c)
    assert fresh is not held and fresh.execute(text("SELECT 1")).scalar_one() == 1


def test_polls_share_a_read_for_the_cache_time(make_service: Callable[..., Service]) -> None:
    service = make_service(job_cache_seconds=60)
    now = [1000.0]
    service.context.jobs.clock = lambda: now[0]
    job_id = _submit(service)
    poll = lambda: service.client.get(f"/v1/jobs/{job_id}", headers=service.as_("a")).json()  # noqa: E731
    assert poll()["counts"]["succeeded"] == 0
    _set_succeeded(service, job_id, 2)
    assert poll()["counts"]["succeeded"] == 0  # the read of a moment ago
    now[0] += 61
    assert poll()["counts"]["succeeded"] == 2


def test_a_cancel_shows_at_once(make_service: Callable[..., Service]) -> None:
    service = make_service(job_cache_seconds=60)
    job_id = _submit(service)
    a = service.as_("a")
    assert service.client.get(f"/v1/jobs/{job_id}", headers=a).json()["status"] == "queued"
    assert service.client.post(f"/v1/jobs/{job_id}/cancel", headers=a).status_code == 200
    assert service.client.get(f"/v1/jobs/{job_id}", headers=a).json()["status"] == "cancelled"


def test_another_tenant_never_gets_a_cached_job(make_service: Callable[..., Service]) -> None:
    service = make_service(job_cache_seconds=60)
    job_id = _submit(service, "a")
    assert service.client.get(f"/v1/jobs/{job_id}", headers=service.as_("a")).status_code == 200
    assert service.client.get(f"/v1/jobs/{job_id}", headers=service.as_("b")).status_code == 404


def test_with_no_cache_time_every_poll_reads(make_service: Callable[..., Service]) -> None:
    service = make_service(job_cache_seconds=0)
    job_id = _submit(service)
    poll = lambda: service.client.get(f"/v1/jobs/{job_id}", headers=service.as_("a")).json()  # noqa: E731
    assert poll()["counts"]["succeeded"] == 0
    _set_succeeded(service, job_id, 2)
    assert poll()["counts"]["succeeded"] == 2


def test_a_read_that_finishes_late_never_hides_a_cancel(
    make_service: Callable[..., Service], monkeypatch: pytest.MonkeyPatch
) -> None:
    service = make_service(job_cache_seconds=60)
    job_id = _submit(service)
    a = service.as_("a")
    real = deps.run_read

    async def cancel_during_the_read(context: Context, query: Callable[[Connection], T]) -> T:
        job = await real(context, query)  # the job as it was: queued
        monkeypatch.setattr(deps, "run_read", real)
        assert service.client.post(f"/v1/jobs/{job_id}/cancel", headers=a).status_code == 200
        return job

    monkeypatch.setattr(deps, "run_read", cancel_during_the_read)
    assert service.client.get(f"/v1/jobs/{job_id}", headers=a).json()["status"] == "queued"
    assert service.client.get(f"/v1/jobs/{job_id}", headers=a).json()["status"] == "cancelled"
