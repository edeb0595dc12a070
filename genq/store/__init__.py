"""The job store: jobs, requests and results in SQL, and every state change they go through.

Store functions take a Session, run in the caller's transaction and never commit; open one
transaction per unit of work with ``with sessions.begin() as session: ...``."""

from __future__ import annotations

from genq.store.batches import list_batches, record_batch
from genq.store.claims import (
    any_claimable,
    claim,
    complete,
    complete_many,
    release,
    release_many,
)
from genq.store.db import make_engine, session_factory, upgrade
from genq.store.jobs import cancel_job, create_job, find_job, get_job, list_results
from genq.store.leases import (
    cancel_claims,
    cancelling_jobs,
    release_orphans,
    renew,
    unstarted_job,
)
from genq.store.reconcile import mark_announced, pending_announcements, reap
from genq.store.records import (
    Announcement,
    BatchRecord,
    Choice,
    Claim,
    JobInfo,
    NewRequest,
    Outcome,
    ReapReport,
    ResultRow,
)
from genq.store.status import JobStatus, RequestStatus, check_transition
from genq.store.tables import DEFAULT_TENANT

__all__ = [
    "DEFAULT_TENANT",
    "Announcement",
    "BatchRecord",
    "Choice",
    "Claim",
    "JobInfo",
    "JobStatus",
    "NewRequest",
    "Outcome",
    "ReapReport",
    "RequestStatus",
    "ResultRow",
    "any_claimable",
    "cancel_claims",
    "cancel_job",
    "cancelling_jobs",
    "check_transition",
    "claim",
    "complete",
    "complete_many",
    "create_job",
    "find_job",
    "get_job",
    "list_batches",
    "list_results",
    "make_engine",
    "mark_announced",
    "pending_announcements",
    "reap",
    "record_batch",
    "release",
    "release_many",
    "release_orphans",
    "renew",
    "session_factory",
    "unstarted_job",
    "upgrade",
]
