"""The one settings object. Every knob is an environment variable prefixed ``GENQ_``."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from platformdirs import user_cache_dir, user_data_dir
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODEL = "smollm2-135m"
"""The model a job gets when it names none."""

DEFAULT_MAX_BATCH_TOKENS = 32768
"""Token budget of one batch: rows x (padded prompt + max_new_tokens)."""

DEFAULT_MAX_BATCH_SIZE = 64
"""Most rows (prompts x num_return_sequences) in one generate call."""

DEFAULT_LEASE_SECONDS = 600.0
"""How long a claim holds a request before another worker may take it over."""

DEFAULT_MAX_ATTEMPTS = 3
"""Claims a request gets before the reconciler fails it (poison requests stop looping)."""

DEFAULT_REANNOUNCE_SECONDS = 300.0
"""A queued request whose last queue message is older than this is announced again."""


def _default_database_url() -> str:
    return f"sqlite:///{Path(user_data_dir('genq')) / 'genq.db'}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GENQ_", extra="ignore")

    database_url: str = Field(default_factory=_default_database_url)
    redis_url: str = "redis://127.0.0.1:6379/0"
    model_cache: Path = Field(default_factory=lambda: Path(user_cache_dir("genq")) / "models")
    default_model: str = DEFAULT_MODEL
    device: str = "auto"
    max_batch_tokens: int = Field(default=DEFAULT_MAX_BATCH_TOKENS, ge=1)
    max_batch_size: int = Field(default=DEFAULT_MAX_BATCH_SIZE, ge=1)
    lease_seconds: float = Field(default=DEFAULT_LEASE_SECONDS, gt=0)
    max_attempts: int = Field(default=DEFAULT_MAX_ATTEMPTS, ge=1)
    reannounce_seconds: float = Field(default=DEFAULT_REANNOUNCE_SECONDS, gt=0)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
