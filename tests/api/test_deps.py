"""The dependencies' promises: a checked key is trusted for ``key_cache_seconds`` and no longer
(so a revoked key stops working within it); short reads stay on the event loop for SQLite only."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from sqlalchemy import create_engine, insert, update

from api.context import Context
from api.deps import run_read
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
