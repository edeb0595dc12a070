"""What the OpenAPI schema says beyond the routes' own types: every error in its one shape, and
the bodies that are not JSON."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorBody(BaseModel):
    """How every error answers (OpenAI's shape)."""

    error: ErrorDetail


_ERRORS = {
    400: "Malformed body (not JSON, not UTF-8)",
    401: "Missing, unknown or revoked API key",
    404: "No such job, batch, file or model for this tenant",
    409: "Conflicts with the current state (cancelling a completed job)",
    413: "Body larger than GENQ_MAX_BODY_BYTES",
    422: "Invalid input; the message names the field as sent",
    429: "A submit over the tenant's quota (nothing stored); retry after Retry-After seconds",
    503: "The database cannot be reached; retry after Retry-After seconds",
}

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text} for status, text in _ERRORS.items()
}


def non_json(
    media_type: str, description: str, *, model: type[BaseModel] | None = None
) -> dict[int | str, dict[str, Any]]:
    """A 200 answered in ``media_type`` (besides, or instead of, JSON as ``model``)."""
    answer: dict[str, Any] = {
        "content": {media_type: {"schema": {"type": "string"}}},
        "description": description,
    }
    if model is not None:
        answer["model"] = model
    return {200: answer}


OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
"""Routes that take no API key (/metrics may take GENQ_METRICS_TOKEN instead)."""


def install(app: FastAPI) -> None:
    """The app's schema with its bearer-key security scheme on every route that needs a key."""
    made_by_fastapi = app.openapi

    def schema() -> dict[str, Any]:
        if app.openapi_schema is None:
            made = made_by_fastapi()
            made.setdefault("components", {})["securitySchemes"] = {
                "apiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key (gq_...): genq keys create --tenant NAME",
                }
            }
            for path, operations in made["paths"].items():
                if path not in OPEN_PATHS:
                    for operation in operations.values():
                        operation["security"] = [{"apiKey": []}]
            app.openapi_schema = made
        return app.openapi_schema

    app.openapi = schema  # type: ignore[method-assign]
