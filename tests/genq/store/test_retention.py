"""Retention deletes what finished before the cutoff, in bounded batches, and nothing else:
never a running or queued job, never a file a batch still names."""

from __future__ import annotations

from sqlalchemy import func, insert, select

from genq.store import cancel_job, claim, complete_many
from genq.store.files import create_file
from genq.store.retention import prune
from genq.store.tables import File, Job, OpenAIBatch, Request, Result
from genq.store.views import finished_totals
from tests.conftest import Database
from tests.genq.store.support import LEASE, MODEL, TENANT, add_job, at, ok


def rows(session, table) -> int:  # type: ignore[no-untyped-def]
    return int(session.scalar(select(func.count()).select_from(table)) or 0)


def finish(store: Database, job_id: str, *, when: float) -> None:
    with store.sessions.begin() as session:
        claims = claim(
            session, worker_id="w", model=MODEL, lease_seconds=LEASE, job_id=job_id, now=at(when)
        )
        complete_many(session, items=[(c.request_id, c.fence, ok()) for c in claims], now=at(when))


def test_only_what_ended_before_the_cutoff_goes_in_bounded_batches(store: Database) -> None:
    with store.sessions.begin() as session:
        old = add_job(session, n=7, now=at(0))
        recent = add_job(session, n=3, now=at(0))
        running = add_job(session, n=4, now=at(0))
        queued = add_job(session, n=2, now=at(0))
        cancelled = add_job(session, n=2, now=at(0))
    finish(store, old, when=10)
    finish(store, recent, when=500)
    with store.sessions.begin() as session:
        held = claim(
            session, worker_id="w", model=MODEL, lease_seconds=LEASE, job_id=running, now=at(5)
        )
        cancel_job(session, tenant=TENANT, job_id=cancelled, now=at(20))
        # An old file no batch names, and one a batch still names.
        loose = create_file(
            session, tenant=TENANT, purpose="batch", filename="a", content=b"x", now=at(0)
        ).id
        kept = create_file(
            session, tenant=TENANT, purpose="batch", filename="b", content=b"y", now=at(0)
        ).id
        session.execute(
            insert(OpenAIBatch).values(
                id="batch_kept",
                tenant=TENANT,
                job_id=running,
                endpoint="/v1/completions",
                input_file_id=kept,
                completion_window="24h",
                status="in_progress",
                invalid=0,
                created_at=at(0),
                expires_at=at(86400),
            )
        )
    with store.sessions.begin() as session:
        totals = finished_totals(session)
    passes = []
    while True:
        with store.sessions.begin() as session:
            report = prune(session, before=at(100), limit=3)
        if not report.deleted:
            break
        passes.append(report)
    # 7 + 2 requests of the two due jobs, 3 at most per pass.
    assert [p.requests for p in passes] == [3, 3, 3]
    assert sum(p.jobs for p in passes) == 2 and sum(p.files for p in passes) == 1
    with store.sessions.begin() as session:
        jobs = set(session.scalars(select(Job.id)))
        assert jobs == {recent, running, queued}
        assert rows(session, Request) == 3 + 4 + 2
        assert rows(session, Result) == 3
        assert set(session.scalars(select(File.id))) == {kept}
        assert loose not in set(session.scalars(select(File.id)))
        # the /metrics totals do not go down: the deleted jobs' tallies are kept
        assert finished_totals(session) == totals
        assert totals[MODEL]["succeeded"] == 10 and totals[MODEL]["cancelled"] == 2
    # Once the batch's job is done and past the cutoff, batch, job and file all go.
    with store.sessions.begin() as session:
        items = [(c.request_id, c.fence, ok()) for c in held]
        assert all(complete_many(session, items=items, now=at(50)))
        assert session.scalar(select(Job.finished_at).where(Job.id == running)) == at(50)
        prune(session, before=at(100))
    with store.sessions.begin() as session:
        assert rows(session, OpenAIBatch) == 0 and rows(session, File) == 0
        assert set(session.scalars(select(Job.id))) == {recent, queued}
