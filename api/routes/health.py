"""Liveness and readiness."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from api.deps import ContextDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", response_model=None)
def readyz(context: ContextDep) -> dict[str, Any] | JSONResponse:
    """Ready when the database answers and, in the distributed mode, Redis does too."""
    checks: dict[str, str] = {}
    try:
        with context.sessions.begin() as session:
            session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        checks["database"] = f"error: {type(exc).__name__}"
    if context.publisher is not None:
        checks["redis"] = _redis(context.settings.redis_url)
    body = {"status": "ok" if all(v == "ok" for v in checks.values()) else "error", **checks}
    return body if body["status"] == "ok" else JSONResponse(body, status_code=503)


def _redis(url: str) -> str:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        client.ping()
        client.close()
        return "ok"
    except Exception as exc:  # noqa: BLE001
        return f"error: {type(exc).__name__}"
