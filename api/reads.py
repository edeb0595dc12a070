"""Short reads for the routes clients poll: in a transaction of their own on a pooled
connection, or, for SQLite, on a connection held for reads on the event loop."""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Awaitable, Callable, Hashable
from functools import partial
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

T = TypeVar("T")


def in_transaction(engine: Engine, query: Callable[[Connection], T]) -> T:
    """``query(connection)`` on a pooled connection, in a transaction of its own."""
    with engine.begin() as connection:
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
    """Reads by key that callers arriving together share: the first runs it as a task of its
    own, and the others, until it ends, await that task instead of reading again. When a cached
    value expires, the many clients polling it cost one read, not one each at the same moment
    (which would queue them all behind the pool's connections).

    A caller that goes away (its client disconnected) does not cancel the read for the others.
    Reads are kept per event loop: a task belongs to the loop it runs on."""

    def __init__(self) -> None:
        self._running: dict[tuple[int, Hashable], asyncio.Task[Any]] = {}

    async def read(self, key: Hashable, run: Callable[[], Awaitable[T]]) -> T:
        slot = (id(asyncio.get_running_loop()), key)
        task = self._running.get(slot)
        if task is None:
            task = asyncio.ensure_future(run())
            self._running[slot] = task
            task.add_done_callback(partial(self._ended, slot))
        result: T = await asyncio.shield(task)
        return result

    def _ended(self, slot: tuple[int, Hashable], task: asyncio.Task[Any]) -> None:
        if self._running.get(slot) is task:
            del self._running[slot]
        if not task.cancelled():
            task.exception()  # retrieved: where every caller went away, nobody else will
