"""``genq serve``: the API and an in-process worker over one SQLite database, no Redis."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import uvicorn
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from api.app import create_app
from api.context import build_context
from genq.auth import create_key, hash_key, tenant_of
from genq.errors import Unauthorized
from genq.settings import Settings
from genq.store import upgrade


def key_file(database_url: str) -> Path | None:
    """Where ``genq serve`` keeps its key: beside the SQLite file (none for one in memory)."""
    database = make_url(database_url).database
    if not database or database == ":memory:":
        return None
    return Path(database).with_name(Path(database).name + ".serve-key")


def serve_key(session: Session, *, tenant: str, path: Path | None) -> str:
    """The key ``genq serve`` prints: the one it kept at ``path`` while the database still
    holds it, unrevoked and for ``tenant``; else a new one, kept there (readable by its owner
    only) for the next start."""
    if path is not None and path.is_file():
        kept = path.read_text().strip()
        try:
            if tenant_of(session, key_hash=hash_key(kept)) == tenant:
                return kept
        except Unauthorized:
            pass  # revoked, or another database's
    key = create_key(session, tenant=tenant, name="genq serve")
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(key + "\n")
    return key


def serve_embedded(settings: Settings, *, host: str, port: int, tenant: str) -> None:
    from worker.poller import Poller  # the worker side: torch loads with the first job

    upgrade(settings.database_url)
    context = build_context(settings, distributed=False)
    with context.sessions.begin() as session:
        key = serve_key(session, tenant=tenant, path=key_file(settings.database_url))
    poller = Poller(settings, context.sessions)
    poller.start()
    print(f"genq serving on http://{host}:{port}  (tenant {tenant!r})", flush=True)
    print(f"GENQ_API_URL=http://{host}:{port}", flush=True)
    print(f"GENQ_API_KEY={key}", flush=True)
    print(f"dashboard: http://{host}:{port}/ui  (log in with the key)", flush=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        uvicorn.run(create_app(context), host=host, port=port, log_level="warning")
    finally:
        poller.stop()
        poller.join(timeout=60)
