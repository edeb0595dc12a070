"""Every error answers in one shape, OpenAI's (``{"error": {"message", "type", "param",
"code"}}``), so OpenAI clients show the message; domain errors map to their status once."""

from __future__ import annotations

import logging
import time

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException

from genq.errors import GenqError, InvalidRequest, ModelNotFound
from genq.intake.bodies import first_error

log = logging.getLogger(__name__)

TYPES = {401: "authentication_error", 404: "not_found_error", 409: "conflict_error"}
LOG_EVERY_SECONDS = 5.0
RETRY_AFTER_SECONDS = 1
"""What a 503 tells clients to wait while the database cannot be reached."""

UNREACHABLE = (
    OperationalError,
    InterfaceError,
    DisconnectionError,
    PoolTimeout,
    psycopg.OperationalError,  # raised bare by the COPY of a bulk insert
)
"""The errors of a database that cannot be reached, or is restarting, or busy."""


def error_response(
    status: int,
    message: str,
    *,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    kind = TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    body = {"error": {"message": message, "type": kind, "param": param, "code": None}}
    if status == 401:
        headers = {**(headers or {}), "WWW-Authenticate": "Bearer"}
    return JSONResponse(body, status_code=status, headers=headers)


def _genq(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, GenqError)
    param = exc.field or None if isinstance(exc, InvalidRequest) else None
    if isinstance(exc, ModelNotFound):
        param = "model"
    return error_response(exc.status_code, str(exc), param=param)


def _validation(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    err = errors[0]
    if err.get("type") == "json_invalid":
        detail = err.get("ctx", {}).get("error", err.get("msg", "invalid"))
        return error_response(400, f"body: malformed JSON: {detail}", param="body")
    loc = list(err.get("loc", ()))
    if loc and loc[0] == "body":
        loc = loc[1:]
    error = first_error([{**err, "loc": loc}])
    field = error.field or "body"
    return error_response(422, f"{field}: {error.message}", param=field)


_last_logged = [0.0]  # monotonic time of the last "database unavailable" line


def _unreachable(_request: Request, exc: Exception) -> JSONResponse:
    # Connections of a pool die with a database restart; the pool replaces them as they fail,
    # so clients that retry after a moment get through once the database is back. One log line
    # per LOG_EVERY_SECONDS: an outage under many clients must not flood the log.
    now = time.monotonic()
    if now - _last_logged[0] >= LOG_EVERY_SECONDS:
        _last_logged[0] = now
        log.warning("database unavailable (answering 503): %s", str(exc).split("\n")[0])
    return error_response(
        503,
        "the database is unavailable; retry shortly",
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def _http(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, str(exc.detail))


def install(app: FastAPI) -> None:
    app.add_exception_handler(GenqError, _genq)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(HTTPException, _http)
    for kind in UNREACHABLE:
        app.add_exception_handler(kind, _unreachable)
