"""Retry what failed: a completed job's failed requests go back in the queue with fresh
attempts, every success kept. Lines refused at intake stay failed (they would fail the same
way), and so does a job an OpenAI batch stands for (its output files are written once)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from genq.errors import Conflict
from genq.store.jobs import get_job
from genq.store.records import JobInfo
from genq.store.status import JobStatus, RequestStatus, sources
from genq.store.tables import REFUSED_PROMPT, Job, OpenAIBatch, Request, utcnow
from genq.store.tally import PLAIN


def retry_failed(
    session: Session,
    *,
    tenant: str,
    job_id: str,
    announced_at: datetime | None = None,
    not_before: datetime | None = None,
    now: datetime | None = None,
) -> tuple[JobInfo, int]:
    """Queue the failed requests of ``tenant``'s completed job ``job_id`` again; returns the
    job as it then is and how many went back (0 leaves a job with nothing to retry as it was).
    ``announced_at`` marks them announced (their messages are about to go out); a job that
    finished before ``not_before`` (the retention cutoff: it may be partly deleted) is refused,
    as is a job not completed (:class:`Conflict`)."""
    now = now or utcnow()
    if session.get_bind().dialect.name == "postgresql":  # one retry, or tally, at a time
        session.execute(select(Job.id).where(Job.id == job_id).with_for_update())
    job = get_job(session, tenant=tenant, job_id=job_id)
    if job.status is not JobStatus.COMPLETED:
        raise Conflict(f"job {job_id} is {job.status}: only a completed job's failures retry")
    if not_before is not None and job.finished_at is not None and job.finished_at < not_before:
        raise Conflict(f"job {job_id} finished before the retention period: it is being deleted")
    if session.scalar(select(OpenAIBatch.id).where(OpenAIBatch.job_id == job_id)) is not None:
        raise Conflict(f"job {job_id} is an OpenAI batch's: submit its failed lines as a new batch")
    # One UPDATE through the partial index of failed requests, however many failed.
    moved = session.execute(
        update(Request)
        .where(
            Request.job_id == job_id,
            Request.status.in_(sources(RequestStatus.FAILED, to=RequestStatus.QUEUED)),
            or_(Request.prompt.is_(None), Request.prompt != REFUSED_PROMPT),
        )
        .values(
            status=RequestStatus.QUEUED,
            attempts=0,
            error=None,
            lease_owner=None,
            lease_expires_at=None,
            announced_at=announced_at,
            updated_at=now,
        ),
        execution_options=PLAIN,
    )
    count = int(moved.rowcount)  # type: ignore[attr-defined]
    if not count:
        return job, 0
    session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_(sources(JobStatus.COMPLETED, to=JobStatus.QUEUED)))
        .values(
            status=JobStatus.QUEUED,
            failed=Job.failed - count,
            retried=Job.retried + count,
            finished_at=None,
        ),
        execution_options=PLAIN,
    )
    return get_job(session, tenant=tenant, job_id=job_id), count
