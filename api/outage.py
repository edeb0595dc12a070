"""A database that cannot be reached (down, restarting, busy) answers 503 with Retry-After on
every route, and the service recovers by itself: a pool replaces the connections that died as
they fail, so clients that retry after a moment get through once the database is back."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time

import psycopg
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from api.errors import error_response

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 1
"""What a 503 tells clients to wait."""

LOG_EVERY_SECONDS = 5.0
"""At most one log line this often: an outage under many clients must not flood the log."""

SQLITE_TRANSIENT = ("database is locked", "unable to open database file", "disk I/O error")
"""SQLite's operational errors that pass; "no such table" and the like are bugs, not outages."""


class Throttle:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._last = float("-inf")
        self._lock = threading.Lock()

    def ready(self) -> bool:
        """Whether ``seconds`` have passed since it last said so."""
        with self._lock:
            now = time.monotonic()
            if now - self._last < self.seconds:
                return False
            self._last = now
            return True


_log_throttle = Throttle(LOG_EVERY_SECONDS)


def is_unreachable(exc: Exception) -> bool:
    """Whether ``exc`` says the database cannot be reached now (rather than a bug)."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, DisconnectionError | PoolTimeout | psycopg.OperationalError):
        return True  # psycopg's own: a bulk insert's COPY raises it unwrapped
    if isinstance(exc, OperationalError | InterfaceError):
        if isinstance(exc.orig, sqlite3.Error):
            return any(text in str(exc.orig) for text in SQLITE_TRANSIENT)
        return True
    return False


def _answer(_request: Request, exc: Exception) -> JSONResponse:
    if not is_unreachable(exc):
        log.error("database error", exc_info=exc)
        return error_response(500, "internal error")
    if _log_throttle.ready():
        log.warning("database unavailable (answering 503): %s", str(exc).split("\n")[0])
    return error_response(
        503,
        "the database is unavailable; retry shortly",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def install(app: FastAPI) -> None:
    for kind in (OperationalError, InterfaceError, DisconnectionError, PoolTimeout):
        app.add_exception_handler(kind, _answer)
    app.add_exception_handler(psycopg.OperationalError, _answer)
