"""Generation parameters, named as in transformers' ``GenerationConfig``, plus ``seed`` and
``stop``. Invalid values and combinations are refused here, before any work is done.

Types are strict: ``"16"`` or ``true`` is not an integer, and a number must be finite."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from genq.errors import InvalidRequest

MAX_NEW_TOKENS = 32768
MAX_STOP_STRINGS = 16
MAX_STOP_CHARS = 256
MAX_RETURN_SEQUENCES = 16
SAMPLING_ONLY = ("temperature", "top_k", "top_p", "seed")

# Fields that change each row on its own (a seed, stop strings, how it samples or penalises)
# rather than the whole batch's computation, so requests that differ only in them share a batch.
PER_ROW_FIELDS = frozenset(
    {
        "seed",
        "stop",
        "temperature",
        "top_k",
        "top_p",
        "repetition_penalty",
        "no_repeat_ngram_size",
        "min_new_tokens",
    }
)


class GenerationParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    max_new_tokens: int = Field(default=64, ge=1, le=MAX_NEW_TOKENS)
    min_new_tokens: int | None = Field(default=None, ge=0, le=MAX_NEW_TOKENS)
    do_sample: bool = False
    temperature: float | None = Field(default=None, gt=0)
    top_k: int | None = Field(default=None, ge=1)
    top_p: float | None = Field(default=None, gt=0, le=1)
    repetition_penalty: float | None = Field(default=None, gt=0)
    no_repeat_ngram_size: int | None = Field(default=None, ge=1, le=MAX_NEW_TOKENS)
    num_return_sequences: int = Field(default=1, ge=1, le=MAX_RETURN_SEQUENCES)
    seed: int | None = Field(default=None, ge=0, lt=2**63)
    stop: tuple[str, ...] = Field(default=(), max_length=MAX_STOP_STRINGS)

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_list(cls, value: Any) -> Any:
        if value is None:
            return ()
        if isinstance(value, str):
            return (value,)
        if isinstance(value, list):  # JSON has no tuples
            return tuple(value)
        return value

    @field_validator("stop")
    @classmethod
    def _stop_strings(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(not s for s in value):
            raise ValueError("stop strings must not be empty")
        if any(len(s) > MAX_STOP_CHARS for s in value):
            raise ValueError(f"stop strings must be at most {MAX_STOP_CHARS} characters")
        return value

    @model_validator(mode="after")
    def _combinations(self) -> GenerationParams:
        if not self.do_sample:
            for name in SAMPLING_ONLY:
                if getattr(self, name) is not None:
                    raise InvalidRequest(
                        f"params.{name}", f"{name} only applies when do_sample is true"
                    )
        if self.min_new_tokens is not None and self.min_new_tokens > self.max_new_tokens:
            raise InvalidRequest(
                "params.min_new_tokens", "min_new_tokens must not exceed max_new_tokens"
            )
        return self

    def group_key(self) -> str:
        """Canonical key of the parameters that shape a whole batch's computation."""
        shared = self.model_dump(exclude=set(PER_ROW_FIELDS), exclude_defaults=False)
        blob = json.dumps(shared, sort_keys=True, separators=(",", ":"))
        return "ps_" + hashlib.sha256(blob.encode()).hexdigest()[:16]


def parse_params(raw: Any, *, field: str = "params") -> GenerationParams:
    """Validate user parameters; the error names the offending field under ``field``."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise InvalidRequest(field, "must be an object")
    try:
        return GenerationParams.model_validate(raw)
    except InvalidRequest as exc:
        raise InvalidRequest(exc.field.replace("params", field, 1), exc.message) from None
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        where = f"{field}.{loc}" if loc else field
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown parameter"
        raise InvalidRequest(where, message) from None


def merged(defaults: Mapping[str, Any] | None, own: Mapping[str, Any] | None) -> dict[str, Any]:
    """A request's parameters: its own over the job's, field by field. A ``null`` of its own
    puts that field back to genq's default (``"temperature": null`` beside ``"do_sample":
    false`` turns sampling off for one request of a sampled job)."""
    both = {**(defaults or {}), **(own or {})}
    return {name: value for name, value in both.items() if value is not None}


def params_schema() -> dict[str, Any]:
    """The JSON schema of a ``params`` object as clients send it: every field optional."""
    schema = GenerationParams.model_json_schema()
    schema["properties"]["stop"] = {
        "anyOf": [
            {"type": "string", "minLength": 1, "maxLength": MAX_STOP_CHARS},
            {
                "type": "array",
                "items": {"type": "string", "minLength": 1, "maxLength": MAX_STOP_CHARS},
                "maxItems": MAX_STOP_STRINGS,
            },
            {"type": "null"},
        ]
    }
    return {**schema, "description": "Generation parameters; unset fields take the defaults."}
