"""Prometheus metrics, read from the store at scrape time: the database is the authority, so
every API process reports the same numbers whichever worker did the work. The batch and job
latency histograms are kept in the process and read incrementally (api.histograms); the rest is
counted at each scrape."""

from __future__ import annotations

import hmac
import threading
from collections.abc import Iterator
from datetime import timedelta

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy import func, select

from api.context import Context
from api.deps import ContextDep
from api.histograms import BatchHistograms, JobLatency
from api.openapi import non_json
from genq.errors import Unauthorized
from genq.store.shares import TenantUsage, usage
from genq.store.tables import Result, utcnow
from genq.store.views import finished_totals, live_workers, queue_depths, request_counts
from genq.uploads import LIVE_SECONDS

router = APIRouter(tags=["metrics"])

RATE_SECONDS = 60.0
"""Generated tokens/s is averaged over this many seconds."""

_made = threading.Lock()


def histograms(app: FastAPI) -> tuple[BatchHistograms, JobLatency]:
    """The app's histograms, made on its first scrape."""
    with _made:
        if not hasattr(app.state, "histograms"):
            app.state.histograms = (BatchHistograms(), JobLatency())
    made: tuple[BatchHistograms, JobLatency] = app.state.histograms
    return made


class StoreCollector:
    def __init__(self, context: Context, batches: BatchHistograms, jobs: JobLatency) -> None:
        self.context = context
        self.batches = batches
        self.jobs = jobs

    def collect(self) -> Iterator[Metric]:
        now = utcnow()
        since = now - timedelta(seconds=RATE_SECONDS)
        with self.context.sessions.begin() as session:
            depth = queue_depths(session)
            counts = request_counts(session)
            workers = live_workers(session, within_seconds=LIVE_SECONDS, now=now)
            tenants = usage(session)
            totals = finished_totals(session)
            self.batches.update(session)
            self.jobs.update(session)
            tokens = session.scalar(
                select(func.coalesce(func.sum(Result.completion_tokens), 0)).where(
                    Result.finished_at >= since
                )
            )
        gauge = GaugeMetricFamily("genq_queue_depth", "Queued requests per model", labels=["model"])
        # every model known here has a sample, 0 when nothing waits (an alert needs one)
        known = {self.context.settings.default_model, *workers, *totals}
        for model in sorted(known | set(depth)):
            gauge.add_metric([model], depth.get(model, 0))
        yield gauge
        yield from _total_families(totals)
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
        yield from _tenant_families(tenants)
        yield GaugeMetricFamily(
            "genq_generated_tokens_per_second",
            f"Completion tokens per second over the last {RATE_SECONDS:.0f} s",
            value=float(tokens or 0) / RATE_SECONDS,
        )
        yield from self.batches.families()
        yield self.jobs.family()


def _total_families(totals: dict[str, dict[str, int]]) -> Iterator[Metric]:
    """Counters since the database began (retention keeps what it deletes in them): rate()
    over these is the throughput over any window."""
    finished = CounterMetricFamily(
        "genq_requests_finished",
        "Requests finished, by model and outcome",
        labels=["model", "status"],
    )
    prompt = CounterMetricFamily(
        "genq_prompt_tokens", "Prompt tokens of finished requests", labels=["model"]
    )
    completion = CounterMetricFamily(
        "genq_completion_tokens", "Completion tokens generated", labels=["model"]
    )
    for model, held in sorted(totals.items()):
        for status in ("succeeded", "failed", "cancelled"):
            finished.add_metric([model, status], held[status])
        prompt.add_metric([model], held["prompt_tokens"])
        completion.add_metric([model], held["completion_tokens"])
    yield from (finished, prompt, completion)


def _tenant_families(tenants: dict[str, TenantUsage]) -> Iterator[Metric]:
    """Accepted, unfinished work per tenant (names only): what the fair share divides."""
    for name, help_, value in (
        ("genq_tenant_queued_requests", "Queued requests per tenant", lambda u: u.queued),
        ("genq_tenant_running_requests", "Running requests per tenant", lambda u: u.running),
        (
            "genq_tenant_queued_tokens",
            "Estimated tokens (prompt + max_new_tokens) queued per tenant",
            lambda u: u.queued_tokens,
        ),
        (
            "genq_tenant_running_tokens",
            "Estimated tokens (prompt + max_new_tokens) running per tenant",
            lambda u: u.running_tokens,
        ),
    ):
        family = GaugeMetricFamily(name, help_, labels=["tenant"])
        for tenant, use in sorted(tenants.items()):
            family.add_metric([tenant], value(use))
        yield family


@router.get("/metrics", responses=non_json(CONTENT_TYPE_LATEST, "Prometheus text format"))
def metrics(request: Request, context: ContextDep) -> Response:
    """Prometheus metrics; with GENQ_METRICS_TOKEN set, only for a bearer of that token."""
    token = context.settings.metrics_token
    if token is not None:
        scheme, _, sent = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(sent.strip(), token):
            raise Unauthorized("/metrics needs Authorization: Bearer <GENQ_METRICS_TOKEN>")
    registry = CollectorRegistry(auto_describe=False)
    collector = StoreCollector(context, *histograms(request.app))
    registry.register(collector)  # type: ignore[arg-type]
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
