"""What every route needs: settings, the store's sessions, the queue publisher (none in the
embedded mode, whose worker claims straight from the database), the keys checked and the jobs
read lately, and, for SQLite, the reader that runs short reads on the event loop."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from api.reads import InlineReader, LoopReads, SharedReads
from genq.auth import KeyUse
from genq.producer import Publisher
from genq.settings import Settings
from genq.store import JobInfo, make_engine, session_factory
from genq.store.shares import Standing
from genq.ttlcache import TtlCache


@dataclass(frozen=True)
class Context:
    settings: Settings
    sessions: sessionmaker[Session]
    publisher: Publisher | None
    keys: TtlCache[str, str] = field(init=False)
    """The tenants of keys checked lately, by key hash (unknown keys are never put)."""
    key_use: KeyUse = field(init=False)
    """The keys accepted since this process last wrote down when keys were used."""
    jobs: TtlCache[tuple[str, str], JobInfo] = field(init=False)
    """Jobs read lately, by tenant and id: what polls of one job are answered from."""
    standings: TtlCache[str, dict[str, Standing]] = field(init=False)
    """Where each open job of a model stands (its share of the next window), by model."""
    shared: SharedReads = field(init=False)
    """The cached reads running now, which polls arriving meanwhile share."""
    engine: Engine = field(init=False)
    """The sessions' engine."""
    reads: Engine = field(init=False)
    """The same engine and pool in autocommit mode, for the short reads that skip a session:
    see :func:`api.deps.run_read`."""
    loop_reads: LoopReads | None = field(init=False)
    """For a networked database, the reads on the serving event loop: see
    :func:`api.deps.run_read`."""
    inline: InlineReader | None = field(init=False)
    """For SQLite, a file in this process, the reader that runs short reads right on the event
    loop: see :func:`api.deps.run_read`."""

    def __post_init__(self) -> None:
        # Derived from the other fields; frozen, so set the way dataclasses' own __init__ does.
        object.__setattr__(self, "keys", TtlCache(self.settings.key_cache_seconds))
        object.__setattr__(self, "key_use", KeyUse())
        object.__setattr__(self, "jobs", TtlCache(self.settings.job_cache_seconds))
        # At least a second: a fair pick over every open job of a model is not a poll's read.
        ttl = max(1.0, self.settings.job_cache_seconds)
        object.__setattr__(self, "standings", TtlCache(ttl))
        object.__setattr__(self, "shared", SharedReads())
        bind = self.sessions.kw.get("bind")
        if not isinstance(bind, Engine):
            raise TypeError("the context's sessions must be bound to an engine")
        object.__setattr__(self, "engine", bind)
        object.__setattr__(self, "reads", bind.execution_options(isolation_level="AUTOCOMMIT"))
        sqlite = bind.dialect.name == "sqlite"
        object.__setattr__(self, "inline", InlineReader(bind) if sqlite else None)
        connections = self.settings.api_db_connections
        loop_reads = None if sqlite else LoopReads(bind.url, connections=connections)
        object.__setattr__(self, "loop_reads", loop_reads)


def build_context(settings: Settings, *, distributed: bool) -> Context:
    """Sessions on ``settings.database_url``; with ``distributed`` a Celery publisher on
    ``settings.redis_url`` (no connection until the first submit)."""
    publisher: Publisher | None = None
    if distributed:
        from genq.producer import CeleryPublisher
        from worker.celery_app import make_celery  # configuration only: no torch

        publisher = CeleryPublisher(make_celery(settings))
    engine = make_engine(settings.database_url, **pool_options(settings))
    return Context(settings, session_factory(engine), publisher)


def pool_options(settings: Settings) -> dict[str, int]:
    """For a networked database, a pool of ``api_db_connections`` kept open and no more: a
    connection opened past the pool's size would be closed again as soon as it came back, so
    that under many clients each read would pay for a new one, and several API processes
    could exhaust the server's connections."""
    if make_url(settings.database_url).get_backend_name() == "sqlite":
        return {}
    return {"pool_size": settings.api_db_connections, "max_overflow": 0}
