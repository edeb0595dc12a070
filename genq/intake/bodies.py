"""The shapes clients send: a request (native API body or native file line), a job body, a
batch body. Unknown fields and wrong types are refused by name; the checks that need settings
or the whole job (parameters resolved against the job's, prompt size, duplicate ids) come after,
in :mod:`genq.intake.resolve`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema

from genq.errors import InvalidRequest
from genq.fairshare import MAX_PRIORITY, MIN_PRIORITY
from genq.intake.jsontext import field_path
from genq.params import params_schema
from genq.store.tables import MAX_CUSTOM_ID_LENGTH, MAX_NAME_LENGTH, MAX_URL_LENGTH

STRICT = ConfigDict(extra="forbid", strict=True)

MAX_METADATA_KEYS = 16
MAX_METADATA_KEY_CHARS = 64
MAX_METADATA_VALUE_CHARS = 512
"""Metadata limits, OpenAI's: 16 pairs, keys up to 64 characters, values up to 512."""

Role = Literal["system", "user", "assistant"]

ParamsIn = Annotated[
    dict[str, Any] | None,
    WithJsonSchema({"anyOf": [params_schema(), {"type": "null"}]}),
]
"""Parameters as sent: checked once resolved (a request's over its job's)."""

CustomId = Annotated[str, Field(min_length=1, max_length=MAX_CUSTOM_ID_LENGTH)]

Metadata = Annotated[
    dict[
        Annotated[str, Field(max_length=MAX_METADATA_KEY_CHARS)],
        Annotated[str, Field(max_length=MAX_METADATA_VALUE_CHARS)],
    ]
    | None,
    Field(max_length=MAX_METADATA_KEYS),
]


class Message(BaseModel):
    model_config = STRICT

    role: Role
    content: str = Field(min_length=1)


class RequestIn(BaseModel):
    """One prompt: ``prompt`` or chat ``messages`` (exactly one), its own ``params`` over the
    job's, field by field."""

    model_config = STRICT

    custom_id: CustomId | None = None
    prompt: str | None = Field(default=None, min_length=1)
    messages: list[Message] | None = Field(default=None, min_length=1)
    params: ParamsIn = None


def check_webhook_url(url: str) -> str:
    """An absolute http(s) URL with a host: where a job's events are POSTed."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an absolute http:// or https:// URL")
    return url


WebhookUrl = Annotated[
    str, Field(min_length=1, max_length=MAX_URL_LENGTH), AfterValidator(check_webhook_url)
]


class JobCreate(BaseModel):
    """A job: ``requests`` in the body (all valid or none stored), or ``input_file_id``, an
    uploaded JSONL file (native or OpenAI Batch lines; a bad line fails alone). ``params`` are
    the defaults of every request; ``model`` defaults to the service's (or the file's)."""

    model_config = STRICT

    model: str | None = Field(default=None, min_length=1, max_length=MAX_NAME_LENGTH)
    params: ParamsIn = None
    requests: list[RequestIn] | None = None
    input_file_id: str | None = Field(default=None, min_length=1, max_length=64)
    metadata: Metadata = None
    # Orders the tenant's jobs: a higher priority runs first; a lower one still moves.
    priority: int = Field(default=0, ge=MIN_PRIORITY, le=MAX_PRIORITY)
    # POSTed, signed, when the job ends (else the tenant's default, if it has one).
    webhook_url: WebhookUrl | None = None


def metadata_priority(metadata: Mapping[str, str] | None, *, field: str = "metadata") -> int:
    """An OpenAI batch's priority, from its ``metadata`` key ``priority`` (a string, as every
    metadata value): an integer from MIN_PRIORITY to MAX_PRIORITY; 0 when absent."""
    raw = (metadata or {}).get("priority")
    if raw is None:
        return 0
    try:
        value = int(raw.strip())
    except ValueError:
        value = MAX_PRIORITY + 1
    if not MIN_PRIORITY <= value <= MAX_PRIORITY:
        raise InvalidRequest(
            f"{field}.priority", f"must be an integer from {MIN_PRIORITY} to {MAX_PRIORITY}"
        )
    return value


class BatchCreate(BaseModel):
    model_config = STRICT

    input_file_id: str = Field(min_length=1, max_length=64)
    endpoint: Literal["/v1/completions", "/v1/chat/completions"]
    completion_window: Literal["24h"]
    metadata: Metadata = None


def validated(model: type[BaseModel], raw: Any, *, where: str = "") -> Any:
    """``raw`` as ``model``, or :class:`InvalidRequest` naming the first bad field."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise first_error(exc.errors(), where=where) from None


def first_error(errors: Sequence[Mapping[str, Any]], *, where: str = "") -> InvalidRequest:
    """The first of pydantic's errors as genq reports it: the field as the client wrote it."""
    err = errors[0]
    field = field_path(where, *err.get("loc", ()))
    message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    if err.get("type") == "extra_forbidden":
        message = "unknown field"
    return InvalidRequest(field, message)
