"""What the dashboard reads beyond a job's own row: its throughput over time and the batches it
rode in (from ``job_batches``, by the job's key), its errors (a partial index of failed
requests), and the workers with what they did lately. Every read is bounded by an index range,
however large the job or the tables."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select

from genq.store.db import Reader
from genq.store.status import RequestStatus
from genq.store.tables import Batch, JobBatch, OpenAIBatch, Request, WorkerHeartbeat, utcnow

RECENT_BATCHES = 2000
"""Most of a job's batches its page reads (the newest): enough for a chart's worth."""


@dataclass(frozen=True)
class JobBatchRow:
    batch_id: int
    created_at: datetime
    worker_id: str
    rows: int  # the batch's rows, all jobs together
    job_rows: int  # requests of this job the batch finished
    completion_tokens: int  # their new tokens
    prompt_efficiency: float
    seconds: float


@dataclass(frozen=True)
class FailedRequest:
    idx: int
    custom_id: str | None
    error: str


@dataclass(frozen=True)
class WorkerActivity:
    worker_id: str
    model: str
    seen_at: datetime
    batches: int  # recorded in the last ``within`` seconds
    rows: int


def job_batches(session: Reader, *, job_id: str, limit: int = RECENT_BATCHES) -> list[JobBatchRow]:
    """The newest ``limit`` batches that finished requests of ``job_id``, oldest first."""
    rows = session.execute(
        select(
            JobBatch.batch_id,
            JobBatch.created_at,
            Batch.worker_id,
            Batch.rows,
            JobBatch.rows,
            JobBatch.completion_tokens,
            Batch.prompt_efficiency,
            Batch.seconds,
        )
        .join(Batch, Batch.id == JobBatch.batch_id)
        .where(JobBatch.job_id == job_id)
        .order_by(JobBatch.batch_id.desc())
        .limit(limit)
    ).all()
    return [
        JobBatchRow(int(b), c, str(w), int(r), int(jr), int(t), float(e), float(s))
        for b, c, w, r, jr, t, e, s in reversed(rows)
    ]


def job_errors(session: Reader, *, job_id: str, limit: int = 20) -> list[FailedRequest]:
    """The first ``limit`` failed requests of ``job_id``, in input order."""
    rows = session.execute(
        select(Request.idx, Request.custom_id, Request.error)
        .where(Request.job_id == job_id, Request.status == RequestStatus.FAILED)
        .order_by(Request.idx)
        .limit(limit)
    ).all()
    return [FailedRequest(int(i), c, e or "") for i, c, e in rows]


def worker_activity(
    session: Reader, *, within_seconds: float, now: datetime | None = None
) -> list[WorkerActivity]:
    """Workers seen in the last ``within_seconds``, with the batches each recorded then."""
    since = (now or utcnow()) - timedelta(seconds=within_seconds)
    done = {
        worker: (int(n), int(rows or 0))
        for worker, n, rows in session.execute(
            select(Batch.worker_id, func.count(), func.sum(Batch.rows))
            .where(Batch.created_at >= since)
            .group_by(Batch.worker_id)
        )
    }
    beats = session.execute(
        select(WorkerHeartbeat.worker_id, WorkerHeartbeat.model, WorkerHeartbeat.seen_at)
        .where(WorkerHeartbeat.seen_at >= since)
        .order_by(WorkerHeartbeat.model, WorkerHeartbeat.worker_id)
    ).all()
    return [WorkerActivity(w, m, seen, *done.get(w, (0, 0))) for w, m, seen in beats]


@dataclass(frozen=True)
class BatchLink:
    """An OpenAI batch as the dashboard lists it: the job behind it carries its progress."""

    id: str
    endpoint: str
    status: str  # as last written; the job's own status is the live one
    job_id: str | None
    created_at: datetime


def tenant_batches(session: Reader, *, tenant: str, limit: int = 20) -> list[BatchLink]:
    """The tenant's newest ``limit`` OpenAI batches, read as stored (no refresh)."""
    rows = session.execute(
        select(
            OpenAIBatch.id,
            OpenAIBatch.endpoint,
            OpenAIBatch.status,
            OpenAIBatch.job_id,
            OpenAIBatch.created_at,
        )
        .where(OpenAIBatch.tenant == tenant)
        .order_by(OpenAIBatch.created_at.desc(), OpenAIBatch.id.desc())
        .limit(limit)
    ).all()
    return [BatchLink(*row) for row in rows]
