"""Prometheus metrics, read from the store at scrape time: the database is the authority, so
every API process reports the same numbers whichever worker did the work. The batch histograms
are kept in the process and read incrementally (api.histograms); the rest is read whole."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import func, select

from api.context import Context
from api.deps import ContextDep
from api.histograms import BatchHistograms, Buckets
from genq.service import LIVE_SECONDS
from genq.store.tables import Job, Result, utcnow
from genq.store.views import live_workers, queue_depths, request_counts

router = APIRouter(tags=["metrics"])

RATE_SECONDS = 60.0
"""Generated tokens/s is averaged over this many seconds."""

LATENCY = (1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)

_made = threading.Lock()


def batch_histograms(app: FastAPI) -> BatchHistograms:
    """The app's batch histograms, made on its first scrape."""
    with _made:
        if not hasattr(app.state, "batch_histograms"):
            app.state.batch_histograms = BatchHistograms()
    histograms: BatchHistograms = app.state.batch_histograms
    return histograms


class StoreCollector:
    def __init__(self, context: Context, batches: BatchHistograms) -> None:
        self.context = context
        self.batches = batches

    def collect(self) -> Iterator[Metric]:
        now = utcnow()
        since = now - timedelta(seconds=RATE_SECONDS)
        with self.context.sessions.begin() as session:
            depth = queue_depths(session)
            counts = request_counts(session)
            workers = live_workers(session, within_seconds=LIVE_SECONDS, now=now)
            self.batches.update(session)
            tokens = session.scalar(
                select(func.coalesce(func.sum(Result.completion_tokens), 0)).where(
                    Result.finished_at >= since
                )
            )
            jobs = session.execute(
                select(Job.created_at, Job.finished_at).where(Job.finished_at.is_not(None))
            ).all()
        gauge = GaugeMetricFamily("genq_queue_depth", "Queued requests per model", labels=["model"])
        for model, count in depth.items():
            gauge.add_metric([model], count)
        yield gauge
        by_status = GaugeMetricFamily("genq_requests", "Requests by status", labels=["status"])
        for status in ("queued", "running", "succeeded", "failed", "cancelled"):
            by_status.add_metric([status], counts.get(status, 0))
        yield by_status
        live = GaugeMetricFamily(
            "genq_live_workers", "Workers with a recent heartbeat", labels=["model"]
        )
        for model, count in workers.items():
            live.add_metric([model], count)
        yield live
        yield GaugeMetricFamily(
            "genq_generated_tokens_per_second",
            f"Completion tokens per second over the last {RATE_SECONDS:.0f} s",
            value=float(tokens or 0) / RATE_SECONDS,
        )
        yield from self.batches.families()
        latency = Buckets.of(LATENCY, ((f - c).total_seconds() for c, f in jobs if f))
        yield latency.family("genq_job_latency_seconds", "Job creation to finish")


@router.get("/metrics")
def metrics(request: Request, context: ContextDep) -> Response:
    registry = CollectorRegistry(auto_describe=False)
    collector = StoreCollector(context, batch_histograms(request.app))
    registry.register(collector)  # type: ignore[arg-type]
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
