"""Engines, sessions and the schema upgrade, the same for SQLite (embedded) and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from itertools import chain, islice
from pathlib import Path
from typing import Any, TypeAlias

from alembic import command
from alembic.config import Config
from psycopg.copy import QueuedLibpqWriter
from sqlalchemy import (
    JSON,
    Connection,
    Dialect,
    Engine,
    Table,
    TypeDecorator,
    create_engine,
    event,
    insert,
    make_url,
)
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.types import TypeEngine

from genq.store.tables import Base

# Alembic's directory: the top-level migrations/ next to the genq package, in a source checkout
# and in site-packages alike (the wheel ships it as a package: see pyproject.toml).
MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"

Reader: TypeAlias = Session | Connection
"""What a read runs on: a session, or a bare connection where a read is hot (a poll), since a
session's own bookkeeping costs more than a short read by key."""

SQLITE_BUSY_TIMEOUT_S = 30.0
"""How long a SQLite writer waits for another before giving up with 'database is locked'."""


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for ``url``. SQLite gets WAL (readers never block the writer), a busy timeout,
    foreign keys and cross-thread connections (an API thread and a worker thread share it)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, **kwargs)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    connect_args = {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S}
    engine = create_engine(url, connect_args=connect_args, **kwargs)
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    # Safe against a crash of the process in WAL mode (a power cut may lose the last commits),
    # with far fewer fsyncs than FULL.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions for the store functions, which never commit: open one transaction per unit of
    work with ``with factory.begin() as session: ...``."""
    return sessionmaker(engine, expire_on_commit=False)


INSERT_CHUNK = 10_000
"""Rows per executemany where there is no COPY (SQLite)."""


def bulk_insert(session: Session, entity: type[Base], rows: Iterable[dict[str, Any]]) -> int:
    """Insert many rows (all naming the same columns) in the session's transaction, reading
    ``rows`` as they come; returns how many. PostgreSQL gets one COPY for them all, sent by a
    thread of its own, so that making the next rows (parsing a file) overlaps the server
    storing the last ones: psycopg's executemany sends a statement per row (50,000 rows took
    ~6 s that way, COPY ~1.5 s). Elsewhere an executemany per :data:`INSERT_CHUNK` rows."""
    table = entity.__table__
    assert isinstance(table, Table)
    stream = iter(rows)
    first = next(stream, None)
    if first is None:
        return 0
    connection = session.connection()
    if connection.dialect.driver != "psycopg":
        count = 0
        pending = chain([first], stream)
        while chunk := list(islice(pending, INSERT_CHUNK)):
            session.execute(insert(table), chunk)
            count += len(chunk)
        return count
    names = list(first)
    # COPY bypasses SQLAlchemy's bind processing, so do the part that matters here by hand.
    convert = [_copy_converter(table.c[n].type, connection.dialect) for n in names]
    columns = ", ".join(connection.dialect.identifier_preparer.quote(n) for n in names)
    dbapi = connection.connection.driver_connection
    assert dbapi is not None
    count = 0
    statement = f"COPY {table.name} ({columns}) FROM STDIN"
    with (
        dbapi.cursor() as cursor,
        cursor.copy(statement, writer=QueuedLibpqWriter(cursor)) as copy,
    ):
        for row in chain([first], stream):
            copy.write_row([f(row[n]) for f, n in zip(convert, names, strict=True)])
            count += 1
    return count


def _copy_converter(type_: TypeEngine[Any], dialect: Dialect) -> Callable[[Any], Any]:
    if isinstance(type_, JSON):
        return lambda value: None if value is None else json.dumps(value)
    if isinstance(type_, TypeDecorator):  # UTCDateTime: refuses naive times, converts to UTC
        return lambda value: type_.process_bind_param(value, dialect)
    return lambda value: value


def alembic_config(url: str) -> Config:
    """Alembic's configuration built in code, so migrations run from anywhere (no alembic.ini).
    The URL travels in ``attributes``, not the ini options, where a ``%`` in it would break."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["url"] = url
    return config


def upgrade(url: str, *, revision: str = "head") -> None:
    """Bring the schema at ``url`` to ``revision``: the only way the schema is made."""
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, *, revision: str) -> None:
    command.downgrade(alembic_config(url), revision)
