"""What the native jobs API does, as plain functions: submit a job, describe it with progress,
page through its results. The HTTP layer (api/) parses and calls these."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from genq.errors import InvalidRequest
from genq.intake import JobCreate, Line, job_requests
from genq.producer import Publisher, submit_job
from genq.settings import Settings
from genq.store import JobInfo, JobStatus, NewRequest, ResultRow, list_results
from genq.store.tables import utcnow
from genq.uploads import read_upload, served_model, served_models


def submit(
    sessions: sessionmaker[Session],
    publisher: Publisher | None,
    settings: Settings,
    *,
    tenant: str,
    body: JobCreate,
) -> str:
    """Check a native job and store it; returns its id. A body that lists its requests is
    stored whole or not at all; a job of an uploaded file (``input_file_id``) keeps one request
    per non-blank line, a line that cannot be read failing alone with its error."""
    served = served_models(sessions)
    requests: Iterable[NewRequest]
    if body.input_file_id is None:
        params, requests = job_requests(body, settings=settings)
        model: str | Callable[[], str] = served_model(
            body.model or settings.default_model, settings, served=served
        )
        check = None
    else:
        if body.requests is not None:
            raise InvalidRequest("input_file_id", "give requests or input_file_id, not both")
        if body.model is not None:
            served_model(body.model, settings, served=served)
        reader, lines = read_upload(
            sessions,
            settings,
            tenant=tenant,
            file_id=body.input_file_id,
            served=served,
            defaults=body.params,
            model=body.model,
        )
        params, requests = reader.params, file_requests(lines)

        def model() -> str:  # the one asked for, else the first a line names, else the default
            return reader.model or settings.default_model

        def check(_session: Session, _job_id: str) -> None:
            served_model(model(), settings, served=served)

    return submit_job(
        sessions,
        publisher,
        tenant=tenant,
        model=model,
        params=params,
        requests=requests,
        metadata=body.metadata,
        priority=body.priority,
        webhook_url=body.webhook_url,
        settings=settings,
        with_job=check,
    )


def file_requests(lines: Iterable[Line]) -> Iterator[NewRequest]:
    """A request per line, a line that cannot be read failing alone with its error; raises at
    the end if none can run."""
    first_error = None
    runnable = 0
    for line in lines:
        if line.request is not None:
            runnable += 1
            yield line.request
        else:
            first_error = first_error or line.error_text
            yield NewRequest(custom_id=line.custom_id, error=line.error_text)
    if not runnable:
        raise InvalidRequest("input_file_id", f"no line can run; {first_error}")


_STATUS_RANK = {
    JobStatus.QUEUED: 0,
    JobStatus.RUNNING: 1,
    JobStatus.CANCELLING: 2,
    JobStatus.COMPLETED: 3,
    JobStatus.CANCELLED: 3,
}


def job_is_ahead(held: JobInfo, other: JobInfo) -> bool:
    """Whether ``held`` was read after ``other``, as far as the job shows: its status only moves
    forward and its counts and tokens only grow, so a later read is never behind in any."""

    def progress(job: JobInfo) -> tuple[int, int, int, int]:
        done = job.succeeded + job.failed + job.cancelled
        # A retry takes a completed job back to queued: its count comes first.
        return job.retried, _STATUS_RANK[job.status], done, job.completion_tokens

    return progress(held) > progress(other)


def job_public(job: JobInfo, *, now: datetime | None = None) -> dict[str, Any]:
    """A job as clients read it: counts, progress, tokens, and throughput and an ETA while it
    runs (from the rate since it started)."""
    now = now or utcnow()
    done = job.succeeded + job.failed + job.cancelled
    elapsed = ((job.finished_at or now) - job.started_at).total_seconds() if job.started_at else 0
    rate = (done - job.refused) / elapsed if elapsed > 0 else 0.0  # refused lines never ran
    running = not job.status.is_terminal
    return {
        "id": job.id,
        "object": "job",
        "model": job.model,
        "status": str(job.status),
        "params": job.params,
        "param_sets": job.param_sets or [],
        "metadata": job.metadata,
        "priority": job.priority,
        "counts": {
            "total": job.total,
            "succeeded": job.succeeded,
            "failed": job.failed,
            "cancelled": job.cancelled,
            "refused": job.refused,
        },
        "retried": job.retried,  # failures put back in the queue by retries
        "progress": done / job.total if job.total else 1.0,
        "created_at": job.created_at.isoformat(),
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "usage": {
            "prompt_tokens": job.prompt_tokens,
            "completion_tokens": job.completion_tokens,
        },
        "throughput": {
            "requests_per_second": round(rate, 3),
            "tokens_per_second": round(job.completion_tokens / elapsed, 3) if elapsed > 0 else 0,
        },
        "eta_seconds": round((job.total - done) / rate, 1) if running and rate > 0 else None,
        # Where an open job stands in the fair share (GET /v1/jobs/{id} fills it in).
        "queue": None,
    }


def result_public(row: ResultRow, *, job_params: dict[str, Any]) -> dict[str, Any]:
    """A finished request as clients read it, with the parameters it ran with."""
    first = row.choices[0] if row.choices else None
    return {
        "idx": row.idx,
        "custom_id": row.custom_id,
        "status": str(row.status),
        "params": None if row.refused else row.params or job_params,
        "text": first.text if first else None,
        "finish_reason": first.finish_reason if first else None,
        "choices": [
            {
                "text": c.text,
                "finish_reason": c.finish_reason,
                "completion_tokens": c.completion_tokens,
            }
            for c in row.choices
        ],
        "usage": {"prompt_tokens": row.prompt_tokens, "completion_tokens": row.completion_tokens},
        "error": row.error,
    }


def all_results(
    sessions: sessionmaker[Session], *, job_id: str, total: int, page: int = 1000
) -> Iterator[ResultRow]:
    """Every finished result of a job of ``total`` requests in input order, a range of
    ``page`` positions per transaction (see :func:`list_results`)."""
    for after in range(-1, total - 1, page):
        with sessions.begin() as session:
            rows = list_results(
                session, job_id=job_id, after_idx=after, limit=page, upto_idx=after + page
            )
        yield from rows


STREAM_CHUNK_BYTES = 64 * 1024
"""Bytes of JSONL sent at once: a send per line cost more than rendering it."""


def jsonl_lines(rows: Iterator[ResultRow], *, job_params: dict[str, Any]) -> Iterator[bytes]:
    """The rows as JSONL, in chunks of about :data:`STREAM_CHUNK_BYTES`."""
    lines: list[bytes] = []
    size = 0
    for row in rows:
        line = json.dumps(result_public(row, job_params=job_params)).encode() + b"\n"
        lines.append(line)
        size += len(line)
        if size >= STREAM_CHUNK_BYTES:
            yield b"".join(lines)
            lines, size = [], 0
    if lines:
        yield b"".join(lines)
