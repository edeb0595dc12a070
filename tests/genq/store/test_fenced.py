"""Store writes over more claims than one statement matches (genq.store.fenced): a window of
12,000 one-token requests is claimed, renewed, written (successes and failures) and released on
each backend. A row-value list of that size fails on PostgreSQL ("stack depth limit
exceeded")."""

from __future__ import annotations

from genq.store import Outcome, RequestStatus, claim, complete_many, get_job, release_many
from genq.store.fenced import KEYS_PER_STATEMENT
from genq.store.leases import cancel_claims, renew
from genq.store.tables import Request
from tests.conftest import Database
from tests.genq.store.support import LEASE, MODEL, TENANT, add_job, at, ok, statuses

N = 12_000
R = RequestStatus


def test_a_window_of_12000_claims_is_renewed_written_and_released(store: Database) -> None:
    assert N > 2 * KEYS_PER_STATEMENT  # three statements' worth
    with store.sessions.begin() as session:
        job_id = add_job(session, n=N)
    with store.sessions.begin() as session:
        claims = claim(
            session, worker_id="w1", model=MODEL, lease_seconds=LEASE, limit=N, now=at(1)
        )
    assert len(claims) == N
    keys = [(c.request_id, c.fence) for c in claims]
    with store.sessions.begin() as session:
        renewed = renew(session, worker_id="w1", held=keys, lease_seconds=LEASE, now=at(2))
        assert cancel_claims(session, worker_id="w1", held=keys, now=at(2)) == set()
    assert renewed == {c.request_id for c in claims}

    by_idx = sorted(claims, key=lambda c: c.idx)
    done, failed, back = by_idx[:8000], by_idx[8000:10_000], by_idx[10_000:]
    items = [(c.request_id, c.fence, ok()) for c in done]
    items += [(c.request_id, c.fence, Outcome(error=f"bad {c.idx % 3}")) for c in failed]
    stale = (done[0].request_id, done[0].fence + 1, ok())  # a fence it no longer holds
    with store.sessions.begin() as session:
        written = complete_many(session, items=[*items, stale], now=at(3))
    assert written == [True] * len(items) + [False]
    with store.sessions.begin() as session:
        released = release_many(session, items=[(c.request_id, c.fence) for c in back], now=at(4))
    assert released == {c.request_id for c in back}

    with store.sessions.begin() as session:
        assert statuses(session, job_id) == (
            [R.SUCCEEDED] * 8000 + [R.FAILED] * 2000 + [R.QUEUED] * 2000
        )
        job = get_job(session, tenant=TENANT, job_id=job_id)
        assert (job.succeeded, job.failed, job.cancelled) == (8000, 2000, 0)
        errors = dict(
            session.execute(
                Request.__table__.select()
                .with_only_columns(Request.idx, Request.error)
                .where(Request.job_id == job_id, Request.status == R.FAILED)
            ).all()
        )
    assert errors == {c.idx: f"bad {c.idx % 3}" for c in failed}
