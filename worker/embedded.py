"""The embedded worker: the same claim, run and write as a Celery worker, but claiming straight
from the database, with no queue. ``genq run`` drains its job with it."""

from __future__ import annotations

from functools import partial

from genq.store import reap
from worker.service import Runtime, claim_any, run_claims


def drain(rt: Runtime, *, job_id: str | None = None) -> int:
    """Claim and run windows of the runtime's model (of ``job_id`` only, if given) until nothing
    is claimable or the runtime is asked to stop. Returns how many outcomes were written.

    Requests out of attempts are failed first (the reconciler's pass), so the drain ends with
    every request it could reach in a terminal state."""
    with rt.sessions.begin() as session:
        reap(
            session,
            max_attempts=rt.settings.max_attempts,
            reannounce_seconds=rt.settings.reannounce_seconds,
        )
    written = 0
    while not rt.stopping.is_set():
        claims = claim_any(rt, job_id=job_id)
        if not claims:
            break
        more = partial(claim_any, rt, job_id=job_id)  # the next window, while this one runs
        written += run_claims(rt, claims, share=job_id is None, claim_more=more)
    return written
