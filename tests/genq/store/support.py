"""Helpers for the store tests: a fake clock and small job builders."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from genq.params import GenerationParams
from genq.store import Choice, NewRequest, Outcome, create_job
from genq.store.tables import Request

T0 = datetime(2030, 1, 1, tzinfo=UTC)
TENANT = "acme"
MODEL = "tiny-gpt2"
LEASE = 60.0


def at(seconds: float) -> datetime:
    """The fake clock: ``seconds`` after T0."""
    return T0 + timedelta(seconds=seconds)


def add_job(
    session: Session,
    *,
    n: int = 3,
    model: str = MODEL,
    tenant: str = TENANT,
    now: datetime = T0,
    params: GenerationParams | None = None,
) -> str:
    return create_job(
        session,
        tenant=tenant,
        model=model,
        params=params or GenerationParams(),
        requests=[NewRequest(custom_id=f"c{i}", prompt=f"prompt {i}") for i in range(n)],
        now=now,
    )


def ok(text: str = "out", tokens: int = 2, prompt_tokens: int = 5) -> Outcome:
    return Outcome(
        choices=(Choice(text=text, finish_reason="length", completion_tokens=tokens),),
        prompt_tokens=prompt_tokens,
    )


def request_ids(session: Session, job_id: str) -> list[str]:
    """The job's request ids in input order."""
    return list(
        session.scalars(select(Request.id).where(Request.job_id == job_id).order_by(Request.idx))
    )


def statuses(session: Session, job_id: str) -> list[str]:
    return list(
        session.scalars(
            select(Request.status).where(Request.job_id == job_id).order_by(Request.idx)
        )
    )


def count(session: Session, table: type) -> int:
    return int(session.scalar(select(func.count()).select_from(table)) or 0)
