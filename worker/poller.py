"""The embedded service's worker: a thread that finds models with claimable work in the
database and drains them with the embedded worker, one runtime (and model) per name, loaded
on first use. No queue: the database is the authority, so polling it is enough."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy.orm import Session, sessionmaker

from genq.settings import Settings
from genq.store.views import models_with_work
from worker.embedded import drain
from worker.heartbeat import HEARTBEAT_SECONDS, beat, forget
from worker.service import Generator, Runtime, default_worker_id, model_engine

log = logging.getLogger(__name__)

POLL_SECONDS = 0.2
"""How often an idle embedded worker looks for new work."""

RETRY_BROKEN_SECONDS = 30.0
"""How long a model that failed to load or run is left alone before the next try."""


class Poller(threading.Thread):
    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        *,
        make_engine: Callable[[str], Callable[[], Generator]] | None = None,
        poll_seconds: float = POLL_SECONDS,
    ) -> None:
        super().__init__(name="genq-embedded-worker", daemon=True)
        self.settings = settings
        self.sessions = sessions
        self.make_engine = make_engine or (lambda model: model_engine(settings, model))
        self.poll_seconds = poll_seconds
        self.stopping = threading.Event()
        self.runtimes: dict[str, Runtime] = {}
        self._broken: dict[str, float] = {}
        self._beats: dict[str, float] = {}

    def stop(self) -> None:
        self.stopping.set()
        for rt in self.runtimes.values():
            rt.stopping.set()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                worked = self.step()
            except Exception:  # noqa: BLE001 - the database may be briefly unreachable
                log.exception("embedded worker pass failed")
                worked = False
            if not worked:
                self.stopping.wait(self.poll_seconds)
        for rt in self.runtimes.values():  # stopped cleanly: no longer live
            forget(self.sessions, worker_id=rt.worker_id)

    def step(self) -> bool:
        """Drain every model with work once; True when there was any."""
        with self.sessions.begin() as session:
            models = models_with_work(session)
        for rt in self.runtimes.values():
            self._beat(rt)
        now = time.monotonic()
        ready = [m for m in models if self._broken.get(m, 0.0) <= now]
        for model in ready:
            if self.stopping.is_set():
                break
            rt = self._runtime(model)
            try:
                drain(rt)
            except Exception:  # noqa: BLE001 - one model's failure leaves the others running
                log.exception(
                    "model %s failed; retrying in %.0f s",
                    model,
                    RETRY_BROKEN_SECONDS,
                    extra={"worker_id": rt.worker_id, "model": model},
                )
                self._broken[model] = time.monotonic() + RETRY_BROKEN_SECONDS
                rt._engine = None
        return bool(ready)

    def _runtime(self, model: str) -> Runtime:
        if model not in self.runtimes:
            rt = Runtime(
                settings=self.settings,
                sessions=self.sessions,
                model=model,
                worker_id=default_worker_id(model),
                make_engine=self.make_engine(model),
                window=self.settings.claim_window,
            )
            rt.on_batch = lambda _report, rt=rt: self._beat(rt)  # type: ignore[misc]
            if self.stopping.is_set():
                rt.stopping.set()
            self.runtimes[model] = rt
            self._beat(rt, force=True)
        return self.runtimes[model]

    def _beat(self, rt: Runtime, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._beats.get(rt.worker_id, 0.0) < HEARTBEAT_SECONDS:
            return
        self._beats[rt.worker_id] = now
        beat(self.sessions, worker_id=rt.worker_id, model=rt.model)
