"""The native API's answers as types, for the OpenAPI schema. Routes still render their dicts
themselves (validating each answer would cost the poll routes more than their read); the
schema test checks every answer against these, so a field added or dropped on one side only
fails it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

CLOSED = ConfigDict(extra="forbid")

JobStatusName = Literal["queued", "running", "cancelling", "completed", "cancelled"]
RequestStatusName = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class JobCounts(BaseModel):
    model_config = CLOSED
    total: int
    succeeded: int
    failed: int
    cancelled: int
    refused: int  # of the failed: input lines refused at intake, never run


class JobUsage(BaseModel):
    model_config = CLOSED
    prompt_tokens: int
    completion_tokens: int


class Throughput(BaseModel):
    model_config = CLOSED
    requests_per_second: float
    tokens_per_second: float


class QueueStanding(BaseModel):
    """Where an open job stands in the fair share of its model's workers."""

    model_config = CLOSED
    queued: int
    running: int
    next_window: int
    share: float
    jobs_waiting: int


class JobPublic(BaseModel):
    model_config = CLOSED
    id: str
    object: Literal["job"]
    model: str
    status: JobStatusName
    params: dict[str, Any]
    param_sets: list[dict[str, Any]]
    metadata: dict[str, Any] | None
    priority: int
    counts: JobCounts
    retried: int
    progress: float
    created_at: str
    started_at: str | None
    finished_at: str | None
    usage: JobUsage
    throughput: Throughput
    eta_seconds: float | None
    queue: QueueStanding | None


class JobRetried(JobPublic):
    requeued: int  # failed requests this retry put back in the queue


class JobList(BaseModel):
    model_config = CLOSED
    object: Literal["list"]
    data: list[JobPublic]
    has_more: bool
    last_id: str | None


class ChoicePublic(BaseModel):
    model_config = CLOSED
    text: str
    finish_reason: Literal["stop", "length"]
    completion_tokens: int


class ResultPublic(BaseModel):
    model_config = CLOSED
    idx: int
    custom_id: str | None
    status: RequestStatusName
    params: dict[str, Any] | None
    text: str | None
    finish_reason: Literal["stop", "length"] | None
    choices: list[ChoicePublic]
    usage: JobUsage
    error: str | None


class ResultPage(BaseModel):
    model_config = CLOSED
    object: Literal["list"]
    job_status: JobStatusName
    data: list[ResultPublic]
    next: int
    has_more: bool


class WebhookSecret(BaseModel):
    model_config = CLOSED
    object: Literal["webhook_secret"]
    secret: str


class WebhookDeliveryPublic(BaseModel):
    model_config = CLOSED
    id: str
    event: Literal["job.completed", "job.failed", "job.cancelled"]
    url: str
    status: Literal["pending", "delivered", "failed"]
    attempts: int
    last_status_code: int | None
    last_error: str | None
    created_at: str
    delivered_at: str | None


class WebhookDeliveryList(BaseModel):
    model_config = CLOSED
    object: Literal["list"]
    data: list[WebhookDeliveryPublic]


def answers(model: type[BaseModel], description: str = "OK") -> dict[int | str, dict[str, Any]]:
    """A 200 documented as ``model`` (the route renders it itself)."""
    return {200: {"model": model, "description": description}}
