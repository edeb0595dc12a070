"""What the OpenAPI schema says beyond the routes' own types: every error in its one shape, and
the bodies that are not JSON."""

from __future__ import annotations

from typing import Any

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


def non_json(media_type: str, description: str) -> dict[int | str, dict[str, Any]]:
    """A 200 answered in ``media_type`` (besides, or instead of, JSON)."""
    return {
        200: {"content": {media_type: {"schema": {"type": "string"}}}, "description": description}
    }
