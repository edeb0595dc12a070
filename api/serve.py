"""``genq serve``: the API and an in-process worker over one SQLite database, no Redis."""

from __future__ import annotations

import logging

import uvicorn

from api.app import create_app
from api.context import build_context
from genq.auth import create_key
from genq.settings import Settings
from genq.store import upgrade


def serve_embedded(settings: Settings, *, host: str, port: int, tenant: str) -> None:
    from worker.poller import Poller  # the worker side: torch loads with the first job

    upgrade(settings.database_url)
    context = build_context(settings, distributed=False)
    with context.sessions.begin() as session:
        key = create_key(session, tenant=tenant)
    poller = Poller(settings, context.sessions)
    poller.start()
    print(f"genq serving on http://{host}:{port}  (tenant {tenant!r})", flush=True)
    print(f"GENQ_API_URL=http://{host}:{port}", flush=True)
    print(f"GENQ_API_KEY={key}", flush=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        uvicorn.run(create_app(context), host=host, port=port, log_level="warning")
    finally:
        poller.stop()
        poller.join(timeout=60)
