"""Retention: finished jobs (their requests and results, their OpenAI batch) and files older
than the retention period are deleted, a bounded batch per transaction, so no delete holds
locks for long and the tables stop growing without end.

A job is due once it has finished (completed or cancelled) before the cutoff; a file once it
was created before the cutoff and no remaining batch names it. Running work is never touched.
Like every store function these run in the caller's transaction and never commit."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, Delete, Update, delete, func, insert, select, update
from sqlalchemy.orm import Session

from genq.store.status import JobStatus
from genq.store.tables import File, Job, OpenAIBatch, PrunedTotals, Request, Result
from genq.store.views import TOTALS, job_total

ROWS_PER_PASS = 5000
"""Most requests (with their results) one call deletes: one short transaction's worth."""

_ENDED = (JobStatus.COMPLETED, JobStatus.CANCELLED)


@dataclass
class PruneReport:
    requests: int = 0
    jobs: int = 0
    batches: int = 0
    files: int = 0

    def add(self, other: PruneReport) -> None:
        self.requests += other.requests
        self.jobs += other.jobs
        self.batches += other.batches
        self.files += other.files

    @property
    def deleted(self) -> int:
        return self.requests + self.jobs + self.batches + self.files


def prune(session: Session, *, before: datetime, limit: int = ROWS_PER_PASS) -> PruneReport:
    """Delete up to ``limit`` requests (and their results) of jobs that ended before
    ``before``, then those jobs once empty, with their OpenAI batches, then files created
    before ``before`` that no remaining batch names. Call again while it deletes anything."""
    report = PruneReport()
    # Jobs come oldest first through the finished_at index, a bounded few at a time.
    due = (
        select(Job.id)
        .where(Job.finished_at < before, Job.status.in_(_ENDED))
        .order_by(Job.finished_at)
        .limit(100)
    )
    jobs = list(session.scalars(due))
    if jobs:
        ids = list(session.scalars(select(Request.id).where(Request.job_id.in_(jobs)).limit(limit)))
        if ids:
            session.execute(delete(Result).where(Result.request_id.in_(ids)))
            report.requests = _rows(session, delete(Request).where(Request.id.in_(ids)))
        left = set(session.scalars(select(Request.job_id).where(Request.job_id.in_(jobs))))
        empty = [j for j in jobs if j not in left]
        if empty:
            _keep_totals(session, empty)
            report.batches += _rows(
                session, delete(OpenAIBatch).where(OpenAIBatch.job_id.in_(empty))
            )
            report.jobs = _rows(session, delete(Job).where(Job.id.in_(empty)))
    # Batches refused at validation have no job: they go once ended before the cutoff.
    report.batches += _rows(
        session,
        delete(OpenAIBatch).where(OpenAIBatch.job_id.is_(None), OpenAIBatch.ended_at < before),
    )
    named = select(OpenAIBatch.input_file_id).union(
        select(OpenAIBatch.output_file_id).where(OpenAIBatch.output_file_id.is_not(None)),
        select(OpenAIBatch.error_file_id).where(OpenAIBatch.error_file_id.is_not(None)),
    )
    old_files = list(
        session.scalars(
            select(File.id)
            .where(File.created_at < before, File.id.not_in(named))
            .order_by(File.created_at)
            .limit(limit)
        )
    )
    if old_files:
        report.files = _rows(session, delete(File).where(File.id.in_(old_files)))
    return report


def _keep_totals(session: Session, job_ids: list[str]) -> None:
    """Add the tallies of jobs about to be deleted to their model's pruned totals."""
    sums = session.execute(
        select(Job.model, *(func.sum(job_total(name)) for name in TOTALS))
        .where(Job.id.in_(job_ids))
        .group_by(Job.model)
        .order_by(Job.model)  # one lock order for concurrent pruners
    ).all()
    for model, *values in sums:
        add = {name: int(v or 0) for name, v in zip(TOTALS, values, strict=True)}
        updated = _rows(
            session,
            update(PrunedTotals)
            .where(PrunedTotals.model == model)
            .values({name: getattr(PrunedTotals, name) + n for name, n in add.items()}),
        )
        if not updated:
            session.execute(insert(PrunedTotals).values(model=model, **add))


def _rows(session: Session, statement: Delete | Update) -> int:
    result = cast("CursorResult[Any]", session.execute(statement))
    return int(result.rowcount)
