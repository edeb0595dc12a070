"""What goes into the store and what comes out of it: frozen data, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from genq.errors import InvalidRequest
from genq.params import GenerationParams
from genq.store.status import JobStatus, RequestStatus

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class NewRequest:
    """One prompt of a job being created: a text prompt or chat messages, never both; or, for
    an input line that could not be read, neither and the ``error`` it fails with."""

    custom_id: str | None = None
    prompt: str | None = None
    messages: tuple[dict[str, Any], ...] | None = None
    params: GenerationParams | None = None  # resolved; None: the job's
    error: str | None = None

    def __post_init__(self) -> None:
        if self.error is not None:
            if self.prompt is not None or self.messages is not None:
                raise ValueError("a request refused at intake has no prompt")
        elif (self.prompt is None) == (self.messages is None):
            raise InvalidRequest("prompt", "give exactly one of prompt and messages")


@dataclass(frozen=True)
class JobInfo:
    id: str
    tenant: str
    model: str
    status: JobStatus
    params: dict[str, Any]
    param_sets: list[dict[str, Any]] | None
    metadata: dict[str, Any] | None
    priority: int
    total: int
    succeeded: int
    failed: int
    cancelled: int
    refused: int  # of the failed: input lines refused at intake, which never ran
    prompt_tokens: int
    completion_tokens: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    retried: int = 0  # failures a retry requeued (no longer among ``failed``)


@dataclass(frozen=True)
class Claim:
    """A request a worker now holds; ``fence`` must come back with its outcome."""

    request_id: str
    job_id: str
    idx: int
    custom_id: str | None
    prompt: str | None
    messages: list[dict[str, Any]] | None
    params: dict[str, Any]
    group_key: str
    fence: int
    attempts: int


@dataclass(frozen=True)
class Choice:
    text: str
    finish_reason: FinishReason
    completion_tokens: int


@dataclass(frozen=True)
class Outcome:
    """How one claimed request ended: ``choices`` on success, ``error`` on failure."""

    choices: tuple[Choice, ...] = ()
    error: str | None = None
    prompt_tokens: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None

    def __post_init__(self) -> None:
        if (self.error is None) == (not self.choices):
            raise ValueError("an outcome has choices or an error, not both or neither")

    @property
    def completion_tokens(self) -> int:
        return sum(c.completion_tokens for c in self.choices)


@dataclass(frozen=True)
class ResultRow:
    """A finished request as a client reads it back, in input order."""

    request_id: str
    idx: int
    custom_id: str | None
    status: RequestStatus
    choices: tuple[Choice, ...]
    error: str | None
    prompt_tokens: int
    completion_tokens: int
    params: dict[str, Any] | None = None  # its own resolved parameters; None: the job's
    refused: bool = False  # an input line refused at intake: it never ran


@dataclass(frozen=True)
class Announcement:
    """Request ids for one queue message: same model (the queue) and parameter set."""

    model: str
    group_key: str
    request_ids: tuple[str, ...]


@dataclass(frozen=True)
class ReapReport:
    failed: tuple[str, ...]  # gave up: out of attempts
    cancelled: tuple[str, ...]  # lease expired (or left queued) in a cancelling job
    expired: tuple[str, ...]  # lease expired; claimable again
    unannounced: tuple[str, ...]  # queued with no live queue message
    announcements: tuple[Announcement, ...]  # expired + unannounced, ready to publish


@dataclass(frozen=True)
class BatchRecord:
    """One generate call as a worker ran it; ``refused`` counts outcomes not written because
    the claim was no longer the worker's (taken over after its lease ran out, or cancelled)."""

    worker_id: str
    model: str
    group_key: str
    rows: int
    padded_length: int
    prompt_efficiency: float
    seconds: float
    request_ids: tuple[str, ...]
    refused: int = 0
    # Per job: (requests of it this batch finished, their new tokens).
    jobs: dict[str, tuple[int, int]] = field(default_factory=dict)
    id: int | None = None  # set once stored
    created_at: datetime | None = None
