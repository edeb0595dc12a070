"""The Celery side of a worker: the thin ``genq.generate`` task, the process's runtime (model
loaded once, before the first message is taken), its reconciler and heartbeat threads, and the
entry point of ``genq worker``. One worker process per device, one message at a time (the solo
pool)."""

from __future__ import annotations

import logging
import os
import re
import socket
from collections.abc import Callable
from typing import Any

from celery import signals

from genq.logs import configure_logging
from genq.producer import GENERATE_TASK, CeleryPublisher, queue_for
from genq.reconciler import Reconciler
from genq.settings import Settings
from worker.celery_app import make_celery
from worker.heartbeat import Heartbeat
from worker.service import Generator, Runtime, build_runtime, handle_message

log = logging.getLogger(__name__)

_runtime: Runtime | None = None  # this worker process's, set by run_worker


def generate(model: str, group_key: str, request_ids: list[str]) -> int:
    """The ``genq.generate`` task: a hint naming requests; the store decides what runs."""
    if _runtime is None:
        raise RuntimeError("genq.generate runs only in a worker started by run_worker")
    return handle_message(_runtime, model=model, group_key=group_key, request_ids=request_ids)


def worker_argv(model: str, hostname: str, *, quiet: bool = False) -> list[str]:
    """Celery's command line; ``quiet`` leaves out its banner (not a log line)."""
    return (["--quiet"] if quiet else []) + [
        "worker",
        "--pool=solo",
        "--concurrency=1",
        f"--queues={queue_for(model)}",
        f"--hostname={hostname}",
        "--loglevel=INFO",
        # No worker-to-worker chatter: the database coordinates, not the broker.
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]


def run_worker(
    settings: Settings,
    *,
    model: str,
    make_engine: Callable[[], Generator] | None = None,
) -> None:
    """Serve ``model``'s queue until shut down. ``make_engine`` replaces the real engine (tests'
    fault injection, the dispatch benchmark's trivial generator)."""
    global _runtime
    configure_logging(settings)  # here, not in the CLI: the tests' fault worker starts here too
    hostname = f"genq-{_slug(model)}-{os.getpid()}@{socket.gethostname()}"
    app = make_celery(settings)
    app.task(name=GENERATE_TASK)(generate)
    rt = build_runtime(settings, model=model, make_engine=make_engine)
    _runtime = rt
    rt.engine  # noqa: B018 - load the model before taking any message, not inside the first
    publisher = CeleryPublisher(app)
    reconciler = Reconciler(rt.sessions, publisher, settings)
    heartbeat = Heartbeat(rt.sessions, worker_id=rt.worker_id, model=model)

    def on_shutting_down(**_: Any) -> None:
        # Warm shutdown (SIGTERM): the batch in hand finishes, the rest of the window is
        # released between batches (worker.service checks this flag).
        rt.stopping.set()

    signals.worker_shutting_down.connect(on_shutting_down, weak=False)
    # Any receiver keeps Celery from replacing the handlers and format set up above.
    signals.setup_logging.connect(_logging_is_set_up, weak=False)
    reconciler.start()
    heartbeat.start()
    log.info(
        "genq worker %s serving %s on queue %s",
        rt.worker_id,
        model,
        queue_for(model),
        extra={"worker_id": rt.worker_id, "model": model},
    )
    try:
        app.worker_main(worker_argv(model, hostname, quiet=settings.log_format == "json"))
    finally:
        heartbeat.stop(timeout=5)  # gone from the live workers at once
        reconciler.stop(timeout=5)
        publisher.close()


def _logging_is_set_up(**_: Any) -> None:
    pass


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "model"
