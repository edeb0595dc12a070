"""Histograms for /metrics, kept up to date incrementally: a scrape reads the batches recorded
and the jobs finished since the last scrape, not the whole ``batches`` and ``jobs`` tables."""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import accumulate

from prometheus_client.core import HistogramMetricFamily, Metric
from sqlalchemy.orm import Session

from genq.store.tables import utcnow
from genq.store.views import batch_shapes, finished_jobs

BATCH_ROWS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
EFFICIENCY = (0.25, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
LATENCY = (1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)

BATCH_PAGE = 10_000
"""Batches read per query while catching up."""

GAP_SECONDS = 60.0
"""How long an id below the highest batch seen is looked for again. PostgreSQL hands out ids
at insert, so a batch can commit after a higher id is visible; one still missing after this
long belonged to a write that rolled back."""

MAX_GAPS = 10_000
"""Most missing ids looked for at once (a bound on each scrape's query, whatever happened)."""

JOB_PAGE = 10_000
"""Finished jobs read per query while catching up."""

LATE_SECONDS = 60.0
"""How far before the latest finish seen (or before now, if that is earlier: a worker whose
clock runs ahead stamps finishes in the future) a scrape looks again for finished jobs. A job's
finish time is stamped before its transaction commits, on the clock of the process that
finished it, so a job can become visible after one that finished later; one that becomes
visible more than this long after its stamp, by the API's clock, is never counted."""


@dataclass
class Buckets:
    """A histogram: observations per bucket (the last one above every bound) and their sum."""

    bounds: tuple[float, ...]
    counts: list[int] = field(init=False)
    total: float = 0.0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    @classmethod
    def of(cls, bounds: tuple[float, ...], values: Iterable[float]) -> Buckets:
        buckets = cls(bounds)
        for value in values:
            buckets.observe(value)
        return buckets

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # the first bound >= value
        self.total += value

    def family(self, name: str, doc: str) -> Metric:
        cumulative = list(accumulate(self.counts))
        buckets = [(str(b), float(c)) for b, c in zip(self.bounds, cumulative[:-1], strict=True)]
        buckets.append(("+Inf", float(cumulative[-1])))
        family = HistogramMetricFamily(name, doc)
        family.add_metric([], buckets, sum_value=self.total)
        return family


class BatchHistograms:
    """Rows and padding efficiency of every recorded batch, kept by one API process. Each
    :meth:`update` reads only the batches past the highest id seen, and the ids below it that
    were missing until now (see :data:`GAP_SECONDS`). Batches are never deleted, so a new
    process catches up on its first scrape and every API process reports the same counts."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.rows = Buckets(BATCH_ROWS)
        self.efficiency = Buckets(EFFICIENCY)
        self.last_id = 0
        self.gaps: dict[int, float] = {}  # a missing id -> when it was first missed
        self._clock = clock
        self._lock = threading.Lock()  # concurrent scrapes: one reads, the next finds it done

    def update(self, session: Session) -> None:
        with self._lock:
            now = self._clock()
            while True:
                shapes = batch_shapes(
                    session, after_id=self.last_id, also=self.gaps, limit=BATCH_PAGE
                )
                for batch_id, rows, efficiency in shapes:
                    if batch_id > self.last_id:
                        self._missed(range(self.last_id + 1, batch_id), now)
                        self.last_id = batch_id
                    else:
                        del self.gaps[batch_id]  # committed late: counted now
                    self.rows.observe(rows)
                    self.efficiency.observe(efficiency)
                if len(shapes) < BATCH_PAGE:
                    break
            self.gaps = {i: t for i, t in self.gaps.items() if now - t < GAP_SECONDS}

    def _missed(self, ids: range, now: float) -> None:
        for batch_id in ids[: max(0, MAX_GAPS - len(self.gaps))]:
            self.gaps[batch_id] = now

    def families(self) -> list[Metric]:
        with self._lock:
            return [
                self.rows.family("genq_batch_rows", "Rows per generate call"),
                self.efficiency.family(
                    "genq_batch_padding_efficiency", "Real / padded prompt tokens per batch"
                ),
            ]


class JobLatency:
    """Creation-to-finish time of every finished job, kept by one API process. Each
    :meth:`update` reads the jobs finished since :data:`LATE_SECONDS` before the latest finish
    seen, by index, and counts those it has not counted yet."""

    def __init__(self) -> None:
        self.latency = Buckets(LATENCY)
        self.latest: datetime | None = None
        self.counted: dict[str, datetime] = {}  # the jobs finished within the late window
        self._lock = threading.Lock()

    def update(self, session: Session, *, now: datetime | None = None) -> None:
        with self._lock:
            now = now or utcnow()
            cursor = None if self.latest is None else (self._horizon(now), "")
            while True:
                jobs = finished_jobs(session, after=cursor, limit=JOB_PAGE)
                for job_id, created, finished in jobs:
                    if job_id not in self.counted:
                        self.latency.observe((finished - created).total_seconds())
                        self.counted[job_id] = finished
                    if self.latest is None or finished > self.latest:
                        self.latest = finished
                if self.latest is not None:  # pages come in finish order: prune as they come
                    horizon = self._horizon(now)
                    self.counted = {i: f for i, f in self.counted.items() if f >= horizon}
                if len(jobs) < JOB_PAGE:
                    break
                cursor = (jobs[-1][2], jobs[-1][0])

    def _horizon(self, now: datetime) -> datetime:
        assert self.latest is not None
        return min(self.latest, now) - timedelta(seconds=LATE_SECONDS)

    def family(self) -> Metric:
        with self._lock:
            return self.latency.family("genq_job_latency_seconds", "Job creation to finish")
