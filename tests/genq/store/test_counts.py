"""The metrics' request counts and queue depths come from job counters, not a scan of the
requests: they must equal what a count over the requests gives, in every state."""

from __future__ import annotations

from sqlalchemy import func, select

from genq.store import cancel_job, claim, complete_many
from genq.store.tables import Request
from genq.store.views import queue_depths, request_counts
from tests.conftest import Database
from tests.genq.store.support import LEASE, MODEL, TENANT, add_job, at, ok


def test_counts_from_job_counters_match_the_requests(store: Database) -> None:
    with store.sessions.begin() as session:
        done = add_job(session, n=5, now=at(0))
        part = add_job(session, n=6, now=at(1))
        cut = add_job(session, n=4, now=at(2))
        add_job(session, n=3, model="other", now=at(3))
    with store.sessions.begin() as session:
        first = claim(session, worker_id="w", model=MODEL, lease_seconds=LEASE, job_id=done)
        complete_many(session, items=[(c.request_id, c.fence, ok()) for c in first])
        some = claim(session, worker_id="w", model=MODEL, lease_seconds=LEASE, job_id=part, limit=4)
        complete_many(session, items=[(c.request_id, c.fence, ok()) for c in some[:2]])
        claim(session, worker_id="w", model=MODEL, lease_seconds=LEASE, job_id=cut, limit=1)
        cancel_job(session, tenant=TENANT, job_id=cut)
    with store.sessions.begin() as session:
        by_rows = dict(
            session.execute(select(Request.status, func.count()).group_by(Request.status)).all()
        )
        expected = {
            s: by_rows.get(s, 0) for s in ("queued", "running", "succeeded", "failed", "cancelled")
        }
        assert request_counts(session) == expected
        assert expected == {"queued": 5, "running": 3, "succeeded": 7, "failed": 0, "cancelled": 3}
        queued = dict(
            session.execute(
                select(Request.model, func.count())
                .where(Request.status == "queued")
                .group_by(Request.model)
            ).all()
        )
        assert queue_depths(session) == queued == {MODEL: 2, "other": 3}
