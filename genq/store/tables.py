"""The schema: jobs, their requests (one per prompt) and results (one per succeeded request).

Migrations in ``migrations/`` create it; a test keeps the two in step. Rows are written with
plain statements from the store functions, never through ORM objects, so these classes stay
declarations."""

from __future__ import annotations

import base64
import builtins
import re
import secrets
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Dialect,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from genq.store.status import JobStatus, RequestStatus

DEFAULT_TENANT = "default"
ID_LENGTH = 40
MAX_CUSTOM_ID_LENGTH = 256
MAX_URL_LENGTH = 2048
MAX_NAME_LENGTH = 200  # model names, tenants, worker ids
MAX_IDX = 2**31 - 1  # the idx column is a 32-bit integer on PostgreSQL
REFUSED_PROMPT = ""  # the prompt of an input line refused at intake (see Request.prompt)


def new_id(prefix: str) -> str:
    """``prefix_`` + 120 random bits in lowercase base32: unguessable, URL-safe, 24 chars."""
    return new_ids(prefix, 1)[0]


def new_ids(prefix: str, count: int) -> list[str]:
    # 15 bytes are exactly 24 base32 digits, so one encode of all the bytes slices cleanly.
    digits = base64.b32encode(secrets.token_bytes(15 * count)).decode().lower()
    return [f"{prefix}_{digits[i : i + 24]}" for i in range(0, 24 * count, 24)]


_ID = re.compile(r"[a-z][a-z_]*_[a-z2-7]{24}")


def looks_like_id(value: str) -> bool:
    """Whether ``value`` has the shape of an id genq made: anything else names nothing, and is
    answered as missing without a query (a NUL in it would make PostgreSQL fail one)."""
    return len(value) <= ID_LENGTH and _ID.fullmatch(value) is not None


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend. SQLite keeps no zone, so the value is stored as
    naive UTC text (which sorts as time) and comes back with UTC attached; PostgreSQL keeps a
    ``timestamptz``. Naive datetimes are refused: they are always a bug here."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass an aware UTC time")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _status(enum: type[StrEnum], name: str) -> Enum:
    # A VARCHAR with a CHECK rather than a native PostgreSQL enum: the same on both backends,
    # and a later state is one constraint change.
    return Enum(
        enum,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        values_callable=lambda members: [m.value for m in members],
    )


class Base(DeclarativeBase):
    # Named constraints, so migrations can refer to them on both backends.
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        Index(None, "tenant", "created_at"),
        Index(None, "finished_at"),
        Index(None, "status", "model"),  # the fair claim reads one model's open jobs
    )

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(MAX_NAME_LENGTH), server_default=DEFAULT_TENANT)
    priority: Mapped[int] = mapped_column(Integer, server_default="0")  # within its tenant
    # Estimated work of its runnable requests, tokens x rows (genq.fairshare): what fair
    # shares and quotas are measured in.
    work: Mapped[int] = mapped_column(BigInteger, server_default="0")
    model: Mapped[str] = mapped_column(String(MAX_NAME_LENGTH))
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    # [{"key", "params" (shared by its requests: no seed or stop), "requests"}], by key.
    param_sets: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON(none_as_null=True))
    # "metadata" is taken on declarative classes; the column keeps the public name.
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON(none_as_null=True))
    status: Mapped[JobStatus] = mapped_column(_status(JobStatus, "job_status"))
    total: Mapped[int] = mapped_column(Integer)
    succeeded: Mapped[int] = mapped_column(Integer)
    failed: Mapped[int] = mapped_column(Integer)
    cancelled: Mapped[int] = mapped_column(Integer)
    # Of the failed, the input lines refused at intake: they never ran.
    refused: Mapped[int] = mapped_column(Integer, server_default="0")
    # Failures a retry put back in the queue: they happened, and stay counted (see TOTALS).
    retried: Mapped[int] = mapped_column(Integer, server_default="0")
    webhook_url: Mapped[str | None] = mapped_column(String(MAX_URL_LENGTH))  # else the tenant's
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    completion_tokens: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Request(Base):
    __tablename__ = "requests"
    __table_args__ = (
        UniqueConstraint("job_id", "idx"),
        # Claim-any scans (status, model) oldest first; the reconciler scans running leases
        # and queued announcements through the same prefix.
        Index(None, "status", "model", "created_at", "idx"),
        # The fair claim takes one job's queued requests in input order. Partial: a request
        # leaving the queue is no new entry here (a status change is never a HOT update, so
        # every index over requests would otherwise grow by one per claim and per result).
        Index(
            "ix_requests_queued_job_id_idx",
            "job_id",
            "idx",
            postgresql_where=text("status = 'queued'"),
            sqlite_where=text("status = 'queued'"),
        ),
        # The reconciler's passes read only what they act on, however long the queue: queued
        # requests by when their last message went out (NULL: never), and queued requests a
        # claim gave back (attempts > 0, few), for those out of attempts.
        Index(
            "ix_requests_queued_announced_at",
            "announced_at",
            postgresql_where=text("status = 'queued'"),
            sqlite_where=text("status = 'queued'"),
        ),
        Index(
            "ix_requests_queued_retried_attempts",
            "attempts",
            postgresql_where=text("status = 'queued' AND attempts > 0"),
            sqlite_where=text("status = 'queued' AND attempts > 0"),
        ),
        # A job's failed requests in input order (few): its errors, and what a retry requeues.
        Index(
            "ix_requests_failed_job_id_idx",
            "job_id",
            "idx",
            postgresql_where=text("status = 'failed'"),
            sqlite_where=text("status = 'failed'"),
        ),
        CheckConstraint("(prompt IS NULL) <> (messages IS NULL)", name="prompt_xor_messages"),
    )

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    idx: Mapped[int] = mapped_column(Integer)  # position in the job's input
    custom_id: Mapped[str | None] = mapped_column(String(MAX_CUSTOM_ID_LENGTH))
    model: Mapped[str] = mapped_column(String(MAX_NAME_LENGTH))
    group_key: Mapped[str] = mapped_column(String(32))
    # An input line refused at intake is a request failed from the start, its prompt empty (a
    # prompt genq never accepts) and its error saying why.
    prompt: Mapped[str | None] = mapped_column(Text)
    messages: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON(none_as_null=True))
    # Only a request's own parameters (an OpenAI batch line's body); NULL means the job's, which
    # keeps one copy per job instead of one per row.
    params: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    status: Mapped[RequestStatus] = mapped_column(_status(RequestStatus, "request_status"))
    attempts: Mapped[int] = mapped_column(Integer)  # claims that counted; a release gives one back
    fence: Mapped[int] = mapped_column(Integer)  # bumped by every claim; a stale write is refused
    lease_owner: Mapped[str | None] = mapped_column(String(MAX_NAME_LENGTH))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    announced_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # cleared by a claim
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Result(Base):
    __tablename__ = "results"
    __table_args__ = (Index(None, "finished_at"),)

    # The primary key is the request: a second result for one request cannot be stored.
    request_id: Mapped[str] = mapped_column(
        ForeignKey("requests.id", ondelete="CASCADE"), primary_key=True
    )
    choices: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    completion_tokens: Mapped[int] = mapped_column(Integer)
    worker_id: Mapped[str | None] = mapped_column(String(MAX_NAME_LENGTH))
    fence: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Batch(Base):
    """One generate call as a worker ran it, written with its outcomes: how requests were
    batched (across jobs too), for metrics and for tests that prove it."""

    __tablename__ = "batches"
    __table_args__ = (Index(None, "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    worker_id: Mapped[str] = mapped_column(String(MAX_NAME_LENGTH))
    model: Mapped[str] = mapped_column(String(MAX_NAME_LENGTH))
    group_key: Mapped[str] = mapped_column(String(32))
    rows: Mapped[int] = mapped_column(Integer)  # prompts x return sequences
    padded_length: Mapped[int] = mapped_column(Integer)  # prompt tokens per row, with padding
    prompt_efficiency: Mapped[float] = mapped_column(Float)  # real / padded prompt tokens
    seconds: Mapped[float] = mapped_column(Float)
    request_ids: Mapped[list[str]] = mapped_column(JSON)
    refused: Mapped[int] = mapped_column(Integer)  # outcomes not written: claims lost meanwhile
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class JobBatch(Base):
    """A job's part in one recorded batch, written with it: how many of the job's requests it
    finished, with how many new tokens. A job's throughput over time and the batches it rode
    in are read from these by the job's key, however many requests the job has."""

    __tablename__ = "job_batches"
    __table_args__ = (Index(None, "batch_id"),)

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    batch_id: Mapped[int] = mapped_column(
        ForeignKey("batches.id", ondelete="CASCADE"), primary_key=True
    )
    rows: Mapped[int] = mapped_column(Integer)
    completion_tokens: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ApiKey(Base):
    """An API key, stored as its SHA-256 only; the key itself is shown once, at creation."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(MAX_NAME_LENGTH))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))  # shown in listings, never enough to use
    name: Mapped[str | None] = mapped_column(String(MAX_NAME_LENGTH))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # to the minute
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class File(Base):
    """An uploaded or generated file of the OpenAI-compatible files API."""

    __tablename__ = "files"
    __table_args__ = (Index(None, "tenant", "created_at"),)

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(MAX_NAME_LENGTH))
    purpose: Mapped[str] = mapped_column(String(32))
    filename: Mapped[str] = mapped_column(String(MAX_CUSTOM_ID_LENGTH))
    bytes: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class FilePart(Base):
    """A file's bytes, a part at a time (``seq`` from 0): written and read without holding the
    whole file."""

    __tablename__ = "file_parts"

    file_id: Mapped[str] = mapped_column(
        ForeignKey("files.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[builtins.bytes] = mapped_column(LargeBinary)  # the File class has its "bytes"


class OpenAIBatch(Base):
    """An OpenAI-compatible batch: a job plus the lifecycle fields OpenAI's clients expect."""

    __tablename__ = "openai_batches"
    __table_args__ = (Index(None, "tenant", "created_at"), Index(None, "status"))

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)
    tenant: Mapped[str] = mapped_column(String(MAX_NAME_LENGTH))
    job_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    endpoint: Mapped[str] = mapped_column(String(64))
    input_file_id: Mapped[str] = mapped_column(String(ID_LENGTH))
    completion_window: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON(none_as_null=True))
    # Per-line validation errors: [{"code", "message", "param", "line"}].
    errors: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON(none_as_null=True))
    output_file_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    error_file_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    invalid: Mapped[int] = mapped_column(Integer)  # input lines refused at validation
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # status reached its end
    cancelling_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Once its job has ended: finalizing (its files being written) from finalizing_at, under a
    # finalizer's lease until finalize_until, then ``outcome`` (completed, cancelled, expired).
    finalizing_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    outcome: Mapped[str | None] = mapped_column(String(16))
    finalize_until: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Tenant(Base):
    """What one tenant has that differs from the ``GENQ_*`` defaults (NULL: the default)."""

    __tablename__ = "tenants"

    name: Mapped[str] = mapped_column(String(MAX_NAME_LENGTH), primary_key=True)
    weight: Mapped[float | None] = mapped_column(Float)  # its share against other tenants
    max_queued_requests: Mapped[int | None] = mapped_column(BigInteger)
    max_queued_tokens: Mapped[int | None] = mapped_column(BigInteger)
    webhook_url: Mapped[str | None] = mapped_column(String(MAX_URL_LENGTH))  # jobs' default
    webhook_secret: Mapped[str | None] = mapped_column(String(128))  # whsec_..., signs them all
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class WebhookDelivery(Base):
    """One event of a job for its webhook, written in the transaction that ends the job (so
    never lost), then sent until a 2xx answer or the last attempt: at least once."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index(None, "job_id"),
        Index(
            "ix_webhook_deliveries_pending_next_attempt_at",
            "next_attempt_at",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
    )

    id: Mapped[str] = mapped_column(String(ID_LENGTH), primary_key=True)  # the webhook-id
    tenant: Mapped[str] = mapped_column(String(MAX_NAME_LENGTH))
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    event: Mapped[str] = mapped_column(String(32))  # job.completed, job.failed, job.cancelled
    url: Mapped[str] = mapped_column(String(MAX_URL_LENGTH))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(String(16))  # pending, delivered, failed
    attempts: Mapped[int] = mapped_column(Integer)  # sends started
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)  # or a sender's lease end
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class PrunedTotals(Base):
    """Per model, the tallies of the jobs retention deleted: added to the live jobs' tallies,
    they make the ``/metrics`` totals counters that never go down."""

    __tablename__ = "pruned_totals"

    model: Mapped[str] = mapped_column(String(MAX_NAME_LENGTH), primary_key=True)
    succeeded: Mapped[int] = mapped_column(BigInteger)
    failed: Mapped[int] = mapped_column(BigInteger)
    cancelled: Mapped[int] = mapped_column(BigInteger)
    prompt_tokens: Mapped[int] = mapped_column(BigInteger)
    completion_tokens: Mapped[int] = mapped_column(BigInteger)


class WorkerHeartbeat(Base):
    """The last sign of life of each worker, for the live-workers gauge."""

    __tablename__ = "worker_heartbeats"

    worker_id: Mapped[str] = mapped_column(String(MAX_NAME_LENGTH), primary_key=True)
    model: Mapped[str] = mapped_column(String(MAX_NAME_LENGTH))
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
