"""The FastAPI app: one router per resource, errors in one shape, a body size limit."""

from __future__ import annotations

from fastapi import FastAPI

from api import errors, outage
from api.context import Context, build_context
from api.limits import BodyLimit
from api.openapi import ERROR_RESPONSES
from api.routes import batches, files, health, jobs, metrics
from genq.settings import Settings, get_settings


def create_app(context: Context | None = None, *, distributed: bool = False) -> FastAPI:
    """The app over ``context`` (built from the settings when not given)."""
    if context is None:
        settings: Settings = get_settings()
        context = build_context(settings, distributed=distributed)
    app = FastAPI(title="genq", version="0.1.0", responses=ERROR_RESPONSES)
    app.state.context = context
    errors.install(app)
    outage.install(app)
    for module in (health, metrics, jobs, files, batches):
        app.include_router(module.router)
    app.add_middleware(BodyLimit, max_bytes=context.settings.max_body_bytes)
    return app


def create_distributed_app() -> FastAPI:
    """For ``genq api`` (uvicorn's factory): PostgreSQL and Redis from the settings."""
    return create_app(distributed=True)
