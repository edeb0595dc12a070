"""FastAPI dependencies: the context, a session per request, the caller's tenant; and
:func:`run_read` for the short reads of hot routes.

The dependencies that only read the context are ``async``: FastAPI runs a sync dependency (and
a sync route, and then its response's validation) in its thread pool, and each trip there and
back costs a poll more CPU than its database read, on a loaded machine many times more."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from functools import partial
from typing import Annotated, TypeVar

from fastapi import Depends, Header, Request
from sqlalchemy import Connection
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from api.context import Context
from api.reads import autocommitted
from genq.auth import bearer_key, hash_key, tenant_of
from genq.settings import Settings
from genq.ttlcache import TtlCache

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


async def get_context(request: Request) -> Context:
    context: Context = request.app.state.context
    return context


ContextDep = Annotated[Context, Depends(get_context)]


async def get_sessions(context: ContextDep) -> sessionmaker[Session]:
    return context.sessions


async def get_settings(context: ContextDep) -> Settings:
    return context.settings


SessionsDep = Annotated[sessionmaker[Session], Depends(get_sessions)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_session(sessions: SessionsDep) -> Iterator[Session]:
    """One transaction per request, committed when the route returns without error."""
    with sessions.begin() as session:
        yield session


# scope="function": commit before the response goes out. With the default, FastAPI sends the
# response first, so a client could act on what it read (a new file id) before it is committed.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


async def run_read(
    context: Context, query: Callable[[Connection], T], *, on_loop: bool = True
) -> T:
    """``query(connection)`` on a bare connection in autocommit mode: a session's bookkeeping,
    and BEGIN and COMMIT, would cost more than the read. Each statement sees the last commit, so
    a query of several statements reads first what later ones can only find further on (a job,
    then its results). On SQLite it runs right on the event loop (see
    :class:`api.reads.InlineReader`): the database is a file in this process, a read by key
    takes a fraction of a millisecond and, in WAL mode, never waits for a writer, so the thread
    pool would cost more than the read. A networked database is read through its async driver
    on the loop that serves the app (:class:`api.reads.LoopReads`), or else in the thread
    pool. A query of several statements that returns many rows goes to the thread pool
    (``on_loop=False``): on a loop busy with many clients each statement's wait costs a turn
    of the loop, so that the read would hold its connection for several."""
    if context.inline is not None:
        return context.inline.read(query)
    if on_loop and context.loop_reads is not None and context.loop_reads.serving():
        return await context.loop_reads.read(query)
    return await run_in_threadpool(autocommitted, context.reads, query)


async def cached_read(
    context: Context,
    cache: TtlCache[K, V],
    key: K,
    query: Callable[[Connection], V],
    *,
    keep: Callable[[V, V], bool] = lambda _held, _read: False,
) -> V:
    """The value ``cache`` holds for ``key``, or else ``query`` read by :func:`run_read` and
    put in ``cache`` (unless ``keep(held, read)`` says what it holds by then is to stay).

    On a networked database the reads are shared and run ahead of time
    (:meth:`api.reads.SharedReads.cached`). On SQLite a read runs on the event loop without a
    pause that another caller could join, and with a cache that remembers nothing (ttl 0)
    every caller reads for itself."""

    async def read() -> V:
        found = await run_read(context, query)
        cache.put_unless(key, found, keep)
        return found

    if context.inline is None and cache.ttl > 0:
        return await context.shared.cached(cache, key, read)
    value = cache.get(key)
    return value if value is not None else await read()


async def get_tenant(
    context: ContextDep, authorization: Annotated[str | None, Header()] = None
) -> str:
    """The caller's tenant: from the context's key cache, or else the database."""
    key_hash = hash_key(bearer_key(authorization))
    tenant = await cached_read(
        context, context.keys, key_hash, partial(tenant_of, key_hash=key_hash)
    )
    context.key_use.mark(key_hash)
    return tenant


TenantDep = Annotated[str, Depends(get_tenant)]
