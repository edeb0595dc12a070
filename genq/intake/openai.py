"""OpenAI Batch input lines: ``{"custom_id", "method": "POST", "url", "body"}`` with a
completions or chat completions body, mapped onto genq's parameters with OpenAI's defaults.
Errors name the field as the client wrote it (``body.max_tokens``, not genq's name)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from genq.errors import InvalidRequest
from genq.intake.bodies import STRICT, CustomId, validated
from genq.params import MAX_NEW_TOKENS, MAX_RETURN_SEQUENCES, GenerationParams, parse_params
from genq.store.tables import MAX_NAME_LENGTH

LineForm = Literal["native", "completions", "chat"]
ENDPOINTS: dict[str, LineForm] = {
    "/v1/completions": "completions",
    "/v1/chat/completions": "chat",
}
OPENAI_DEFAULT_MAX_TOKENS = 16  # OpenAI's completions default when max_tokens is absent
UNSUPPORTED = frozenset(
    {
        "logprobs",
        "top_logprobs",
        "logit_bias",
        "best_of",
        "echo",
        "suffix",
        "tools",
        "tool_choice",
        "functions",
        "function_call",
        "response_format",
        "stream",
        "modalities",
        "audio",
        "prediction",
        "reasoning_effort",
    }
)


class OpenAILine(BaseModel):
    model_config = STRICT

    custom_id: CustomId | None = None
    method: Literal["POST"] = "POST"
    url: Literal["/v1/completions", "/v1/chat/completions"]
    body: dict[str, Any]


class OpenAIMessage(BaseModel):
    """A chat message as OpenAI takes it; ``developer``, OpenAI's newer name for ``system``,
    reads as ``system``."""

    model_config = STRICT

    role: Literal["system", "developer", "user", "assistant"]
    content: str = Field(min_length=1)

    @field_validator("role")
    @classmethod
    def _system(cls, role: str) -> str:
        return "system" if role == "developer" else role


class OpenAIBody(BaseModel):
    """The fields of both endpoints' bodies genq honours (``user``, ``metadata``, ``store``,
    ``stream_options`` and ``parallel_tool_calls`` are accepted and have no effect)."""

    model_config = STRICT

    model: str | None = Field(default=None, min_length=1, max_length=MAX_NAME_LENGTH)
    prompt: str | None = Field(default=None, min_length=1)
    messages: list[OpenAIMessage] | None = Field(default=None, min_length=1)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_NEW_TOKENS)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=MAX_NEW_TOKENS)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    n: int | None = Field(default=None, ge=1, le=MAX_RETURN_SEQUENCES)
    stop: Any = None  # a string or a list of them: checked as genq's stop
    seed: int | None = None
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    user: str | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    stream_options: dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None


def read_openai(raw: dict[str, Any]) -> tuple[OpenAIBody, GenerationParams]:
    """An OpenAI line's body and its generation parameters."""
    line: OpenAILine = validated(OpenAILine, raw)
    chat = ENDPOINTS[line.url] == "chat"
    for name in line.body:
        if name in UNSUPPORTED:
            raise InvalidRequest(f"body.{name}", "not supported by genq")
    body: OpenAIBody = validated(OpenAIBody, line.body, where="body")
    wanted, other = ("messages", "prompt") if chat else ("prompt", "messages")
    if getattr(body, wanted) is None:
        raise InvalidRequest(f"body.{wanted}", f"required for {line.url}")
    if getattr(body, other) is not None:
        raise InvalidRequest(f"body.{other}", f"not accepted by {line.url}")
    if not chat and body.max_completion_tokens is not None:
        raise InvalidRequest("body.max_completion_tokens", f"not accepted by {line.url}")
    for name in ("frequency_penalty", "presence_penalty"):
        if getattr(body, name):
            raise InvalidRequest(f"body.{name}", "not supported by genq (use 0)")
    return body, openai_params(body, chat=chat)


def openai_params(body: OpenAIBody, *, chat: bool) -> GenerationParams:
    """OpenAI's sampling fields as genq's parameters: ``temperature`` 0 is greedy, OpenAI's
    default (1) samples; completions default to 16 new tokens."""
    limit_name = "max_completion_tokens" if body.max_completion_tokens is not None else "max_tokens"
    limit = body.max_completion_tokens or body.max_tokens
    if limit is None and not chat:
        limit = OPENAI_DEFAULT_MAX_TOKENS
    temperature = 1.0 if body.temperature is None else body.temperature
    sampled = temperature > 0
    params: dict[str, Any] = {"do_sample": sampled, "stop": body.stop}
    if limit is not None:
        params["max_new_tokens"] = limit
    params["num_return_sequences"] = body.n or 1  # greedy: n equal choices, as OpenAI's
    if sampled:
        params.update(temperature=temperature, top_p=body.top_p, seed=body.seed)
    # Names the client did not write: genq's own, mapped back to the body's.
    names = {"max_new_tokens": limit_name, "num_return_sequences": "n"}
    try:
        return parse_params({k: v for k, v in params.items() if v is not None})
    except InvalidRequest as exc:
        name = exc.field.removeprefix("params.").split(".")[0]
        rest = exc.field.removeprefix(f"params.{name}")
        raise InvalidRequest(f"body.{names.get(name, name)}{rest}", exc.message) from None
