"""Request bodies of the native API: unknown fields and wrong types are refused, by name."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from genq.store import NewRequest
from genq.store.tables import MAX_CUSTOM_ID_LENGTH, MAX_NAME_LENGTH

Strict = ConfigDict(extra="forbid", strict=True)


class Message(BaseModel):
    model_config = Strict

    role: str = Field(min_length=1, max_length=32)
    content: str


class RequestIn(BaseModel):
    model_config = Strict

    custom_id: str | None = Field(default=None, max_length=MAX_CUSTOM_ID_LENGTH)
    prompt: str | None = Field(default=None, min_length=1)
    messages: list[Message] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_of(self) -> RequestIn:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of prompt or messages")
        return self

    def new(self) -> NewRequest:
        messages = None
        if self.messages is not None:
            messages = tuple({"role": m.role, "content": m.content} for m in self.messages)
        return NewRequest(custom_id=self.custom_id, prompt=self.prompt, messages=messages)


class JobCreate(BaseModel):
    model_config = Strict

    model: str | None = Field(default=None, min_length=1, max_length=MAX_NAME_LENGTH)
    params: dict[str, Any] | None = None
    requests: list[RequestIn]
    metadata: dict[str, str] | None = Field(default=None, max_length=16)
