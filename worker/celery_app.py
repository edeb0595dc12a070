"""The Celery app on Redis: configuration only, no connection until a command uses it, and no
torch, so an API process can publish through it."""

from __future__ import annotations

import math

from celery import Celery

from genq.settings import Settings

BROKER_CONNECT_SECONDS = 4.0
"""One attempt to reach Redis gives up after this long."""


def make_celery(settings: Settings) -> Celery:
    """An app on ``settings.redis_url`` with the delivery guarantees genq relies on: a message is
    acknowledged only once its work is written (late acks; a lost worker's message goes back),
    each worker holds about one planning window of messages, and Redis redelivers an
    unacknowledged message only after ``visibility_timeout``, longer than a window takes."""
    app = Celery("genq", broker=settings.redis_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        # A window is claim_window requests; messages name message_size each.
        worker_prefetch_multiplier=max(1, math.ceil(settings.claim_window / settings.message_size)),
        broker_transport_options={"visibility_timeout": settings.visibility_timeout},
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=BROKER_CONNECT_SECONDS,
        # Work in hand is finished (the store fences it) rather than cancelled on a lost link.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        # No soft shutdown: with the solo pool Celery waits it out inside the signal handler,
        # on the thread that runs the batch, which only freezes the batch. The graceful stop is
        # the warm shutdown (SIGTERM: the batch in hand finishes, the rest is released); a cold
        # one (SIGQUIT) interrupts the batch, and its claims are released on the way out.
        worker_soft_shutdown_timeout=0.0,
    )
    return app
