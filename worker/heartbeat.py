"""Worker heartbeats: each worker records that it is alive every few seconds, for the
live-workers gauge of /metrics and the models the API accepts. A missed beat is harmless (it is
logged; the next one may succeed). A worker that leaves cleanly drops its row, so it stops
counting at once; one that dies ages out after ``genq.uploads.LIVE_SECONDS``."""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session, sessionmaker

from genq.periodic import Periodic
from genq.store.views import forget_worker, heartbeat

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 5.0
"""How often a worker records that it is alive (idle, or between batches)."""


def beat(sessions: sessionmaker[Session], *, worker_id: str, model: str) -> None:
    """Record that ``worker_id`` is alive; a failure is logged and otherwise ignored."""
    try:
        with sessions.begin() as session:
            heartbeat(session, worker_id=worker_id, model=model)
    except Exception:  # noqa: BLE001 - a missed heartbeat is harmless
        log.warning(
            "heartbeat of %s failed", worker_id, exc_info=True, extra={"worker_id": worker_id}
        )


def forget(sessions: sessionmaker[Session], *, worker_id: str) -> None:
    """Drop ``worker_id``'s heartbeat as it leaves; on failure it ages out instead."""
    try:
        with sessions.begin() as session:
            forget_worker(session, worker_id=worker_id)
    except Exception:  # noqa: BLE001 - it ages out
        log.warning(
            "could not drop the heartbeat of %s",
            worker_id,
            exc_info=True,
            extra={"worker_id": worker_id},
        )


class Heartbeat(Periodic):
    """Beats for one worker every ``every`` seconds in a daemon thread, from :meth:`start` (the
    first beat at once) until :meth:`stop`, which drops the worker's row."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        worker_id: str,
        model: str,
        every: float = HEARTBEAT_SECONDS,
    ) -> None:
        super().__init__(every=every, name="genq-heartbeat", at_once=True)
        self.sessions = sessions
        self.worker_id = worker_id
        self.model = model

    def tick(self) -> None:
        beat(self.sessions, worker_id=self.worker_id, model=self.model)

    def stop(self, timeout: float | None = None) -> None:
        super().stop(timeout)
        forget(self.sessions, worker_id=self.worker_id)
