"""What the engine takes and gives: plain frozen data, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from genq.params import GenerationParams

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class GenRequest:
    key: str  # the caller's handle: a request id, a line number
    params: GenerationParams
    prompt: str | None = None
    messages: tuple[dict[str, Any], ...] | None = None  # chat turns, rendered by the chat template


@dataclass(frozen=True)
class Choice:
    text: str
    finish_reason: FinishReason
    completion_tokens: int


@dataclass(frozen=True)
class GenResult:
    key: str
    choices: tuple[Choice, ...] = ()
    prompt_tokens: int = 0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def completion_tokens(self) -> int:
        return sum(choice.completion_tokens for choice in self.choices)


@dataclass(frozen=True)
class BatchReport:
    """One generate call, as run: what ops and tests look at."""

    group: str
    keys: tuple[str, ...]
    rows: int
    padded_length: int
    prompt_efficiency: float
    seconds: float
    results: tuple[GenResult, ...] = field(default=())
