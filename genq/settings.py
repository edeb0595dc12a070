"""The one settings object. Every knob is an environment variable prefixed ``GENQ_``."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from platformdirs import user_cache_dir, user_data_dir
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_API_URL = "http://127.0.0.1:8000"
"""The API the CLI's client commands talk to (``genq serve``'s default address)."""

DEFAULT_MODEL = "smollm2-135m"
"""The model a job gets when it names none."""

DEFAULT_MAX_BATCH_TOKENS = 65536
"""Token budget of one batch: rows x (padded prompt + max_new_tokens)."""

DEFAULT_MAX_BATCH_SIZE = 128
"""Most rows (prompts x num_return_sequences) in one generate call."""

DEFAULT_LEASE_SECONDS = 600.0
"""How long a claim holds a request before another worker may take it over."""

DEFAULT_MAX_ATTEMPTS = 3
"""Claims a request gets before the reconciler fails it (poison requests stop looping)."""

DEFAULT_REANNOUNCE_SECONDS = 300.0
"""A queued request whose last queue message is older than this is announced again."""

DEFAULT_RECONCILE_SECONDS = 30.0
"""How often a worker's reconciler looks for lost work (unannounced, expired, out of attempts)."""

DEFAULT_CLAIM_WINDOW = 256
"""Most requests a worker claims at once: the planning window its batches are cut from."""

DEFAULT_MESSAGE_SIZE = 64
"""Most request ids one queue message names."""

DEFAULT_BUFFER_SECONDS = 0.2
"""How long an idle worker holds a message before claiming, so that requests of its parameter
set submitted with it (other messages, other jobs) join the same planning window."""

DEFAULT_VISIBILITY_TIMEOUT = 3600.0
"""Seconds before Redis hands an unacknowledged message to another worker; longer than a
planning window takes to run."""


DEFAULT_MAX_JOB_REQUESTS = 1_000_000
"""Most requests one job (or OpenAI batch) may hold. A job of an uploaded file is read and
stored as a stream, in memory that does not grow with it (but for 24 bytes a ``custom_id``)."""

DEFAULT_MAX_BODY_REQUESTS = 50_000
"""Most requests a ``POST /v1/jobs`` body may list: a body is parsed whole, so a larger job
comes as an uploaded file (``input_file_id``), as ``genq submit`` sends it."""

LARGEST_CONTEXT_TOKENS = 8192
"""The longest context of the built-in models (smollm2-135m's; a test keeps it so)."""

DEFAULT_MAX_PROMPT_CHARS = 16 * LARGEST_CONTEXT_TOKENS
"""Longest prompt (or chat, all messages together) accepted, in characters: 16 per token of
the largest built-in context, more than any text that fits it takes (about 4 per token is
usual). Longer is refused at once rather than failed at the worker."""

DEFAULT_MAX_BODY_BYTES = 200 * 1024 * 1024
"""Largest HTTP request body the API reads (counted on the bytes received); larger answers 413."""

DEFAULT_KEY_CACHE_SECONDS = 5.0
"""How long an API process trusts an API key it has checked before checking it again: a revoked
key keeps working for up to this long. 0 checks the key on every request."""

DEFAULT_API_DB_CONNECTIONS = 10
"""Connections to a networked database (PostgreSQL) each API process keeps for its polls' reads,
and as many for its other routes, and the most it opens: ``genq api --workers N`` holds up to
2 x N x this many. A route that finds them all busy waits for one (a 503 after 30 s)."""

DEFAULT_JOB_CACHE_SECONDS = 1.0
"""How long an API process answers ``GET /v1/jobs/{id}`` from the job as it last read it: many
clients polling one job cost one database read per this long, and on PostgreSQL the read runs
ahead, so that a poll never waits for it (what a poll gets is then at most twice this old; see
``api.reads.SharedReads``). A cancel through the same process shows at once. 0 reads the
database on every poll."""


def _default_database_url() -> str:
    return f"sqlite:///{Path(user_data_dir('genq')) / 'genq.db'}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GENQ_", extra="ignore")

    database_url: str = Field(default_factory=_default_database_url)
    redis_url: str = "redis://127.0.0.1:6379/0"
    # Where the CLI's client commands (submit, status, results, cancel) send their requests.
    api_url: str = DEFAULT_API_URL
    api_key: str = ""
    model_cache: Path = Field(default_factory=lambda: Path(user_cache_dir("genq")) / "models")
    # Directories whose model subdirectories jobs may name (``org/name`` or ``name`` under one
    # of them), besides the built-ins, the model cache and the Hugging Face cache; separated
    # like PATH. A job never names an arbitrary path.
    model_dirs: Annotated[tuple[Path, ...], NoDecode] = ()
    default_model: str = DEFAULT_MODEL
    device: str = "auto"
    max_batch_tokens: int = Field(default=DEFAULT_MAX_BATCH_TOKENS, ge=1)
    max_batch_size: int = Field(default=DEFAULT_MAX_BATCH_SIZE, ge=1)
    # Weights' and activations' dtype: "auto" is bfloat16 on a GPU and float32 on a CPU. Any
    # other than float32 changes texts against float32 (greedy output stays the same alone or
    # in any batch).
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    lease_seconds: float = Field(default=DEFAULT_LEASE_SECONDS, gt=0)
    max_attempts: int = Field(default=DEFAULT_MAX_ATTEMPTS, ge=1)
    reannounce_seconds: float = Field(default=DEFAULT_REANNOUNCE_SECONDS, gt=0)
    reconcile_seconds: float = Field(default=DEFAULT_RECONCILE_SECONDS, gt=0)
    claim_window: int = Field(default=DEFAULT_CLAIM_WINDOW, ge=1)
    message_size: int = Field(default=DEFAULT_MESSAGE_SIZE, ge=1)
    buffer_seconds: float = Field(default=DEFAULT_BUFFER_SECONDS, ge=0)
    visibility_timeout: float = Field(default=DEFAULT_VISIBILITY_TIMEOUT, gt=0)
    max_job_requests: int = Field(default=DEFAULT_MAX_JOB_REQUESTS, ge=1)
    max_body_requests: int = Field(default=DEFAULT_MAX_BODY_REQUESTS, ge=1)
    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, ge=1)
    max_prompt_chars: int = Field(default=DEFAULT_MAX_PROMPT_CHARS, ge=1)
    key_cache_seconds: float = Field(default=DEFAULT_KEY_CACHE_SECONDS, ge=0)
    job_cache_seconds: float = Field(default=DEFAULT_JOB_CACHE_SECONDS, ge=0)
    api_db_connections: int = Field(default=DEFAULT_API_DB_CONNECTIONS, ge=1)
    # Fair sharing (genq.fairshare): a tenant's weight against the others, and how much it may
    # have accepted and not finished, in requests and in estimated tokens (prompt plus
    # max_new_tokens, times return sequences); unset is no limit. `genq tenants set` overrides
    # each per tenant.
    tenant_weight: float = Field(default=1.0, gt=0)
    max_queued_requests: int | None = Field(default=None, ge=0)
    max_queued_tokens: int | None = Field(default=None, ge=0)
    # "fair" shares each claim window between tenants and jobs; "oldest" takes the oldest
    # requests first (for comparison: one large job then holds every worker until it is done).
    claim_order: Literal["fair", "oldest"] = "fair"
    # Finished jobs (requests, results, their OpenAI batch) and files older than this many days
    # are deleted by the reconciler; 0 keeps everything.
    retention_days: float = Field(default=30, ge=0)
    # When set, /metrics answers only a scrape that sends "Authorization: Bearer <token>".
    metrics_token: str | None = Field(default=None, min_length=16)
    # Webhooks (a job's webhook_url, or its tenant's): sent from each API process, looked for
    # every webhook_poll_seconds, each attempt given webhook_timeout_seconds; a failed one is
    # tried again after webhook_backoff_seconds, doubled each time (at most an hour), up to
    # webhook_max_attempts in all.
    webhook_poll_seconds: float = Field(default=2.0, gt=0)
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    webhook_backoff_seconds: float = Field(default=5.0, ge=0)
    webhook_max_attempts: int = Field(default=10, ge=1)
    # Long-running commands (worker, serve, api, reconcile) log text lines, or JSON lines that
    # carry job, request, batch and worker ids as fields (genq.logs).
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("model_dirs", mode="before")
    @classmethod
    def _split_dirs(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(Path(part) for part in value.split(os.pathsep) if part)
        return value

    @property
    def model_roots(self) -> tuple[Path, ...]:
        """Where model directories are looked up by name: the cache first, then model_dirs."""
        return (self.model_cache, *self.model_dirs)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
