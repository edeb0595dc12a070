"""The reconciler: the database is the authority and a queue message only a hint, so a periodic
pass finds what no live message names (never announced, announced long ago, a lease that ran
out) and announces it again, and fails requests that used up their attempts with their last
error, so a poison request stops looping. Workers run it in a thread; ``genq reconcile`` too."""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from genq.logs import id_chunks
from genq.periodic import Periodic
from genq.producer import Publisher, publish_announcements
from genq.settings import Settings
from genq.store import ReapReport, reap
from genq.store.retention import PruneReport, prune
from genq.store.tables import utcnow

log = logging.getLogger(__name__)


def reconcile_once(
    sessions: sessionmaker[Session], publisher: Publisher, settings: Settings
) -> ReapReport:
    """One pass: settle what must end (out of attempts, cancelled), publish what was lost."""
    with sessions.begin() as session:
        report = reap(
            session,
            max_attempts=settings.max_attempts,
            reannounce_seconds=settings.reannounce_seconds,
        )
    sent = publish_announcements(
        sessions, publisher, report.announcements, message_size=settings.message_size
    )
    for ids in id_chunks(report.failed):
        log.warning("gave up on %d requests out of attempts", len(ids), extra={"request_ids": ids})
    for ids in id_chunks(report.cancelled):
        log.info("cancelled %d requests of cancelling jobs", len(ids), extra={"request_ids": ids})
    announced = [i for a in report.announcements for i in a.request_ids][:sent]
    for ids in id_chunks(announced):
        log.info(
            "announced %d requests again (of %d expired leases, %d unannounced)",
            len(ids),
            len(report.expired),
            len(report.unannounced),
            extra={"request_ids": ids},
        )
    if settings.retention_days:
        prune_due(sessions, settings)
    return report


PRUNE_PASSES = 20
"""Most retention batches one reconciler pass deletes; the next pass goes on."""


def prune_due(sessions: sessionmaker[Session], settings: Settings) -> PruneReport:
    """Delete what is past ``settings.retention_days``, a bounded batch per transaction."""
    before = utcnow() - timedelta(days=settings.retention_days)
    total = PruneReport()
    for _ in range(PRUNE_PASSES):
        with sessions.begin() as session:
            done = prune(session, before=before)
        total.add(done)
        if not done.deleted:
            break
    if total.deleted:
        log.info(
            "retention: deleted %d jobs, %d requests, %d batches, %d files ended before %s",
            total.jobs,
            total.requests,
            total.batches,
            total.files,
            before.isoformat(),
        )
    return total


class Reconciler(Periodic):
    """Runs :func:`reconcile_once` every ``settings.reconcile_seconds`` in a daemon thread; a
    failed pass (database or queue away) is logged and the next one tries again."""

    def __init__(
        self, sessions: sessionmaker[Session], publisher: Publisher, settings: Settings
    ) -> None:
        super().__init__(every=settings.reconcile_seconds, name="genq-reconciler")
        self.sessions = sessions
        self.publisher = publisher
        self.settings = settings

    def tick(self) -> None:
        try:
            reconcile_once(self.sessions, self.publisher, self.settings)
        except Exception:  # noqa: BLE001 - keep reconciling; the next pass may succeed
            log.exception("reconciler pass failed")
