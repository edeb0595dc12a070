"""Short reads for the routes clients poll: in a transaction of their own on a pooled
connection, or, for SQLite, on a connection held for reads on the event loop."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import TypeVar

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
