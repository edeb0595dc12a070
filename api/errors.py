"""Every error answers in one shape, OpenAI's (``{"error": {"message", "type", "param",
"code"}}``), so OpenAI clients show the message; domain errors map to their status once."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from genq.errors import GenqError, InvalidRequest, ModelNotFound

TYPES = {401: "authentication_error", 404: "not_found_error", 409: "conflict_error"}


def error_response(status: int, message: str, *, param: str | None = None) -> JSONResponse:
    kind = TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    body = {"error": {"message": message, "type": kind, "param": param, "code": None}}
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, headers=headers)


def field_name(loc: tuple[Any, ...] | list[Any]) -> str:
    """``("body", "requests", 3, "prompt")`` -> ``requests.3.prompt``."""
    parts = [str(p) for p in loc]
    if parts and parts[0] == "body":
        parts = parts[1:]
    return ".".join(parts) or "body"


def _genq(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, GenqError)
    param = exc.field or None if isinstance(exc, InvalidRequest) else None
    if isinstance(exc, ModelNotFound):
        param = "model"
    return error_response(exc.status_code, str(exc), param=param)


def _validation(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    err = exc.errors()[0]
    loc = err.get("loc", ())
    field = field_name(loc)
    message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    if err.get("type") == "json_invalid":
        detail = err.get("ctx", {}).get("error", message)
        return error_response(400, f"body: malformed JSON: {detail}", param="body")
    if err.get("type") == "extra_forbidden":
        message = "unknown field"
    return error_response(422, f"{field}: {message}", param=field)


def _http(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, str(exc.detail))


def install(app: FastAPI) -> None:
    app.add_exception_handler(GenqError, _genq)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(HTTPException, _http)
