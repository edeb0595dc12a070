"""OpenAI-compatible batches over genq jobs: an uploaded JSONL file becomes one job (its valid
lines; invalid ones are listed in ``errors`` and the error file), and the batch moves through
OpenAI's statuses as its job does: in_progress, then finalizing while a finalizer thread writes
its output and error files (genq.batch_finalizer), then completed, cancelled or expired."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from itertools import chain
from typing import Any

from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from genq.errors import Conflict, NotFound
from genq.intake.bodies import metadata_priority
from genq.producer import Publisher, submit_job
from genq.settings import Settings
from genq.store import JobStatus, NewRequest, cancel_job, get_job
from genq.store.files import FileInfo, get_file
from genq.store.tables import OpenAIBatch, looks_like_id, new_id, utcnow
from genq.uploads import read_upload, served_model, served_models

WINDOWS = {"24h": timedelta(hours=24)}
BATCH_TAG = "openai_batch"
# Statuses stored while the job runs ("expiring": cancelled past its window, read as
# finalizing); "finalizing" follows once the job has ended, then the batch's outcome.
OPEN = ("in_progress", "cancelling", "expiring")
ENDED = {JobStatus.COMPLETED: "completed", JobStatus.CANCELLED: "cancelled"}


def create_batch(
    sessions: sessionmaker[Session],
    publisher: Publisher | None,
    settings: Settings,
    *,
    tenant: str,
    input_file_id: str,
    endpoint: str,
    completion_window: str,
    metadata: dict[str, str] | None = None,
) -> str:
    """A batch of the file's lines: valid ones run as one job, each bad one is listed in the
    batch's ``errors`` (its line, field and ``custom_id``) and its error file. The batch row
    and its job are stored in one transaction."""
    priority = metadata_priority(metadata)
    served = served_models(sessions)
    reader, lines = read_upload(
        sessions, settings, tenant=tenant, file_id=input_file_id, served=served, endpoint=endpoint
    )
    errors: list[dict[str, Any]] = []

    def valid() -> Iterator[NewRequest]:
        for line in lines:
            if line.error is not None:
                errors.append(
                    {
                        "code": "invalid_request",
                        "message": str(line.error),
                        "param": line.error.field or None,
                        "line": line.number,
                        "custom_id": line.custom_id,
                    }
                )
            elif line.request is not None:
                yield line.request

    def model() -> str:  # the first a line names, else the default
        return reader.model or settings.default_model

    requests = valid()
    first = next(requests, None)  # the batch's parameters are its first valid line's
    served_model(model(), settings, served=served)
    batch_id = new_id("batch")
    now = utcnow()

    def insert_row(session: Session, job_id: str | None) -> None:
        served_model(model(), settings, served=served)  # settled once every line is read
        session.execute(
            insert(OpenAIBatch).values(
                id=batch_id,
                tenant=tenant,
                job_id=job_id,
                endpoint=endpoint,
                input_file_id=input_file_id,
                completion_window=completion_window,
                status="in_progress" if job_id else "failed",
                metadata_=metadata,
                errors=errors or None,
                output_file_id=None,
                error_file_id=None,
                invalid=len(errors),
                created_at=now,
                expires_at=now + WINDOWS[completion_window],
                ended_at=None if job_id else now,
            )
        )

    if first is None:
        with sessions.begin() as session:
            insert_row(session, None)
        return batch_id
    assert first.params is not None
    submit_job(
        sessions,
        publisher,
        tenant=tenant,
        model=model,
        params=first.params,
        requests=chain([first], requests),
        metadata={BATCH_TAG: batch_id},
        priority=priority,
        settings=settings,
        with_job=insert_row,
    )
    return batch_id


def _row(session: Session, tenant: str, batch_id: str) -> OpenAIBatch:
    if not looks_like_id(batch_id):
        raise NotFound(f"no batch {batch_id!r}")
    row = session.execute(
        select(OpenAIBatch).where(OpenAIBatch.id == batch_id, OpenAIBatch.tenant == tenant),
        execution_options={"populate_existing": True},
    ).scalar_one_or_none()
    if row is None:
        raise NotFound(f"no batch {batch_id}")
    return row


def read_batch(session: Session, *, tenant: str, batch_id: str) -> dict[str, Any]:
    """The batch as OpenAI clients read it. Reading moves nothing: expiry, finalizing and the
    output files are the finalizer's (genq.batch_finalizer)."""
    return public(session, _row(session, tenant, batch_id))


def _move(
    session: Session,
    row: OpenAIBatch,
    status: str,
    *,
    ended_at: datetime | None = None,
    cancelling_at: datetime | None = None,
) -> bool:
    values: dict[str, Any] = {"status": status}
    if ended_at is not None:
        values["ended_at"] = ended_at
    if cancelling_at is not None:
        values["cancelling_at"] = cancelling_at
    moved = session.execute(
        update(OpenAIBatch)
        .where(OpenAIBatch.id == row.id, OpenAIBatch.status == row.status)
        .values(**values)
        .returning(OpenAIBatch.id)
    ).one_or_none()
    return moved is not None


def cancel(session: Session, *, tenant: str, batch_id: str) -> dict[str, Any]:
    row = _row(session, tenant, batch_id)
    if row.status != "in_progress":
        if row.status in ("cancelling", "cancelled") or row.outcome == "cancelled":
            return read_batch(session, tenant=tenant, batch_id=batch_id)
        raise Conflict(f"a {row.status} batch cannot be cancelled")
    assert row.job_id is not None
    job = get_job(session, tenant=tenant, job_id=row.job_id)
    if not job.status.is_terminal:
        now = utcnow()
        cancel_job(session, tenant=tenant, job_id=row.job_id, now=now)
        _move(session, row, "cancelling", cancelling_at=now)
    return read_batch(session, tenant=tenant, batch_id=batch_id)


def list_batches(session: Session, *, tenant: str, after: str | None, limit: int) -> dict[str, Any]:
    query = select(OpenAIBatch.id).where(OpenAIBatch.tenant == tenant)
    if after is not None:
        cursor = _row(session, tenant, after)
        query = query.where(
            or_(
                OpenAIBatch.created_at < cursor.created_at,
                and_(OpenAIBatch.created_at == cursor.created_at, OpenAIBatch.id < cursor.id),
            )
        )
    ids = list(
        session.scalars(
            query.order_by(OpenAIBatch.created_at.desc(), OpenAIBatch.id.desc()).limit(limit + 1)
        )
    )
    data = [read_batch(session, tenant=tenant, batch_id=i) for i in ids[:limit]]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": len(ids) > limit,
    }


def _shown_status(row: OpenAIBatch, job_ended: bool) -> str:
    """OpenAI's status for the row: a batch whose job has ended but which the finalizer has
    not taken yet reads as finalizing already, and one being finalized after a cancel as
    cancelling until it is cancelled."""
    if row.status == "finalizing":
        return "cancelling" if row.outcome == "cancelled" else "finalizing"
    if row.status == "expiring" or (row.status == "in_progress" and job_ended):
        return "finalizing"
    return row.status


def _ts(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp())


def public(session: Session, row: OpenAIBatch) -> dict[str, Any]:
    counts = {"total": row.invalid, "completed": 0, "failed": row.invalid}
    model, usage = None, None
    job_ended, finished = False, None
    if row.job_id is not None:
        job = get_job(session, tenant=row.tenant, job_id=row.job_id)
        job_ended, finished = job.status.is_terminal, job.finished_at
        counts["total"] += job.total
        counts["completed"] = job.succeeded
        counts["failed"] += job.failed + job.cancelled
        model = job.model
        usage = {
            "input_tokens": job.prompt_tokens,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": job.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": job.prompt_tokens + job.completion_tokens,
        }
    status = _shown_status(row, job_ended)
    ended = _ts(row.ended_at)
    finalizing = row.finalizing_at or (finished if status == "finalizing" else None)
    return {
        "id": row.id,
        "object": "batch",
        "endpoint": row.endpoint,
        "errors": {"object": "list", "data": row.errors} if row.errors else None,
        "input_file_id": row.input_file_id,
        "completion_window": row.completion_window,
        "status": status,
        "output_file_id": row.output_file_id,
        "error_file_id": row.error_file_id,
        "created_at": _ts(row.created_at),
        "in_progress_at": _ts(row.created_at) if row.job_id else None,
        "expires_at": _ts(row.expires_at),
        "finalizing_at": _ts(finalizing) if row.outcome != "cancelled" else None,
        "completed_at": ended if status == "completed" else None,
        "failed_at": ended if status == "failed" else None,
        "expired_at": ended if status == "expired" else None,
        "cancelling_at": _ts(row.cancelling_at),
        "cancelled_at": ended if status == "cancelled" else None,
        "request_counts": counts,
        "metadata": row.metadata_,
        "model": model,
        "usage": usage,
    }


def file_public(
    session: Session, *, tenant: str, file_id: str, retention_days: float = 0
) -> dict[str, Any]:
    """A file as OpenAI clients read it; ``expires_at`` is when retention deletes it (none
    while a batch still names it past then, and never with ``retention_days`` 0)."""
    return file_object(get_file(session, tenant=tenant, file_id=file_id), retention_days)


def file_object(info: FileInfo, retention_days: float = 0) -> dict[str, Any]:
    """:func:`file_public` of a file already read."""
    expires = info.created_at + timedelta(days=retention_days) if retention_days else None
    return {
        "id": info.id,
        "object": "file",
        "bytes": info.bytes,
        "created_at": _ts(info.created_at),
        "expires_at": _ts(expires),
        "filename": info.filename,
        "purpose": info.purpose,
        "status": "processed",
        "status_details": None,
    }
