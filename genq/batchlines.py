"""Input and output lines of a bulk job, in genq's native form or OpenAI's Batch form.

Native:  {"custom_id": "a", "prompt": "...", "params": {...}}
OpenAI:  {"custom_id": "a", "method": "POST", "url": "/v1/completions", "body": {...}}
Output mirrors the input's form, one line per input line. A bad line becomes an error line.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from genq.errors import InvalidRequest
from genq.params import GenerationParams, parse_params

Form = Literal["native", "completions", "chat"]
ENDPOINTS: dict[str, Form] = {"/v1/completions": "completions", "/v1/chat/completions": "chat"}
OPENAI_DEFAULT_MAX_TOKENS = 16  # OpenAI's completions default when max_tokens is absent
OPENAI_UNSUPPORTED = (
    "logprobs",
    "top_logprobs",
    "logit_bias",
    "best_of",
    "echo",
    "suffix",
    "tools",
    "tool_choice",
    "functions",
    "response_format",
    "stream",
)
OPENAI_IGNORED = ("model", "user", "metadata", "store", "stream_options", "parallel_tool_calls")


@dataclass(frozen=True)
class Line:
    """One parsed input line: what to generate, or why it cannot be."""

    index: int
    custom_id: str
    form: Form
    params: GenerationParams | None = None
    prompt: str | None = None
    messages: tuple[dict[str, Any], ...] | None = None
    error: InvalidRequest | None = None


def parse_line(text: str, index: int) -> Line:
    custom_id = f"line-{index + 1}"
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        return Line(index, custom_id, "native", error=InvalidRequest("", f"invalid JSON: {exc}"))
    if not isinstance(raw, dict):
        return Line(index, custom_id, "native", error=InvalidRequest("", "line is not an object"))
    custom_id = str(raw.get("custom_id", custom_id))
    form: Form = ENDPOINTS.get(str(raw.get("url")), "completions") if "body" in raw else "native"
    try:
        if form == "native":
            return _native(raw, index, custom_id)
        return _openai(raw, index, custom_id)
    except InvalidRequest as exc:
        return Line(index, custom_id, form, error=exc)


def _native(raw: Mapping[str, Any], index: int, custom_id: str) -> Line:
    unknown = set(raw) - {"custom_id", "prompt", "messages", "params"}
    if unknown:
        raise InvalidRequest(sorted(unknown)[0], "unknown field")
    prompt, messages = _prompt_or_messages(raw)
    return Line(index, custom_id, "native", parse_params(raw.get("params")), prompt, messages)


def _openai(raw: Mapping[str, Any], index: int, custom_id: str) -> Line:
    if raw.get("method", "POST") != "POST":
        raise InvalidRequest("method", "only POST is supported")
    url = raw.get("url")
    if url not in ENDPOINTS:
        raise InvalidRequest("url", f"must be one of {', '.join(ENDPOINTS)}")
    form = ENDPOINTS[url]
    body = raw.get("body")
    if not isinstance(body, dict):
        raise InvalidRequest("body", "must be an object")
    params = openai_params(body, chat=form == "chat")
    if form == "chat":
        if "messages" not in body:
            raise InvalidRequest("body.messages", "required for /v1/chat/completions")
        _, messages = _prompt_or_messages({"messages": body["messages"]}, where="body.")
        return Line(index, custom_id, form, params, messages=messages)
    if not isinstance(body.get("prompt"), str):
        raise InvalidRequest("body.prompt", "must be a string")
    prompt, _ = _prompt_or_messages({"prompt": body["prompt"]}, where="body.")
    return Line(index, custom_id, form, params, prompt=prompt)


def openai_params(body: Mapping[str, Any], *, chat: bool) -> GenerationParams:
    """Map an OpenAI request body onto generation parameters (OpenAI's defaults included)."""
    known = {
        "prompt",
        "messages",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "n",
        "stop",
        "seed",
        "frequency_penalty",
        "presence_penalty",
        *OPENAI_IGNORED,
    }
    for name in body:
        if name in OPENAI_UNSUPPORTED or name not in known:
            raise InvalidRequest(f"body.{name}", "not supported by genq")
    for name in ("frequency_penalty", "presence_penalty"):
        if body.get(name):
            raise InvalidRequest(f"body.{name}", "not supported by genq (use 0)")
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if limit is None and not chat:
        limit = OPENAI_DEFAULT_MAX_TOKENS
    temperature = body.get("temperature", 1.0)
    if not isinstance(temperature, int | float) or temperature < 0:
        raise InvalidRequest("body.temperature", "must be a number >= 0")
    sampled = temperature > 0
    params: dict[str, Any] = {"do_sample": sampled, "stop": body.get("stop")}
    if limit is not None:
        params["max_new_tokens"] = limit
    if sampled:
        params.update(temperature=temperature, top_p=body.get("top_p"), seed=body.get("seed"))
        params["num_return_sequences"] = body.get("n", 1)
    elif body.get("n", 1) != 1:
        raise InvalidRequest("body.n", "n > 1 needs temperature > 0")
    try:
        return parse_params(params)
    except InvalidRequest as exc:
        raise InvalidRequest(exc.field.replace("params.", "body.", 1), exc.message) from None


def _prompt_or_messages(
    raw: Mapping[str, Any], *, where: str = ""
) -> tuple[str | None, tuple[dict[str, Any], ...] | None]:
    prompt, messages = raw.get("prompt"), raw.get("messages")
    if (prompt is None) == (messages is None):
        raise InvalidRequest(f"{where}prompt", "give exactly one of prompt or messages")
    if prompt is not None:
        if not isinstance(prompt, str) or not prompt:
            raise InvalidRequest(f"{where}prompt", "must be a non-empty string")
        return prompt, None
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest(f"{where}messages", "must be a non-empty list")
    for i, message in enumerate(messages):
        if (
            not isinstance(message, dict)
            or not isinstance(message.get("role"), str)
            or not isinstance(message.get("content"), str)
        ):
            raise InvalidRequest(f"{where}messages.{i}", "needs string role and content")
    return None, tuple(dict(m) for m in messages)


def render(
    line: Line,
    *,
    model: str,
    choices: Sequence[Mapping[str, Any]] = (),
    prompt_tokens: int = 0,
    error: str | None = None,
) -> dict[str, Any]:
    """The output line for ``line``: its result (choices) or its error, in the input's form."""
    completion_tokens = sum(int(c["completion_tokens"]) for c in choices)
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if line.form == "native":
        if error is not None:
            return {"custom_id": line.custom_id, "error": error}
        first = choices[0]
        return {
            "custom_id": line.custom_id,
            "text": first["text"],
            "finish_reason": first["finish_reason"],
            "choices": [dict(c) for c in choices],
            "usage": usage,
            "error": None,
        }
    request_id = f"req_{uuid.uuid4().hex}"
    out: dict[str, Any] = {"id": f"batch_req_{uuid.uuid4().hex}", "custom_id": line.custom_id}
    if error is not None:
        field = line.error.field if line.error is not None else None
        body: dict[str, Any] = {
            "error": {
                "message": error,
                "type": "invalid_request_error",
                "param": field or None,
                "code": None,
            }
        }
        out.update(
            response={"status_code": 400, "request_id": request_id, "body": body}, error=None
        )
        return out
    if line.form == "chat":
        body_choices = [
            {
                "index": i,
                "message": {"role": "assistant", "content": c["text"]},
                "finish_reason": c["finish_reason"],
                "logprobs": None,
            }
            for i, c in enumerate(choices)
        ]
        obj = "chat.completion"
    else:
        body_choices = [
            {"index": i, "text": c["text"], "finish_reason": c["finish_reason"], "logprobs": None}
            for i, c in enumerate(choices)
        ]
        obj = "text_completion"
    body = {
        "id": f"cmpl-{uuid.uuid4().hex}",
        "object": obj,
        "created": int(time.time()),
        "model": model,
        "choices": body_choices,
        "usage": usage,
    }
    out.update(response={"status_code": 200, "request_id": request_id, "body": body}, error=None)
    return out
