"""The record of generate calls: which requests rode together, how well they packed."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from genq.store.records import BatchRecord
from genq.store.tables import Batch, JobBatch, utcnow

DEFAULT_BATCH_PAGE = 1000


def record_batch(session: Session, *, batch: BatchRecord, now: datetime | None = None) -> int:
    """Store ``batch`` (in the transaction that writes its outcomes), with its part in each
    job; returns its id."""
    created = now or utcnow()
    row = session.execute(
        insert(Batch)
        .values(
            worker_id=batch.worker_id,
            model=batch.model,
            group_key=batch.group_key,
            rows=batch.rows,
            padded_length=batch.padded_length,
            prompt_efficiency=batch.prompt_efficiency,
            seconds=batch.seconds,
            request_ids=list(batch.request_ids),
            refused=batch.refused,
            created_at=created,
        )
        .returning(Batch.id)
    ).one()
    batch_id = int(row.id)
    if batch.jobs:
        session.execute(
            insert(JobBatch),
            [
                {
                    "job_id": job_id,
                    "batch_id": batch_id,
                    "rows": rows,
                    "completion_tokens": tokens,
                    "created_at": created,
                }
                for job_id, (rows, tokens) in sorted(batch.jobs.items())
            ],
        )
    return batch_id


def list_batches(
    session: Session, *, after_id: int = 0, limit: int = DEFAULT_BATCH_PAGE
) -> list[BatchRecord]:
    """Recorded batches in the order they were written, from id ``after_id + 1`` on."""
    rows = session.scalars(
        select(Batch).where(Batch.id > after_id).order_by(Batch.id).limit(limit)
    ).all()
    return [
        BatchRecord(
            worker_id=row.worker_id,
            model=row.model,
            group_key=row.group_key,
            rows=row.rows,
            padded_length=row.padded_length,
            prompt_efficiency=row.prompt_efficiency,
            seconds=row.seconds,
            request_ids=tuple(row.request_ids),
            refused=row.refused,
            id=row.id,
            created_at=row.created_at,
        )
        for row in rows
    ]
