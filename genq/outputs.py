"""Output lines of a bulk job, one per input line, in the input's form: genq's native form, or
OpenAI Batch output lines for OpenAI input. A line that failed carries its error."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from genq import __version__
from genq.intake import LineForm

SYSTEM_FINGERPRINT = f"fp_genq_{__version__}"
"""What OpenAI calls the backend configuration a response came from: genq and its version."""


def render(
    custom_id: str,
    form: LineForm,
    *,
    model: str,
    choices: Sequence[Mapping[str, Any]] = (),
    prompt_tokens: int = 0,
    error: str | None = None,
    param: str | None = None,
) -> dict[str, Any]:
    """The output line of input line ``custom_id``: its result (choices) or its ``error`` (about
    field ``param``, when the line itself was bad), in the input's ``form``."""
    completion_tokens = sum(int(c["completion_tokens"]) for c in choices)
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }
    if form == "native":
        if error is not None:
            return {"custom_id": custom_id, "error": error}
        first = choices[0]
        return {
            "custom_id": custom_id,
            "text": first["text"],
            "finish_reason": first["finish_reason"],
            "choices": [dict(c) for c in choices],
            "usage": usage,
            "error": None,
        }
    request_id = f"req_{uuid.uuid4().hex}"
    out: dict[str, Any] = {"id": f"batch_req_{uuid.uuid4().hex}", "custom_id": custom_id}
    if error is not None:
        body: dict[str, Any] = {
            "error": {
                "message": error,
                "type": "invalid_request_error",
                "param": param or None,
                "code": None,
            }
        }
        out.update(
            response={"status_code": 400, "request_id": request_id, "body": body}, error=None
        )
        return out
    if form == "chat":
        body_choices = [
            {
                "index": i,
                "message": {"role": "assistant", "content": c["text"]},
                "finish_reason": c["finish_reason"],
                "logprobs": None,
            }
            for i, c in enumerate(choices)
        ]
        obj, prefix = "chat.completion", "chatcmpl"
    else:
        body_choices = [
            {"index": i, "text": c["text"], "finish_reason": c["finish_reason"], "logprobs": None}
            for i, c in enumerate(choices)
        ]
        obj, prefix = "text_completion", "cmpl"
    body = {
        "id": f"{prefix}-{uuid.uuid4().hex}",
        "object": obj,
        "created": int(time.time()),
        "model": model,
        "choices": body_choices,
        "usage": usage,
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }
    out.update(response={"status_code": 200, "request_id": request_id, "body": body}, error=None)
    return out
