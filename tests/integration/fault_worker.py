"""``genq worker`` with an engine that misbehaves on cue, for the integration tests (fault
injection stays out of production code). Run as ``python -m tests.integration.fault_worker
MODEL``; the worker is the real one, from the same entry point, with the engine wrapped:

- ``GENQ_TEST_POISON=mark``: a window holding a prompt with ``mark`` kills the process
  (exit code :data:`POISON_EXIT`) before any of it runs, every time.
- ``GENQ_TEST_BATCH_DELAY=seconds``: every batch takes that much longer.
- ``GENQ_TEST_STALL=mark``: a batch holding a prompt with ``mark`` is held back, before its
  outcomes are written, until another worker has finished that request (at most
  :data:`STALL_LIMIT_S`): a lease that runs out under a slow batch.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator

from sqlalchemy import select

from genq.settings import get_settings
from genq.store import RequestStatus, session_factory
from genq.store.db import make_engine
from genq.store.tables import Request
from worker.service import Generator, model_engine
from worker.tasks import run_worker
from worker.types import BatchReport, GenRequest

POISON_EXIT = 17
STALL_LIMIT_S = 60.0


class FaultyEngine:
    def __init__(self, inner: Generator, database_url: str) -> None:
        self.inner = inner
        self.poison = os.environ.get("GENQ_TEST_POISON")
        self.stall = os.environ.get("GENQ_TEST_STALL")
        self.delay = float(os.environ.get("GENQ_TEST_BATCH_DELAY", "0"))
        self.sessions = session_factory(make_engine(database_url))

    def run(self, requests: Iterable[GenRequest]) -> Iterator[BatchReport]:
        requests = list(requests)
        prompts = {r.key: r.prompt or "" for r in requests}
        if self.poison and any(self.poison in p for p in prompts.values()):
            os._exit(POISON_EXIT)
        inner = self.inner.run(requests)
        return Reports(inner, self._delayed(inner, prompts))

    def _delayed(
        self, inner: Iterator[BatchReport], prompts: dict[str, str]
    ) -> Iterator[BatchReport]:
        for report in inner:
            time.sleep(self.delay)
            stalled = [k for k in report.keys if self.stall and self.stall in prompts[k]]
            if stalled:
                self._wait_until_finished(stalled)
            yield report

    def _wait_until_finished(self, request_ids: list[str]) -> None:
        deadline = time.monotonic() + STALL_LIMIT_S
        while time.monotonic() < deadline:
            with self.sessions.begin() as session:
                statuses = session.scalars(
                    select(Request.status).where(Request.id.in_(request_ids))
                )
                if all(s is RequestStatus.SUCCEEDED for s in statuses):
                    return
            time.sleep(0.1)


class Reports:
    """The wrapped reports, still able to give back what has not started (as the engine's)."""

    def __init__(self, inner: Iterator[BatchReport], reports: Iterator[BatchReport]) -> None:
        self.inner, self.reports = inner, reports
        withdraw: Callable[[Iterable[str]], set[str]] | None = getattr(inner, "withdraw", None)
        if withdraw is not None:
            self.withdraw = withdraw

    def __iter__(self) -> Reports:
        return self

    def __next__(self) -> BatchReport:
        return next(self.reports)

    def close(self) -> None:
        for it in (self.reports, self.inner):
            close = getattr(it, "close", None)
            if close is not None:
                close()


def main() -> None:
    settings = get_settings()
    model = sys.argv[1]
    real = model_engine(settings, model)
    run_worker(
        settings, model=model, make_engine=lambda: FaultyEngine(real(), settings.database_url)
    )


if __name__ == "__main__":
    main()
