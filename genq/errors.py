"""Domain errors: a few flat classes, each mapped once to an HTTP status."""

from __future__ import annotations


class GenqError(Exception):
    """Base of every error genq reports to a user."""

    status_code = 500


class InvalidRequest(GenqError):
    """Bad input; ``field`` names what is wrong (``params.top_p``, ``prompt``...)."""

    status_code = 422

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


class MalformedInput(InvalidRequest):
    """Input that does not parse at all (not JSON, not UTF-8)."""

    status_code = 400


class ModelNotFound(GenqError):
    status_code = 404


class ModelUnavailable(GenqError):
    """A known model that cannot be provisioned here (no registry, no wheel)."""

    status_code = 503


class Conflict(GenqError):
    """The request clashes with existing state (an output file of another input, say)."""

    status_code = 409


class JobNotFound(GenqError):
    """No such job for this tenant: another tenant's job reads as missing, never as forbidden."""

    status_code = 404


class IllegalTransition(Conflict):
    """A status change the state machine does not allow (cancelling a completed job, say)."""


class Unauthorized(GenqError):
    """No API key, or one that is unknown or revoked."""

    status_code = 401


class NotFound(GenqError):
    """No such file or batch for this tenant (another tenant's reads as missing)."""

    status_code = 404


class QuotaExceeded(GenqError):
    """A submit that would take the tenant over one of its limits; nothing of it is stored.
    ``retry_after`` is a hint, in seconds, of when to try again."""

    status_code = 429

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after
