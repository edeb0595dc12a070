"""What each dashboard page shows, read from the store for one tenant: plain dicts for the
templates, built by functions a test can call without a browser."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from api.ui import charts
from genq import service
from genq.store import get_job
from genq.store.activity import job_batches, job_errors, tenant_batches, worker_activity
from genq.store.tables import utcnow
from genq.store.views import list_jobs, queue_depths
from genq.store.webhooks import job_deliveries

JOBS_PER_PAGE = 25
WORKER_WINDOW_SECONDS = 300.0
"""Workers seen, and their batches counted, over the last five minutes."""


def ago(then: datetime | None, now: datetime) -> str:
    """``then`` as a short age: 4s, 12m, 3h, 2d."""
    if then is None:
        return "-"
    seconds = max(0.0, (now - then).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def duration(seconds: float | None) -> str:
    """A number of seconds as 45s, 12m 5s, 3h 2m; ``-`` when unknown."""
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.1f}s"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60}s"
    return f"{s // 3600}h {s % 3600 // 60}m"


def when(iso: str | None) -> str:
    """An ISO timestamp as ``2026-12-03 11:54:50 UTC``; ``-`` for none."""
    if iso is None:
        return "-"
    return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M:%S UTC")


def _job_row(job: dict[str, Any], now: datetime) -> dict[str, Any]:
    counts = job["counts"]
    return {
        **job,
        "shown": {k: when(job[f"{k}_at"]) for k in ("created", "started", "finished")},
        "done": counts["succeeded"] + counts["failed"] + counts["cancelled"],
        "percent": round(100 * job["progress"], 1),
        "eta": duration(job["eta_seconds"]),
        "age": ago(datetime.fromisoformat(job["created_at"]), now),
    }


def index(session: Session, *, tenant: str, after: str | None = None) -> dict[str, Any]:
    """The tenant's jobs (a page, newest first) and batches; the workers and queues."""
    now = utcnow()
    found = list_jobs(session, tenant=tenant, after=after, limit=JOBS_PER_PAGE + 1)
    jobs = [_job_row(service.job_public(j, now=now), now) for j in found[:JOBS_PER_PAGE]]
    workers = worker_activity(session, within_seconds=WORKER_WINDOW_SECONDS, now=now)
    minutes = WORKER_WINDOW_SECONDS / 60
    return {
        "tenant": tenant,
        "jobs": jobs,
        "older": jobs[-1]["id"] if len(found) > JOBS_PER_PAGE else None,
        "batches": [
            {
                "id": b.id,
                "endpoint": b.endpoint,
                "status": b.status,
                "job_id": b.job_id,
                "age": ago(b.created_at, now),
            }
            for b in tenant_batches(session, tenant=tenant)
        ],
        "workers": [
            {
                "id": w.worker_id,
                "model": w.model,
                "heartbeat": ago(w.seen_at, now),
                "batches_per_minute": round(w.batches / minutes, 1),
                "rows_per_minute": round(w.rows / minutes, 1),
            }
            for w in workers
        ],
        "queues": sorted(queue_depths(session).items()),
        "live": any(j["status"] in ("queued", "running") for j in jobs),
    }


def job(session: Session, *, tenant: str, job_id: str) -> dict[str, Any]:
    """One job: counts, progress, its throughput over time, the batches it rode in, errors.
    :class:`genq.errors.JobNotFound` for a job that is not the tenant's."""
    now = utcnow()
    info = get_job(session, tenant=tenant, job_id=job_id)
    row = _job_row(service.job_public(info, now=now), now)
    batches = job_batches(session, job_id=job_id)
    tokens = charts.rates([(b.created_at, b.seconds, b.completion_tokens) for b in batches])
    requests = charts.rates([(b.created_at, b.seconds, b.job_rows) for b in batches])
    labels = ("start", f"+{duration(tokens.span)}") if batches else ("", "")
    count = len(batches)
    return {
        "tenant": tenant,
        "job": row,
        "live": info.status in ("queued", "running"),
        "tokens_chart": charts.bars(
            tokens.values, title="New tokens per second", unit="tok/s", labels=labels
        ),
        "requests_chart": charts.bars(
            requests.values, title="Requests finished per second", unit="req/s", labels=labels
        ),
        "batch_count": count,
        "mean_rows": round(sum(b.rows for b in batches) / count, 1) if count else None,
        "mean_efficiency": (
            round(100 * sum(b.prompt_efficiency for b in batches) / count, 1) if count else None
        ),
        "sizes": charts.histogram([b.rows for b in batches]),
        "recent": [
            {
                **b.__dict__,
                "age": ago(b.created_at, now),
                "efficiency": round(100 * b.prompt_efficiency, 1),
            }
            for b in reversed(batches[-10:])
        ],
        "errors": job_errors(session, job_id=job_id),
        "webhooks": [
            {
                "id": d.id,
                "event": d.event,
                "url": d.url,
                "status": d.status,
                "attempts": d.attempts,
                "answer": d.last_status_code or d.last_error or "-",
                "age": ago(d.created_at, now),
            }
            for d in job_deliveries(session, job_id=job_id)
        ],
    }
