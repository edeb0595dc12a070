"""The finalizer: moves OpenAI batches on in the background, so that a poll only reads.

Each pass, in short transactions: a batch past its completion window has its job cancelled
(``expiring``); a batch whose job has ended becomes ``finalizing`` with the status it will end
in (``outcome``); a finalizing batch is taken under a lease, and its output and error files are
written, a part at a time, in the one transaction that also ends it. A finalizer that dies
midway writes nothing (the transaction rolls back) and its lease runs out for the next; one
that outlived its lease finds the batch no longer its own and rolls back too: the files are
written exactly once."""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from genq.intake import ENDPOINTS
from genq.openai_batches import ENDED, OPEN
from genq.outputs import render
from genq.periodic import Periodic
from genq.store import JobStatus, RequestStatus, cancel_job, get_job, list_results
from genq.store.files import FileWriter
from genq.store.tables import Job, OpenAIBatch, new_id, utcnow

log = logging.getLogger(__name__)

FINALIZE_SECONDS = 1.0
"""How often each API process looks for batches to move on."""
LEASE_SECONDS = 600.0
"""How long a finalizer holds a batch it writes the files of, before another may take it."""


class LostLease(Exception):
    """The batch was taken by another finalizer meanwhile: this one's writes roll back."""


def finalize_pass(sessions: sessionmaker[Session], *, lease_seconds: float = LEASE_SECONDS) -> int:
    """One pass (see the module); returns how many batches it moved."""
    return _expire(sessions) + _settle(sessions) + _write_due(sessions, lease_seconds)


def _expire(sessions: sessionmaker[Session]) -> int:
    now = utcnow()
    with sessions.begin() as session:
        due = session.execute(
            select(OpenAIBatch.id, OpenAIBatch.tenant, OpenAIBatch.job_id).where(
                OpenAIBatch.status == "in_progress",
                OpenAIBatch.expires_at <= now,
                OpenAIBatch.job_id.is_not(None),
            )
        ).all()
    moved = 0
    for batch_id, tenant, job_id in due:
        assert job_id is not None
        with sessions.begin() as session:
            if not get_job(session, tenant=tenant, job_id=job_id).status.is_terminal:
                cancel_job(session, tenant=tenant, job_id=job_id, now=now)
                moved += _move(session, batch_id, "in_progress", status="expiring")
    return moved


def _settle(sessions: sessionmaker[Session]) -> int:
    """Batches whose job has ended: finalizing, with the status they will end in."""
    now = utcnow()
    moved = 0
    with sessions.begin() as session:
        ended = session.execute(
            select(OpenAIBatch.id, OpenAIBatch.status, Job.status)
            .join(Job, Job.id == OpenAIBatch.job_id)
            .where(
                OpenAIBatch.status.in_(OPEN),
                Job.status.in_((JobStatus.COMPLETED, JobStatus.CANCELLED)),
            )
        ).all()
        for batch_id, status, job_status in ended:
            outcome = "expired" if status == "expiring" else ENDED[job_status]
            moved += _move(
                session, batch_id, status, status="finalizing", outcome=outcome, finalizing_at=now
            )
    return moved


def _write_due(sessions: sessionmaker[Session], lease_seconds: float) -> int:
    now = utcnow()
    free = or_(OpenAIBatch.finalize_until.is_(None), OpenAIBatch.finalize_until < now)
    with sessions.begin() as session:
        due = list(
            session.scalars(select(OpenAIBatch.id).where(OpenAIBatch.status == "finalizing", free))
        )
    done = 0
    for batch_id in due:
        lease = now + timedelta(seconds=lease_seconds)
        with sessions.begin() as session:
            taken = session.execute(
                update(OpenAIBatch)
                .where(OpenAIBatch.id == batch_id, OpenAIBatch.status == "finalizing", free)
                .values(finalize_until=lease)
                .returning(OpenAIBatch.id)
            ).one_or_none()
        if taken is None:
            continue
        try:
            with sessions.begin() as session:
                row = session.get(OpenAIBatch, batch_id, populate_existing=True)
                assert row is not None and row.outcome is not None
                write_files(session, row, row.outcome, now=utcnow())
                ended = session.execute(
                    update(OpenAIBatch)
                    .where(
                        OpenAIBatch.id == batch_id,
                        OpenAIBatch.status == "finalizing",
                        OpenAIBatch.finalize_until == lease,
                    )
                    .values(status=row.outcome, ended_at=utcnow(), finalize_until=None)
                    .returning(OpenAIBatch.id)
                ).one_or_none()
                if ended is None:
                    raise LostLease(batch_id)
        except LostLease:
            log.warning("batch %s was taken by another finalizer; its files are theirs", batch_id)
            continue
        log.info("batch %s finalized", batch_id)
        done += 1
    return done


def _move(session: Session, batch_id: str, old: str, **values: Any) -> int:
    moved = session.execute(
        update(OpenAIBatch)
        .where(OpenAIBatch.id == batch_id, OpenAIBatch.status == old)
        .values(**values)
        .returning(OpenAIBatch.id)
    ).one_or_none()
    return int(moved is not None)


class BatchFinalizer(Periodic):
    """Runs :func:`finalize_pass` every :data:`FINALIZE_SECONDS` in an API process."""

    def __init__(self, sessions: sessionmaker[Session], *, every: float = FINALIZE_SECONDS):
        super().__init__(every=every, name="genq-batch-finalizer", at_once=True)
        self.sessions = sessions

    def tick(self) -> None:
        try:
            finalize_pass(self.sessions)
        except Exception as exc:  # noqa: BLE001 - a database outage: the next pass tries again
            log.warning("could not finalize batches: %s", exc)


def write_files(session: Session, row: OpenAIBatch, final: str, *, now: datetime) -> None:
    """The batch's output and error files, written a part at a time as results are read."""
    assert row.job_id is not None
    form = ENDPOINTS[row.endpoint]
    job = get_job(session, tenant=row.tenant, job_id=row.job_id)
    files = {
        kind: _LazyFile(session, tenant=row.tenant, filename=f"{row.id}_{kind}.jsonl", now=now)
        for kind in ("output", "error")
    }
    for e in row.errors or []:
        line = render(e["custom_id"], form, model=job.model, error=e["message"], param=e["param"])
        files["error"].write(line)
    code = {"cancelled": f"batch_{final}" if final != "completed" else "batch_cancelled"}
    for after in range(-1, job.total - 1, 1000):
        rows = list_results(
            session, job_id=row.job_id, after_idx=after, limit=1000, upto_idx=after + 1000
        )
        for r in rows:
            custom_id = r.custom_id or r.request_id  # every line has one: its own, or line-N
            if r.status == RequestStatus.SUCCEEDED:
                choices = [vars(c) for c in r.choices]
                files["output"].write(
                    render(
                        custom_id,
                        form,
                        model=job.model,
                        choices=choices,
                        prompt_tokens=r.prompt_tokens,
                    )
                )
            else:
                files["error"].write(
                    {
                        "id": new_id("batch_req"),
                        "custom_id": custom_id,
                        "response": None,
                        "error": {
                            "code": code.get(str(r.status), "generation_failed"),
                            "message": r.error or f"not run: the batch was {final}",
                        },
                    }
                )
    ids = {f"{kind}_file_id": file.close() for kind, file in files.items() if file.written}
    if ids:
        session.execute(update(OpenAIBatch).where(OpenAIBatch.id == row.id).values(**ids))


class _LazyFile:
    """A JSONL output file, stored only once it has a line."""

    def __init__(self, session: Session, *, tenant: str, filename: str, now: datetime) -> None:
        self.session, self.tenant, self.filename, self.now = session, tenant, filename, now
        self._writer: FileWriter | None = None

    @property
    def written(self) -> bool:
        return self._writer is not None

    def write(self, line: dict[str, Any]) -> None:
        if self._writer is None:
            self._writer = FileWriter(
                self.session,
                tenant=self.tenant,
                purpose="batch_output",
                filename=self.filename,
                now=self.now,
            )
        self._writer.write(json.dumps(line).encode() + b"\n")

    def close(self) -> str:
        assert self._writer is not None
        return self._writer.close().id
