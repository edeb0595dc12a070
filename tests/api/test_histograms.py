"""The histograms /metrics keeps per process: read incrementally, late commits counted once."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert
from sqlalchemy.orm import Session, sessionmaker

from api import histograms
from api.histograms import GAP_SECONDS, BatchHistograms, Buckets, JobLatency
from genq.store import JobStatus
from genq.store.tables import Batch, Job, utcnow
from genq.store.views import finished_jobs
from tests.api.conftest import Service


def add_batches(sessions: sessionmaker[Session], *shapes: tuple[int, int, float]) -> None:
    """Batches of (id, rows, prompt efficiency), with the ids given (as a late commit has)."""
    with sessions.begin() as session:
        for batch_id, rows, efficiency in shapes:
            session.execute(
                insert(Batch).values(
                    id=batch_id,
                    worker_id="w",
                    model="tiny-gpt2",
                    group_key="g",
                    rows=rows,
                    padded_length=8,
                    prompt_efficiency=efficiency,
                    seconds=0.1,
                    request_ids=[],
                    refused=0,
                    created_at=utcnow(),
                )
            )


def update(h: BatchHistograms, sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        h.update(session)


def test_a_value_on_a_bound_falls_in_that_bucket() -> None:
    buckets = Buckets.of((1, 2), [1, 1.5, 2, 3])
    assert (buckets.counts, buckets.total) == ([1, 2, 1], 7.5)


def test_a_batch_committed_after_a_higher_id_is_counted_when_it_appears(
    make_service: Callable[..., Service],
) -> None:
    sessions = make_service().context.sessions
    now = [0.0]
    h = BatchHistograms(clock=lambda: now[0])
    add_batches(sessions, (1, 4, 0.5), (3, 8, 0.9))  # 2 is still being written
    update(h, sessions)
    assert (sum(h.rows.counts), h.rows.total, set(h.gaps)) == (2, 12, {2})
    add_batches(sessions, (2, 16, 1.0))
    update(h, sessions)
    assert (sum(h.rows.counts), h.rows.total, h.gaps) == (3, 28, {})
    update(h, sessions)
    assert (sum(h.rows.counts), h.rows.total) == (3, 28)  # nothing counted twice


def test_an_id_missing_for_longer_than_the_grace_is_no_longer_looked_for(
    make_service: Callable[..., Service],
) -> None:
    sessions = make_service().context.sessions
    now = [0.0]
    h = BatchHistograms(clock=lambda: now[0])
    add_batches(sessions, (3, 1, 1.0))
    update(h, sessions)
    assert set(h.gaps) == {1, 2}
    now[0] = GAP_SECONDS / 2
    update(h, sessions)
    assert set(h.gaps) == {1, 2}
    now[0] = GAP_SECONDS
    update(h, sessions)  # a rolled-back write: its id never appears
    assert (h.gaps, sum(h.rows.counts)) == ({}, 1)


def test_catching_up_reads_page_after_page(
    make_service: Callable[..., Service], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(histograms, "BATCH_PAGE", 2)
    sessions = make_service().context.sessions
    add_batches(sessions, *[(i, i, 0.5) for i in range(1, 8)])
    h = BatchHistograms()
    update(h, sessions)
    assert (sum(h.rows.counts), h.rows.total, h.last_id, h.gaps) == (7, 28, 7, {})


START = datetime(2026, 1, 1, tzinfo=UTC)


def add_finished_jobs(sessions: sessionmaker[Session], *jobs: tuple[str, float, float]) -> None:
    """Finished jobs of (id, seconds from a fixed start to creation, to finish)."""
    with sessions.begin() as session:
        for job_id, created, finished in jobs:
            session.execute(
                insert(Job).values(
                    id=job_id,
                    tenant="a",
                    model="tiny-gpt2",
                    params={},
                    status=JobStatus.COMPLETED,
                    total=1,
                    succeeded=1,
                    failed=0,
                    cancelled=0,
                    prompt_tokens=1,
                    completion_tokens=1,
                    created_at=START + timedelta(seconds=created),
                    finished_at=START + timedelta(seconds=finished),
                )
            )


def update_jobs(h: JobLatency, sessions: sessionmaker[Session], now: float = 1e6) -> None:
    """``h.update`` at ``now`` seconds after the jobs' fixed start."""
    with sessions.begin() as session:
        h.update(session, now=START + timedelta(seconds=now))


def test_job_latency_counts_each_finished_job_once(make_service: Callable[..., Service]) -> None:
    sessions = make_service().context.sessions
    h = JobLatency()
    add_finished_jobs(sessions, ("job_a", 0, 2), ("job_b", 0, 100))
    update_jobs(h, sessions)
    assert (sum(h.latency.counts), h.latency.total) == (2, 102)
    update_jobs(h, sessions)
    assert (sum(h.latency.counts), h.latency.total) == (2, 102)  # nothing counted twice
    # Committed after job_b but finished before it, within the late window: counted now.
    add_finished_jobs(sessions, ("job_c", 50, 90), ("job_d", 100, 400))
    update_jobs(h, sessions)
    assert (sum(h.latency.counts), h.latency.total) == (4, 442)
    assert set(h.counted) == {"job_d"}  # older finishes are no longer looked at


def test_job_latency_never_rereads_what_is_past_the_late_window(
    make_service: Callable[..., Service], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(histograms, "JOB_PAGE", 2)
    sessions = make_service().context.sessions
    add_finished_jobs(sessions, *[(f"job_{i}", 0, 1000 * i) for i in range(1, 8)])
    h = JobLatency()
    update_jobs(h, sessions)
    assert (sum(h.latency.counts), h.latency.total, set(h.counted)) == (7, 28_000, {"job_7"})
    read: list[str] = []

    def counting(*args: Any, **kwargs: Any) -> list[tuple[str, datetime, datetime]]:
        jobs = finished_jobs(*args, **kwargs)
        read.extend(job_id for job_id, _, _ in jobs)
        return jobs

    monkeypatch.setattr(histograms, "finished_jobs", counting)
    update_jobs(h, sessions)
    assert (sum(h.latency.counts), read) == (7, ["job_7"])  # the late window only


def test_a_worker_clock_running_ahead_hides_no_other_job(
    make_service: Callable[..., Service],
) -> None:
    sessions = make_service().context.sessions
    h = JobLatency()
    add_finished_jobs(sessions, ("job_fast", 0, 3600))  # stamped an hour ahead of the API
    update_jobs(h, sessions, now=10)
    add_finished_jobs(sessions, ("job_on_time", 0, 20))
    update_jobs(h, sessions, now=30)
    update_jobs(h, sessions, now=40)
    assert (sum(h.latency.counts), h.latency.total) == (2, 3620)
