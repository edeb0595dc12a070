"""Every error answers in one shape, OpenAI's (``{"error": {"message", "type", "param",
"code"}}``), so OpenAI clients show the message; domain errors map to their status once."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from genq.errors import GenqError, InvalidRequest, ModelNotFound, QuotaExceeded
from genq.intake.bodies import first_error

TYPES = {
    401: "authentication_error",
    404: "not_found_error",
    409: "conflict_error",
    429: "rate_limit_error",
}


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
    if isinstance(exc, QuotaExceeded):
        return error_response(429, str(exc), headers={"Retry-After": str(exc.retry_after)})
    return error_response(exc.status_code, str(exc), param=param)


def _validation(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    err = exc.errors()[0]  # JSON bodies are parsed by api.jsonbody: these are shapes and types
    loc = list(err.get("loc", ()))
    if loc and loc[0] == "body":
        loc = loc[1:]
    error = first_error([{**err, "loc": loc}])
    field = error.field or "body"
    return error_response(422, f"{field}: {error.message}", param=field)


def _http(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, str(exc.detail))


def install(app: FastAPI) -> None:
    app.add_exception_handler(GenqError, _genq)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(HTTPException, _http)
