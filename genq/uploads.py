"""What a submission needs from the store before anything is written: an uploaded file's lines
(read by the intake) and the models this service can run (built-ins, model roots, the Hugging
Face cache, and whatever live workers serve)."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from genq.errors import InvalidRequest, NotFound
from genq.intake import Line, LineReader
from genq.modelnames import check_model
from genq.producer import check_name
from genq.settings import Settings
from genq.store.files import read_parts
from genq.store.views import live_workers

LIVE_SECONDS = 60.0
"""A worker heard from this recently counts as live (for /metrics and model names)."""


def served_models(sessions: sessionmaker[Session]) -> frozenset[str]:
    with sessions.begin() as session:
        return frozenset(live_workers(session, within_seconds=LIVE_SECONDS))


def served_model(name: str, settings: Settings, *, served: frozenset[str]) -> str:
    """``name``, if it is a model genq can run here or one of the ``served`` (by live
    workers); :class:`ModelNotFound` otherwise, before anything is stored."""
    check_name("model", name)
    check_model(name, settings, served=served)
    return name


def read_upload(
    sessions: sessionmaker[Session],
    settings: Settings,
    *,
    tenant: str,
    file_id: str,
    served: frozenset[str],
    **options: Any,
) -> tuple[LineReader, Iterator[Line]]:
    """A reader of the tenant's uploaded file ``file_id`` (see :class:`LineReader`, which takes
    ``options``) and its lines, read from the stored parts as they are asked for; a model a
    line names is checked as a job's would be, ``served`` included. A missing file raises at
    once; a file without a line, once its lines are read."""
    try:
        parts = read_parts(sessions, tenant=tenant, file_id=file_id)
    except NotFound:
        raise InvalidRequest("input_file_id", f"no file {file_id!r}") from None
    known = partial(check_model, settings=settings, served=served)
    reader = LineReader(
        settings=settings, check_model=known, max_lines=settings.max_job_requests, **options
    )
    return reader, _lines(reader, parts)


def _lines(reader: LineReader, parts: Iterator[bytes]) -> Iterator[Line]:
    yield from reader.lines(parts)
    if not reader.count:
        raise InvalidRequest("input_file_id", "the file holds no lines")
