"""Prometheus metrics, read from the store at scrape time: the database is the authority, so
every API process reports the same numbers whichever worker did the work."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from sqlalchemy import func, select

from api.context import Context
from api.deps import ContextDep
from genq.service import LIVE_SECONDS
from genq.store.tables import Batch, Job, Result, utcnow
from genq.store.views import live_workers, queue_depths, request_counts

router = APIRouter(tags=["metrics"])

RATE_SECONDS = 60.0
"""Generated tokens/s is averaged over this many seconds."""

BATCH_ROWS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
EFFICIENCY = (0.25, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
LATENCY = (1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)


def _histogram(name: str, doc: str, values: list[float], bounds: tuple[float, ...]) -> Metric:
    buckets = [(str(b), float(sum(v <= b for v in values))) for b in bounds]
    buckets.append(("+Inf", float(len(values))))
    family = HistogramMetricFamily(name, doc)
    family.add_metric([], buckets, sum_value=float(sum(values)))
    return family


class StoreCollector:
    def __init__(self, context: Context) -> None:
        self.context = context

    def collect(self) -> Iterator[Metric]:
        now = utcnow()
        since = now - timedelta(seconds=RATE_SECONDS)
        with self.context.sessions.begin() as session:
            depth = queue_depths(session)
            counts = request_counts(session)
            workers = live_workers(session, within_seconds=LIVE_SECONDS, now=now)
            batches = session.execute(select(Batch.rows, Batch.prompt_efficiency)).all()
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
        yield _histogram(
            "genq_batch_rows", "Rows per generate call", [float(r) for r, _ in batches], BATCH_ROWS
        )
        yield _histogram(
            "genq_batch_padding_efficiency",
            "Real / padded prompt tokens per batch",
            [float(e) for _, e in batches],
            EFFICIENCY,
        )
        yield _histogram(
            "genq_job_latency_seconds",
            "Job creation to finish",
            [(f - c).total_seconds() for c, f in jobs],
            LATENCY,
        )


@router.get("/metrics")
def metrics(context: ContextDep) -> Response:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(context))  # type: ignore[arg-type]
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
