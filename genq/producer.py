"""The producer: store a job with its requests in one transaction, then announce the requests on
the queue of their model. The CLI and the API both submit through :func:`submit_job`.

The database is the authority and a message only a hint: when the queue cannot be reached the
job is stored all the same, its requests stay unannounced, and the reconciler announces them
once the queue is back."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from genq.errors import InvalidRequest
from genq.params import GenerationParams
from genq.settings import Settings, get_settings
from genq.store import (
    Announcement,
    JobInfo,
    NewRequest,
    create_job,
    get_job,
    mark_announced,
    pending_announcements,
)
from genq.store.reconcile import DEFAULT_REAP_LIMIT, queued_page, unmark_announced
from genq.store.retry import retry_failed
from genq.store.shares import check_quota, default_limits
from genq.store.tables import MAX_NAME_LENGTH, utcnow

if TYPE_CHECKING:
    from celery import Celery
    from kombu import Connection

log = logging.getLogger(__name__)

GENERATE_TASK = "genq.generate"
"""The Celery task a message names; its kwargs are ``model``, ``group_key``, ``request_ids``."""

QUEUE_PREFIX = "genq.model."

# One connection attempt and no retry: a submit or a reconciler pass must not hang on a down
# Redis, since the work is safe in the database either way.
FAIL_FAST: Mapping[str, Any] = {"max_retries": 0}


def queue_for(model: str) -> str:
    """The queue of ``model``'s messages: each worker consumes the queue of the model it runs."""
    return QUEUE_PREFIX + model


class Publisher(Protocol):
    def publish(self, message: Announcement) -> None:
        """Send one message; raise when the queue cannot take it."""


class CeleryPublisher:
    """Sends :data:`GENERATE_TASK` messages through a Celery app, to the queue of their model.
    Thread-safe; keeps one connection, opened on first use and dropped after a failure."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        self._lock = threading.Lock()
        self._connection: Connection | None = None

    def publish(self, message: Announcement) -> None:
        with self._lock:
            # A kept connection may have died with a Redis restart: one fresh try then.
            tries = 2 if self._connection is not None else 1
            for attempt in range(tries):
                try:
                    self._send(message)
                    return
                except Exception:
                    self._close()
                    if attempt == tries - 1:
                        raise

    def _send(self, message: Announcement) -> None:
        if self._connection is None:
            self._connection = self.app.connection_for_write(transport_options=dict(FAIL_FAST))
        self.app.send_task(
            GENERATE_TASK,
            kwargs={
                "model": message.model,
                "group_key": message.group_key,
                "request_ids": list(message.request_ids),
            },
            queue=queue_for(message.model),
            connection=self._connection,
            retry=False,
        )

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._connection is not None:
            self._connection.release()
            self._connection = None


def submit_job(
    sessions: sessionmaker[Session],
    publisher: Publisher | None,
    *,
    tenant: str,
    model: str | Callable[[], str],
    params: GenerationParams,
    requests: Iterable[NewRequest],
    metadata: dict[str, Any] | None = None,
    priority: int = 0,
    webhook_url: str | None = None,
    settings: Settings | None = None,
    with_job: Callable[[Session, str], None] | None = None,
) -> str:
    """Validate and store a job with its requests (one transaction, bulk inserts), then announce
    them. Returns the job id once it is stored, whether or not the queue took the messages.
    With no publisher (the embedded mode, whose worker claims straight from the database) the
    job is only stored. ``requests`` may be a stream, read once (see :func:`create_job`, which
    also says what a function for ``model`` means). ``with_job(session, job_id)`` runs in the
    job's transaction: what it writes (an OpenAI batch's row) is stored with the job or not at
    all. A job that would take its tenant over a quota (``settings``' defaults, or the
    tenant's own) is refused with :class:`QuotaExceeded` and nothing is stored."""
    if isinstance(model, str):
        check_name("model", model)
    check_name("tenant", tenant)
    settings = settings or get_settings()
    with sessions.begin() as session:
        # Stored as announced when they are about to be: no second write per request after
        # its message goes out. What cannot be published is unmarked (see announce_job).
        job_id = create_job(
            session,
            tenant=tenant,
            model=model,
            params=params,
            requests=requests,
            metadata=metadata,
            priority=priority,
            webhook_url=webhook_url,
            announced_at=utcnow() if publisher is not None else None,
        )
        check_quota(session, tenant=tenant, defaults=default_limits(settings))
        if with_job is not None:
            with_job(session, job_id)
        job = get_job(session, tenant=tenant, job_id=job_id)
    log.info(
        "job %s submitted: %d requests for %s",
        job_id,
        job.total,
        job.model,
        extra={"job_id": job_id, "model": job.model},
    )
    if publisher is not None:
        announce_job(sessions, publisher, job_id=job_id, settings=settings)
    return job_id


def retry_job(
    sessions: sessionmaker[Session],
    publisher: Publisher | None,
    *,
    tenant: str,
    job_id: str,
    settings: Settings,
) -> tuple[JobInfo, int]:
    """Queue a completed job's failed requests again (:func:`genq.store.retry.retry_failed`)
    and announce them as a submit does; refused with :class:`QuotaExceeded` (nothing moved)
    when they would take the tenant over a quota. Returns the job and how many went back."""
    now = utcnow()
    cutoff = now - timedelta(days=settings.retention_days) if settings.retention_days else None
    with sessions.begin() as session:
        job, count = retry_failed(
            session,
            tenant=tenant,
            job_id=job_id,
            announced_at=now if publisher is not None else None,
            not_before=cutoff,
            now=now,
        )
        if count:
            check_quota(session, tenant=tenant, defaults=default_limits(settings))
    if count:
        log.info("job %s: %d failed requests queued again", job_id, count, extra={"job_id": job_id})
        if publisher is not None:
            announce_job(sessions, publisher, job_id=job_id, settings=settings)
    return job, count


def announce_job(
    sessions: sessionmaker[Session], publisher: Publisher, *, job_id: str, settings: Settings
) -> int:
    """Publish the messages of a job just stored, its requests marked announced, a page of
    queued requests at a time: the first page now, the rest (a job of more than
    :data:`DEFAULT_REAP_LIMIT` requests) from a thread of its own, so that a large job is
    accepted once it is stored and its first messages are out. Returns how many requests
    were announced before it returned. See :class:`JobAnnouncer` for what a failure does."""
    announcer = JobAnnouncer(sessions, publisher, job_id=job_id, settings=settings)
    if announcer.step():
        announcer.start()
    return announcer.announced


class JobAnnouncer(threading.Thread):
    """Publishes a stored job's queued requests page by page. When the queue fails, or the
    process stops (:func:`stop_announcing`) before the end, what did not go out is unmarked,
    so the reconciler's next pass announces it; if even that write fails (or the process is
    killed), the marks age out after ``reannounce_seconds`` and the reconciler announces the
    requests then. Nothing is lost either way, only later."""

    running: set[JobAnnouncer] = set()
    _lock = threading.Lock()

    def __init__(
        self,
        sessions: sessionmaker[Session],
        publisher: Publisher,
        *,
        job_id: str,
        settings: Settings,
    ) -> None:
        super().__init__(name=f"announce-{job_id}", daemon=True)
        self.sessions, self.publisher, self.job_id = sessions, publisher, job_id
        self.message_size = settings.message_size
        self.after = -1
        self.announced = 0
        self.stopping = threading.Event()

    def start(self) -> None:
        with self._lock:
            self.running.add(self)
        super().start()

    def run(self) -> None:
        try:
            while not self.stopping.is_set() and self.step():
                pass
            if self.stopping.is_set():
                self._unmark([])
        except Exception:  # noqa: BLE001 - the marks age out: the reconciler announces them
            log.exception("announcing job %s stopped", self.job_id)
        finally:
            with self._lock:
                self.running.discard(self)
        log.info("job %s: %d requests announced", self.job_id, self.announced)

    def step(self) -> bool:
        """Publish the next page; whether more may follow."""
        with self.sessions.begin() as session:
            page, last = queued_page(
                session, job_id=self.job_id, after_idx=self.after, limit=DEFAULT_REAP_LIMIT
            )
        sent = publish(self.publisher, page, message_size=self.message_size)
        self.announced += len(sent)
        if len(sent) < sum(len(a.request_ids) for a in page):
            self._unmark([i for a in page for i in a.request_ids if i not in sent], last)
            return False
        self.after = last
        return bool(page)

    def _unmark(self, request_ids: Sequence[str], last: int | None = None) -> None:
        try:
            with self.sessions.begin() as session:
                unmark_announced(
                    session,
                    job_id=self.job_id,
                    request_ids=request_ids,
                    after_idx=self.after if last is None else last,
                )
        except SQLAlchemyError as exc:
            log.warning("could not unmark the unpublished requests of %s: %s", self.job_id, exc)


def stop_announcing(timeout: float) -> None:
    """Stop the jobs' announcers of this process (at shutdown), each unmarking what it did
    not publish; waits up to ``timeout`` seconds for them."""
    with JobAnnouncer._lock:
        announcers = list(JobAnnouncer.running)
    for announcer in announcers:
        announcer.stopping.set()
    deadline = time.monotonic() + timeout
    for announcer in announcers:
        announcer.join(max(0.0, deadline - time.monotonic()))


def check_name(field: str, name: str) -> None:
    # A model name becomes a queue name and part of worker names: printable, no spaces.
    if not name or len(name) > MAX_NAME_LENGTH or not name.isprintable() or " " in name:
        raise InvalidRequest(
            field, f"must be 1 to {MAX_NAME_LENGTH} printable characters, no spaces"
        )


def announce(
    sessions: sessionmaker[Session],
    publisher: Publisher,
    *,
    job_id: str | None = None,
    settings: Settings | None = None,
) -> int:
    """Announce the claimable requests no live message names (of ``job_id``, or all), page by
    page. Returns how many were announced; stops early, logging why, when the queue fails."""
    settings = settings or get_settings()
    announced = 0
    while True:
        with sessions.begin() as session:
            pending = pending_announcements(
                session,
                job_id=job_id,
                reannounce_seconds=settings.reannounce_seconds,
                max_attempts=settings.max_attempts,
                limit=DEFAULT_REAP_LIMIT,
            )
        total = sum(len(a.request_ids) for a in pending)
        sent = publish_announcements(
            sessions, publisher, pending, message_size=settings.message_size
        )
        announced += sent
        # Published requests are marked and drop out of the next page; a short page is the last.
        if sent < total or total < DEFAULT_REAP_LIMIT:
            return announced


def publish_announcements(
    sessions: sessionmaker[Session],
    publisher: Publisher,
    announcements: Sequence[Announcement],
    *,
    message_size: int,
) -> int:
    """Publish ``announcements`` in messages of at most ``message_size`` ids, then mark what
    went out, in one transaction. The first failure stops it: the rest stay unannounced for
    the reconciler. Returns how many requests were announced."""
    sent = publish(publisher, announcements, message_size=message_size)
    if sent:
        try:
            with sessions.begin() as session:
                mark_announced(session, request_ids=list(sent))
        except SQLAlchemyError as exc:
            # Out but not marked: announced again later, and a duplicate message is harmless.
            log.warning("could not mark %d announced requests: %s", len(sent), exc)
    return len(sent)


def publish(
    publisher: Publisher, announcements: Sequence[Announcement], *, message_size: int
) -> dict[str, None]:
    """Publish ``announcements`` in messages of at most ``message_size`` ids until the queue
    fails (logged); returns the ids that went out, in order."""
    sent: dict[str, None] = {}
    for message in chunked(announcements, message_size):
        try:
            publisher.publish(message)
        except Exception as exc:  # noqa: BLE001 - whatever stops the queue, the work is stored
            left = sum(len(a.request_ids) for a in announcements) - len(sent)
            log.warning("queue unavailable, %d requests left to the reconciler: %s", left, exc)
            break
        sent.update(dict.fromkeys(message.request_ids))
    return sent


def chunked(announcements: Sequence[Announcement], size: int) -> Iterator[Announcement]:
    """Messages of at most ``size`` ids, each from one announcement (one model, one parameter
    set), in order."""
    for a in announcements:
        for start in range(0, len(a.request_ids), size):
            yield Announcement(a.model, a.group_key, a.request_ids[start : start + size])
