"""The dashboard's reads: a job's part in each batch (written with the batch, gone with the
job), its failed requests in input order, the workers with their recent batches."""

from __future__ import annotations

from sqlalchemy import func, insert, select

from genq.store import BatchRecord, claim, complete_many, record_batch
from genq.store.activity import job_batches, job_errors, tenant_batches, worker_activity
from genq.store.records import Outcome
from genq.store.retention import prune
from genq.store.tables import JobBatch, OpenAIBatch
from genq.store.views import heartbeat
from tests.conftest import Database
from tests.genq.store.support import LEASE, MODEL, TENANT, add_job, at, ok


def batch(worker: str, rows: int, jobs: dict[str, tuple[int, int]]) -> BatchRecord:
    return BatchRecord(worker, MODEL, "g", rows, 8, 0.75, 0.5, (), jobs=jobs)


def test_a_jobs_batches_newest_kept_oldest_first(store: Database) -> None:
    with store.sessions.begin() as session:
        one, two = add_job(session, n=4), add_job(session, n=2)
        first = record_batch(session, batch=batch("w1", 6, {one: (4, 40), two: (2, 9)}), now=at(1))
        second = record_batch(session, batch=batch("w2", 3, {two: (0, 0)}), now=at(2))
        third = record_batch(session, batch=batch("w1", 5, {}), now=at(3))  # no job of these
    with store.sessions.begin() as session:
        mine = job_batches(session, job_id=one)
        theirs = job_batches(session, job_id=two)
        newest = job_batches(session, job_id=two, limit=1)
    assert [(b.batch_id, b.rows, b.job_rows, b.completion_tokens) for b in mine] == [
        (first, 6, 4, 40)
    ]
    assert mine[0].worker_id == "w1" and mine[0].prompt_efficiency == 0.75
    assert mine[0].created_at == at(1) and mine[0].seconds == 0.5
    assert [b.batch_id for b in theirs] == [first, second]
    assert [b.batch_id for b in newest] == [second]
    assert third not in {b.batch_id for b in mine + theirs}


def test_a_jobs_errors_in_input_order(store: Database) -> None:
    with store.sessions.begin() as session:
        job_id = add_job(session, n=5)
        claims = claim(session, worker_id="w", model=MODEL, lease_seconds=LEASE, now=at(1))
        outcomes = {
            c.idx: (ok() if c.idx in (0, 2) else Outcome(error=f"bad {c.idx}")) for c in claims
        }
        complete_many(
            session, items=[(c.request_id, c.fence, outcomes[c.idx]) for c in claims], now=at(2)
        )
    with store.sessions.begin() as session:
        errors = job_errors(session, job_id=job_id)
        first = job_errors(session, job_id=job_id, limit=1)
    assert [(e.idx, e.custom_id, e.error) for e in errors] == [
        (1, "c1", "bad 1"),
        (3, "c3", "bad 3"),
        (4, "c4", "bad 4"),
    ]
    assert [e.idx for e in first] == [1]


def test_workers_with_their_recent_batches(store: Database) -> None:
    with store.sessions.begin() as session:
        heartbeat(session, worker_id="busy", model=MODEL, now=at(100))
        heartbeat(session, worker_id="idle", model=MODEL, now=at(90))
        heartbeat(session, worker_id="gone", model=MODEL, now=at(0))
        for when, rows in ((95, 8), (99, 4), (10, 100)):  # the last one is too old to count
            record_batch(session, batch=batch("busy", rows, {}), now=at(when))
    with store.sessions.begin() as session:
        seen = worker_activity(session, within_seconds=60, now=at(100))
    assert [(w.worker_id, w.batches, w.rows) for w in seen] == [("busy", 2, 12), ("idle", 0, 0)]
    assert seen[0].seen_at == at(100)


def test_a_jobs_batch_parts_go_with_it(store: Database) -> None:
    with store.sessions.begin() as session:
        job_id = add_job(session, n=1)
        claims = claim(session, worker_id="w", model=MODEL, lease_seconds=LEASE, now=at(1))
        complete_many(session, items=[(c.request_id, c.fence, ok()) for c in claims], now=at(2))
        record_batch(session, batch=batch("w", 1, {job_id: (1, 2)}), now=at(2))
    with store.sessions.begin() as session:
        while prune(session, before=at(10)).deleted:
            pass
    with store.sessions.begin() as session:
        assert session.scalar(select(func.count()).select_from(JobBatch)) == 0


def test_tenant_batches_newest_first_and_only_the_tenants(store: Database) -> None:
    with store.sessions.begin() as session:
        job_id = add_job(session, n=1)
        for name, tenant, when in (
            ("batch_old", TENANT, 1),
            ("batch_new", TENANT, 5),
            ("batch_other", "other", 9),
        ):
            session.execute(
                insert(OpenAIBatch).values(
                    id=name,
                    tenant=tenant,
                    job_id=job_id if name == "batch_new" else None,
                    endpoint="/v1/completions",
                    input_file_id="file_x",
                    completion_window="24h",
                    status="in_progress",
                    invalid=0,
                    created_at=at(when),
                    expires_at=at(86400),
                )
            )
    with store.sessions.begin() as session:
        found = tenant_batches(session, tenant=TENANT)
        assert [(b.id, b.job_id) for b in found] == [("batch_new", job_id), ("batch_old", None)]
        assert [b.id for b in tenant_batches(session, tenant=TENANT, limit=1)] == ["batch_new"]
