"""What every route needs: settings, the store's sessions, and the queue publisher (none in the
embedded mode, whose worker claims straight from the database)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from genq.producer import Publisher
from genq.settings import Settings
from genq.store import make_engine, session_factory


@dataclass(frozen=True)
class Context:
    settings: Settings
    sessions: sessionmaker[Session]
    publisher: Publisher | None


def build_context(settings: Settings, *, distributed: bool) -> Context:
    """Sessions on ``settings.database_url``; with ``distributed`` a Celery publisher on
    ``settings.redis_url`` (no connection until the first submit)."""
    publisher: Publisher | None = None
    if distributed:
        from genq.producer import CeleryPublisher
        from worker.celery_app import make_celery  # configuration only: no torch

        publisher = CeleryPublisher(make_celery(settings))
    return Context(settings, session_factory(make_engine(settings.database_url)), publisher)
