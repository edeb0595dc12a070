"""Shared factory fixtures: empty databases on SQLite and PostgreSQL, and upgraded ones.

PostgreSQL runs as a throwaway server started once per test session from the local binaries
(``initdb``/``pg_ctl``), in a temp dir, on 127.0.0.1 and a free port; each test gets fresh
databases. Without the binaries the PostgreSQL cases skip."""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from genq.store.db import make_engine, session_factory, upgrade

PG_SUPERUSER = "postgres"
PG_START_TIMEOUT_S = 60


@dataclass(frozen=True)
class Database:
    url: str
    engine: Engine
    sessions: sessionmaker[Session]


@dataclass(frozen=True)
class PgServer:
    host: str
    port: int
    pg_ctl: Callable[[str], None] = field(repr=False, compare=False)
    """Runs ``pg_ctl start``, or ``pg_ctl stop`` in mode ``fast`` or ``immediate``, on this
    server's data directory."""

    def stop(self) -> None:
        # A clean shutdown: with durability off, an immediate one loses the last commits.
        self.pg_ctl("fast")

    def start(self) -> None:
        self.pg_ctl("start")

    def url(self, database: str, *, driver: str = "postgresql+psycopg") -> str:
        return f"{driver}://{PG_SUPERUSER}@{self.host}:{self.port}/{database}"

    def admin(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.url("postgres", driver="postgresql"), autocommit=True)


def _pg_bindir() -> Path | None:
    for initdb in [shutil.which("initdb"), *sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))]:
        if initdb and Path(initdb).with_name("pg_ctl").exists():
            return Path(initdb).parent
    return None


def _server_user() -> str | None:
    """The user to run postgres as: postgres refuses to run as root."""
    if os.geteuid() != 0:
        return None
    if shutil.which("runuser") is None:
        pytest.skip("running as root without runuser to start PostgreSQL as another user")
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name).pw_name
        except KeyError:
            continue
    pytest.skip("running as root and no unprivileged user (postgres, nobody) to run PostgreSQL")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    with running_pg_server() as server:
        yield server


@contextmanager
def running_pg_server() -> Iterator[PgServer]:
    """The throwaway server behind :func:`pg_server`, for tools outside pytest too (the queue
    benchmark). Skips (raises pytest's Skipped) without the binaries."""
    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found: apt install postgresql")
    user = _server_user()
    root = Path(tempfile.mkdtemp(prefix="genq-pg-"))
    if user is not None:
        shutil.chown(root, user)

    def run(*cmd: str) -> None:
        prefix = ["runuser", "-u", user, "--"] if user is not None else []
        subprocess.run([*prefix, *cmd], check=True, capture_output=True, text=True)

    port = _free_port()
    data = root / "data"
    # Durability off: a test server trades crash safety for speed.
    options = (
        f"-c listen_addresses=127.0.0.1 -p {port} -k {root} "
        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    )

    def pg_ctl(action: str) -> None:
        if action == "start":
            run(
                str(bindir / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(root / "log"),
                "-o",
                options,
                "-w",
                "-t",
                str(PG_START_TIMEOUT_S),
                "start",
            )
        else:
            run(str(bindir / "pg_ctl"), "-D", str(data), "-m", action, "-w", "stop")

    try:
        run(
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            PG_SUPERUSER,
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        pg_ctl("start")
    except subprocess.CalledProcessError as exc:
        log = root / "log"
        detail = log.read_text() if log.exists() else exc.stderr
        shutil.rmtree(root, ignore_errors=True)
        raise RuntimeError(f"could not start PostgreSQL: {exc.stderr}\n{detail}") from exc
    try:
        yield PgServer(host="127.0.0.1", port=port, pg_ctl=pg_ctl)
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):  # stopped by its test
            pg_ctl("immediate")
        shutil.rmtree(root, ignore_errors=True)


_database_numbers = itertools.count()


@pytest.fixture
def postgres_url(pg_server: PgServer) -> Iterator[Callable[[], str]]:
    """Factory: each call creates an empty PostgreSQL database and returns its URL."""
    created: list[str] = []

    def make() -> str:
        name = f"genq_test_{os.getpid()}_{next(_database_numbers)}"
        with pg_server.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        created.append(name)
        return pg_server.url(name)

    yield make
    with pg_server.admin() as conn:
        for name in created:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sqlite_url(tmp_path: Path) -> Callable[[], str]:
    """Factory: each call returns the URL of a new, empty SQLite file."""
    numbers = itertools.count()
    return lambda: f"sqlite:///{tmp_path / f'genq-{next(numbers)}.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> Callable[[], str]:
    """Factory of empty databases, once on SQLite and once on PostgreSQL."""
    name = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    factory: Callable[[], str] = request.getfixturevalue(name)
    return factory


@pytest.fixture
def db(db_url: Callable[[], str]) -> Iterator[Callable[[], Database]]:
    """Factory of databases upgraded to the head migration, on each backend."""
    engines: list[Engine] = []

    def make() -> Database:
        url = db_url()
        upgrade(url)
        engine = make_engine(url)
        engines.append(engine)
        return Database(url=url, engine=engine, sessions=session_factory(engine))

    yield make
    for engine in engines:
        engine.dispose()
