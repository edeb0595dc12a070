"""The dependencies' promises: a checked key is trusted for ``key_cache_seconds`` and no longer
(so a revoked key stops working within it); short reads stay on the event loop, for SQLite on a
held connection and for PostgreSQL through its async driver while the app is served, else in
the thread pool; the API's pool for PostgreSQL is bounded."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest
from sqlalchemy import Connection, Engine, create_engine, insert, text, update

from api.context import Context, build_context
from api.deps import run_read
from api.reads import autocommitted
from genq.auth import hash_key
from genq.settings import Settings
from genq.store import session_factory
from genq.store.tables import ApiKey, utcnow
from tests.api.conftest import Service


def _revoke(service: Service, tenant: str) -> None:
    with service.context.sessions.begin() as session:
        session.execute(
            update(ApiKey)
            .where(ApiKey.key_hash == hash_key(service.keys[tenant]))
            .values(revoked_at=utcnow())
        )


def _status(service: Service, headers: dict[str, str]) -> int:
    return service.client.get("/v1/jobs", headers=headers).status_code


def test_a_revoked_key_works_until_the_cache_time_has_passed_then_never(
    make_service: Callable[..., Service],
) -> None:
    service = make_service(key_cache_seconds=5.0)
    now = [1000.0]
    service.context.keys.clock = lambda: now[0]
    assert _status(service, service.as_("a")) == 200
    _revoke(service, "a")
    now[0] += 4.9
    assert _status(service, service.as_("a")) == 200
    now[0] += 0.2
    assert _status(service, service.as_("a")) == 401
    now[0] += 60
    assert _status(service, service.as_("a")) == 401
    assert _status(service, service.as_("b")) == 200


def test_with_no_cache_time_a_revoked_key_stops_at_once(
    make_service: Callable[..., Service],
) -> None:
    service = make_service(key_cache_seconds=0)
    assert _status(service, service.as_("a")) == 200
    _revoke(service, "a")
    assert _status(service, service.as_("a")) == 401


def test_an_unknown_key_is_not_remembered(make_service: Callable[..., Service]) -> None:
    service = make_service(key_cache_seconds=5.0)
    key = "gq_created-after-a-first-try"
    headers = {"Authorization": f"Bearer {key}"}
    assert _status(service, headers) == 401
    with service.context.sessions.begin() as session:
        row = {"id": "key_late", "tenant": "a", "key_hash": hash_key(key), "prefix": key[:10]}
        session.execute(insert(ApiKey).values(**row, created_at=utcnow(), revoked_at=None))
    assert _status(service, headers) == 200


def _threads(context: Context) -> tuple[int, int]:
    """The event loop's thread and the one ``run_read`` ran its query on."""

    async def main() -> tuple[int, int]:
        ran_on = await run_read(context, lambda _session: threading.get_ident())
        return threading.get_ident(), ran_on

    return asyncio.run(main())


def test_reads_run_on_the_event_loop_for_sqlite(make_service: Callable[..., Service]) -> None:
    context = make_service().context
    assert context.inline is not None
    loop, ran_on = _threads(context)
    assert ran_on == loop


def test_reads_go_to_the_thread_pool_for_a_networked_database(
    postgres_url: Callable[[], str],
) -> None:
    engine = create_engine(postgres_url())
    context = Context(Settings(), session_factory(engine), None)
    assert context.inline is None
    try:
        loop, ran_on = _threads(context)
    finally:
        engine.dispose()
    assert ran_on != loop


def test_reads_run_on_the_serving_loop_for_a_networked_database(
    postgres_url: Callable[[], str],
) -> None:
    engine = create_engine(postgres_url())
    context = Context(Settings(), session_factory(engine), None)
    assert context.loop_reads is not None

    async def main() -> tuple[int, tuple[int, int]]:
        assert context.loop_reads is not None
        await context.loop_reads.open()  # as the app's lifespan does
        try:
            ran = await run_read(
                context, lambda c: (threading.get_ident(), c.scalar(text("SELECT 41 + 1")))
            )
        finally:
            await context.loop_reads.close()
        return threading.get_ident(), ran

    try:
        loop, (ran_on, answer) = asyncio.run(main())
    finally:
        engine.dispose()
    assert (ran_on, answer) == (loop, 42)


def test_a_served_app_polls_postgresql_without_the_thread_pool(
    make_service: Callable[..., Service],
    postgres_url: Callable[[], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service = make_service(database_url=postgres_url())
    headers = service.as_("a")
    job_id = service.client.post(
        "/v1/jobs", json={"requests": [{"prompt": "x"}, {"prompt": "y"}]}, headers=headers
    ).json()["id"]

    pooled: list[object] = []

    def in_thread_pool(engine: Engine, query: Callable[[Connection], object]) -> object:
        pooled.append(query)
        return autocommitted(engine, query)

    monkeypatch.setattr("api.deps.autocommitted", in_thread_pool)
    with service.client as client:  # runs the app's lifespan, which opens the loop's reads
        job = client.get(f"/v1/jobs/{job_id}", headers=headers)
        other = client.get(f"/v1/jobs/{job_id}", headers=service.as_("b"))
        assert pooled == []  # the key, the job and its standing: on the loop
        # A page of results, several statements and many rows, goes to the thread pool.
        page = client.get(f"/v1/jobs/{job_id}/results", headers=headers)
        assert len(pooled) == 1
    assert job.status_code == 200 and job.json()["counts"]["total"] == 2
    assert other.status_code == 404
    assert page.status_code == 200 and page.json()["data"] == [] and page.json()["has_more"]


def test_the_api_pool_on_postgresql_keeps_its_connections_and_opens_no_more(
    postgres_url: Callable[[], str],
) -> None:
    settings = Settings(database_url=postgres_url(), api_db_connections=3)
    context = build_context(settings, distributed=False)
    try:
        pool = context.engine.pool
        assert pool.size() == 3
        assert pool._max_overflow == 0  # type: ignore[attr-defined]
    finally:
        context.engine.dispose()
