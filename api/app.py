"""The FastAPI app: one router per resource, errors in one shape, a body size limit."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from api import errors, openapi, outage
from api.context import Context, build_context
from api.limits import BodyLimit
from api.openapi import ERROR_RESPONSES
from api.routes import batches, files, health, jobs, metrics, models, ui, webhooks
from genq.auth import LAST_USED_SECONDS
from genq.batch_finalizer import BatchFinalizer
from genq.periodic import Periodic
from genq.producer import stop_announcing
from genq.settings import Settings, get_settings
from genq.webhooks import WebhookSender

log = logging.getLogger(__name__)


class KeyUseWriter(Periodic):
    """Writes down, once a minute and at shutdown, when this process's keys were last used."""

    def __init__(self, context: Context, *, every: float = LAST_USED_SECONDS) -> None:
        super().__init__(every=every, name="genq-key-use")
        self.context = context

    def tick(self) -> None:
        try:
            with self.context.sessions.begin() as session:
                self.context.key_use.write(session)
        except Exception as exc:  # noqa: BLE001 - a database outage: the next minute tries again
            log.warning("could not record when API keys were last used: %s", exc)


def create_app(context: Context | None = None, *, distributed: bool = False) -> FastAPI:
    """The app over ``context`` (built from the settings when not given)."""
    if context is None:
        settings: Settings = get_settings()
        context = build_context(settings, distributed=distributed)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # What the process holds once started (modules, the app, its routes and models) stays:
        # kept out of the collector's reach, a full collection no longer walks it all, which
        # under many clients paused every request for about 0.1 s at a time.
        gc.collect()
        gc.freeze()
        if context.loop_reads is not None:
            await context.loop_reads.open()
        writer = KeyUseWriter(context)
        writer.start()
        sender = WebhookSender(context.sessions, context.settings)
        sender.start()
        finalizer = BatchFinalizer(context.sessions)
        finalizer.start()
        try:
            yield
        finally:
            stop_announcing(timeout=10)  # what a large job's announcer has left is unmarked
            sender.stop(timeout=5)  # a send cut short is sent again once its lease runs out
            finalizer.stop(timeout=5)  # files half written roll back; the lease runs out
            writer.stop(timeout=5)
            writer.tick()
            if context.loop_reads is not None:
                await context.loop_reads.close()

    # /docs and /redoc load their scripts and styles from this app: they work offline.
    app = FastAPIOffline(
        title="genq", version="0.1.0", responses=ERROR_RESPONSES, lifespan=lifespan
    )
    app.state.context = context
    errors.install(app)
    outage.install(app)
    for module in (health, metrics, jobs, files, batches, models, webhooks, ui):
        app.include_router(module.router)
    app.mount("/ui/static", ui.static, name="ui-static")
    openapi.install(app)
    app.add_middleware(BodyLimit, max_bytes=context.settings.max_body_bytes)
    return app


def create_distributed_app() -> FastAPI:
    """For ``genq api`` (uvicorn's factory): PostgreSQL and Redis from the settings."""
    return create_app(distributed=True)
