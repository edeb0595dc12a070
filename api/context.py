"""What every route needs: settings, the store's sessions, the queue publisher (none in the
embedded mode, whose worker claims straight from the database), the keys checked lately, and
whether short reads may run on the event loop."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from genq.auth import KeyCache
from genq.producer import Publisher
from genq.settings import Settings
from genq.store import make_engine, session_factory


@dataclass(frozen=True)
class Context:
    settings: Settings
    sessions: sessionmaker[Session]
    publisher: Publisher | None
    keys: KeyCache = field(init=False)
    inline_reads: bool = field(init=False)
    """The database is SQLite, in this process: see :func:`api.deps.run_read`."""

    def __post_init__(self) -> None:
        # Derived from the other fields; frozen, so set the way dataclasses' own __init__ does.
        object.__setattr__(self, "keys", KeyCache(self.settings.key_cache_seconds))
        bind = self.sessions.kw.get("bind")
        sqlite = isinstance(bind, Engine) and bind.dialect.name == "sqlite"
        object.__setattr__(self, "inline_reads", sqlite)


def build_context(settings: Settings, *, distributed: bool) -> Context:
    """Sessions on ``settings.database_url``; with ``distributed`` a Celery publisher on
    ``settings.redis_url`` (no connection until the first submit)."""
    publisher: Publisher | None = None
    if distributed:
        from genq.producer import CeleryPublisher
        from worker.celery_app import make_celery  # configuration only: no torch

        publisher = CeleryPublisher(make_celery(settings))
    return Context(settings, session_factory(make_engine(settings.database_url)), publisher)
