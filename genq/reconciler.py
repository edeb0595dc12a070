"""The reconciler: the database is the authority and a queue message only a hint, so a periodic
pass finds what no live message names (never announced, announced long ago, a lease that ran
out) and announces it again, and fails requests that used up their attempts with their last
error, so a poison request stops looping. Workers run it in a thread; ``genq reconcile`` too."""

from __future__ import annotations

import logging
import threading

from sqlalchemy.orm import Session, sessionmaker

from genq.producer import Publisher, publish_announcements
from genq.settings import Settings
from genq.store import ReapReport, reap

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
    if report.failed or report.cancelled or sent:
        log.info(
            "reconciled: %d failed (out of attempts), %d cancelled, %d announced again "
            "(%d expired leases, %d unannounced)",
            len(report.failed),
            len(report.cancelled),
            sent,
            len(report.expired),
            len(report.unannounced),
        )
    return report


class Reconciler:
    """Runs :func:`reconcile_once` every ``settings.reconcile_seconds`` in a daemon thread; a
    failed pass (database or queue away) is logged and the next one tries again."""

    def __init__(
        self, sessions: sessionmaker[Session], publisher: Publisher, settings: Settings
    ) -> None:
        self.sessions = sessions
        self.publisher = publisher
        self.settings = settings
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="genq-reconciler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.reconcile_seconds):
            try:
                reconcile_once(self.sessions, self.publisher, self.settings)
            except Exception:  # noqa: BLE001 - keep reconciling; the next pass may succeed
                log.exception("reconciler pass failed")
