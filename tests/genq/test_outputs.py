"""Output lines in OpenAI's form parse as the openai client's own types, field for field."""

from __future__ import annotations

from typing import Any

from openai.types import Completion
from openai.types.chat import ChatCompletion

from genq.intake.openai import OpenAIBody, openai_params
from genq.outputs import SYSTEM_FINGERPRINT, render

CHOICES = [
    {"text": "Hi", "finish_reason": "stop", "completion_tokens": 2},
    {"text": "Hi", "finish_reason": "stop", "completion_tokens": 2},
]


def _exact(model: type[Any], data: dict[str, Any]) -> None:
    model.model_validate(data)
    fields = model.model_fields
    required = {name for name, field in fields.items() if field.is_required()}
    assert required <= set(data) <= set(fields), (model.__name__, sorted(data))


def test_chat_and_completion_bodies_are_openais() -> None:
    for form, kind, prefix in (
        ("chat", ChatCompletion, "chatcmpl-"),
        ("completions", Completion, "cmpl-"),
    ):
        line = render("c1", form, model="m", choices=CHOICES, prompt_tokens=5)  # type: ignore[arg-type]
        body = line["response"]["body"]
        _exact(kind, body)
        assert body["id"].startswith(prefix) and body["system_fingerprint"] == SYSTEM_FINGERPRINT
        assert body["usage"] == {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}
        assert [c["index"] for c in body["choices"]] == [0, 1]


def test_greedy_n_is_accepted_as_openai_does() -> None:
    body = OpenAIBody.model_validate({"prompt": "x", "temperature": 0, "n": 2, "max_tokens": 3})
    params = openai_params(body, chat=False)
    assert params.num_return_sequences == 2 and not params.do_sample
