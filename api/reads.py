"""Short reads for the routes clients poll: for PostgreSQL on the serving event loop through
psycopg's async driver (or, outside a served app, on a pooled connection in the thread pool);
for SQLite on a connection held for reads on the event loop."""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Awaitable, Callable, Hashable
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import URL, Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from genq.ttlcache import TtlCache

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def in_transaction(engine: Engine, query: Callable[[Connection], T]) -> T:
    """``query(connection)`` on a pooled connection, in a transaction of its own."""
    with engine.begin() as connection:
        return query(connection)


def autocommitted(engine: Engine, query: Callable[[Connection], T]) -> T:
    """``query(connection)`` on a pooled connection of ``engine`` in autocommit mode: each
    statement sees the last commit, with no BEGIN and COMMIT around it (two round trips fewer
    to a networked database)."""
    with engine.connect() as connection:
        return query(connection)


class InlineReader:
    """Runs one-statement reads on one connection held for them, in autocommit mode. Checking
    a connection out of the pool and back in, with BEGIN and COMMIT around the read, costs more
    than twice the read itself. A single statement is atomic on its own: in WAL mode it sees the
    last commit and waits for no writer.

    A query must read its result to the end (``one_or_none``, ``scalar``): a cursor left open
    would hold its snapshot, and later reads would see the database as it was then.

    One thread at a time reads on the held connection; a read that finds it busy (an event
    loop in another thread) takes a pooled connection instead."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._lock = threading.Lock()
        self._connection: Connection | None = None
        self._close: weakref.finalize[..., InlineReader] | None = None

    def read(self, query: Callable[[Connection], T]) -> T:
        if not self._lock.acquire(blocking=False):
            return in_transaction(self._engine, query)
        try:
            connection = self._held()
            try:
                return query(connection)
            except DBAPIError:
                self._drop()  # whatever broke, the next read starts on a fresh connection
                raise
        finally:
            self._lock.release()

    def _held(self) -> Connection:
        if self._connection is None:
            connection = self._engine.connect()
            try:
                connection.execution_options(isolation_level="AUTOCOMMIT")
            except BaseException:
                connection.close()
                raise
            # Checked back in when the reader goes, so the pool never finds it abandoned.
            self._close = weakref.finalize(self, connection.close)
            self._connection = connection
        return self._connection

    def _drop(self) -> None:
        if self._close is not None:
            self._close()
        self._connection = None
        self._close = None


class SharedReads:
    """A cache's reads, shared by the callers that arrive while one runs, and run ahead of
    time while clients keep polling (:meth:`cached`).

    A read runs as a task of its own, so a caller that goes away (its client disconnected)
    does not cancel it for the others. Reads are kept per event loop: a task belongs to the
    loop it runs on."""

    def __init__(self) -> None:
        self._running: dict[tuple[int, Hashable], asyncio.Task[Any]] = {}

    async def cached(
        self,
        cache: TtlCache[K, V],
        key: K,
        read: Callable[[], Awaitable[V]],
    ) -> V:
        """The value ``cache`` holds for ``key``, where ``read()`` reads it and puts it there.

        - In the first half of its time it is the answer.
        - In the second half it is still the answer, and the first caller to find it so starts
          a read of it in the background. While clients keep polling, none waits for the
          database.
        - Once expired, while a read of it runs, it is still the answer, for up to another
          ``ttl``. Under load, a read can take longer than half the time to finish.
        - Otherwise, when it is older or missing, the caller awaits a read. Callers that
          arrive meanwhile await the same read.

        What a caller gets is at most twice the cache's time old."""
        slot = (id(cache), key)
        held = cache.lookup(key)
        if held is not None:
            value, left = held
            if left > 0:
                if left < cache.ttl / 2:
                    self._start(slot, read)
                return value
            if left > -cache.ttl and self._runs(slot):
                return value
        result: V = await asyncio.shield(self._start(slot, read))
        return result

    async def share(self, key: Hashable, read: Callable[[], Awaitable[T]]) -> T:
        """The result of the read of ``key`` running now, or else of ``read()``, started now:
        what a caller gets was read after it arrived or, at most, by a read already running."""
        result: T = await asyncio.shield(self._start(("shared", key), read))
        return result

    def _runs(self, slot: Hashable) -> bool:
        return (id(asyncio.get_running_loop()), slot) in self._running

    def _start(self, slot: Hashable, read: Callable[[], Awaitable[T]]) -> asyncio.Task[T]:
        """The read of ``slot`` running now, or else ``read()`` started as one."""
        running = (id(asyncio.get_running_loop()), slot)
        task = self._running.get(running)
        if task is None:
            task = asyncio.ensure_future(read())
            self._running[running] = task
            task.add_done_callback(partial(self._ended, running))
        return task

    def _ended(self, running: tuple[int, Hashable], task: asyncio.Task[Any]) -> None:
        if self._running.get(running) is task:
            del self._running[running]
        if not task.cancelled():
            task.exception()  # retrieved: where every caller went away, nobody else will


class LoopReads:
    """Reads through an async driver on the event loop that serves the app, for a networked
    database. Started with the app (:meth:`open`, in its lifespan) and closed with it.

    A read in the thread pool holds a thread, and the thread takes the GIL from the event loop
    at each of the read's steps: under many clients, the loop's answers to every other poll wait
    behind those hand-overs, and latency grows a long tail. On the loop, a read waits for the
    database as any other await does. The query functions stay synchronous: each runs on the
    async connection through SQLAlchemy's ``run_sync``.

    Only the loop that opened it reads through it (connections belong to their loop); other
    callers, such as a test client that starts a loop per request, read in the thread pool."""

    def __init__(self, url: URL | str, *, connections: int) -> None:
        self._url = make_url(url).set(drivername="postgresql+psycopg")
        self._connections = connections
        self._engine: AsyncEngine | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def open(self) -> None:
        self._engine = create_async_engine(
            self._url,
            isolation_level="AUTOCOMMIT",
            pool_size=self._connections,
            max_overflow=0,
        )
        self._loop = asyncio.get_running_loop()

    async def close(self) -> None:
        engine, self._engine, self._loop = self._engine, None, None
        if engine is not None:
            await engine.dispose()

    def serving(self) -> bool:
        """Whether the running loop is the one it reads on."""
        return self._engine is not None and asyncio.get_running_loop() is self._loop

    async def read(self, query: Callable[[Connection], T]) -> T:
        """``query(connection)`` on a pooled async connection, each statement autocommitted."""
        assert self._engine is not None, "LoopReads.read before open"
        async with self._engine.connect() as connection:
            return await connection.run_sync(query)
