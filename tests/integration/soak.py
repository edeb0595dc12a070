"""A bounded soak of the distributed mode, not part of the default test run (the file name keeps
pytest from collecting it unless named):

    GENQ_SOAK_JOBS=20 GENQ_SOAK_SECONDS=60 .venv/bin/python -m pytest tests/integration/soak.py -s

N jobs over three parameter sets go to two workers while one worker is SIGKILLed and replaced
every few seconds, Redis is restarted once and one job is cancelled; then the chaos stops and
the cluster drains. It checks that every accepted request ended in exactly one terminal state
with at most one result (exactly one when it succeeded), that job counters agree, and prints
the counts."""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter

from genq.errors import IllegalTransition
from genq.params import GenerationParams
from genq.store import RequestStatus, cancel_job
from tests.integration.cluster import TENANT, Cluster, WorkerProcess
from tests.worker.conftest import varied_prompts

JOBS = int(os.environ.get("GENQ_SOAK_JOBS", "20"))
CHAOS_SECONDS = float(os.environ.get("GENQ_SOAK_SECONDS", "60"))
KILL_EVERY_S = float(os.environ.get("GENQ_SOAK_KILL_EVERY", "4"))
CANCEL_AFTER_S = 3.0
DRAIN_TIMEOUT_S = 300.0
PARAMS = [GenerationParams(max_new_tokens=n) for n in (4, 6, 8)]


def test_soak(cluster: Cluster) -> None:
    rng = random.Random(7)
    cluster.configure(max_batch_size=4, claim_window=8, message_size=8)
    faults = {"GENQ_TEST_BATCH_DELAY": "0.5"}  # so that kills land inside batches
    workers: list[WorkerProcess] = [cluster.start_worker(faults=faults) for _ in range(2)]
    started = time.monotonic()
    jobs = [
        cluster.submit(varied_prompts(rng.randint(8, 24)), PARAMS[n % len(PARAMS)])
        for n in range(JOBS)
    ]
    kills = restarts = 0
    cancelled_job = jobs[-1]  # submitted last: likely still has queued work
    cancelled = redis_restarted = False
    next_kill = time.monotonic() + KILL_EVERY_S
    while time.monotonic() - started < CHAOS_SECONDS:
        now = time.monotonic()
        if now >= next_kill:
            victim = rng.choice([w for w in workers if w.alive()] or workers)
            victim.kill(signal.SIGKILL)
            kills += 1
            workers[workers.index(victim)] = cluster.start_worker(faults=faults, wait=False)
            next_kill = now + KILL_EVERY_S
        if not redis_restarted and now - started > CHAOS_SECONDS / 2:
            cluster.redis.restart(down_for=1.0)
            redis_restarted = True
        if not cancelled and now - started > CANCEL_AFTER_S:
            try:
                with cluster.sessions.begin() as session:
                    cancel_job(session, tenant=TENANT, job_id=cancelled_job)
            except IllegalTransition:
                print("\nsoak: the job to cancel had already completed")
            cancelled = True
        for n, worker in enumerate(workers):
            if not worker.alive() and worker.proc.returncode not in (None, -signal.SIGKILL):
                restarts += 1  # died on its own: start another, and say so below
                workers[n] = cluster.start_worker(faults=faults, wait=False)
        time.sleep(0.2)
    for worker in workers:
        if worker.alive():
            cluster.wait_ready(worker)
    infos = cluster.wait_jobs(jobs, timeout=DRAIN_TIMEOUT_S)
    elapsed = time.monotonic() - started

    states: Counter[str] = Counter()
    results = 0
    accepted = 0
    for job_id, info in zip(jobs, infos, strict=True):
        rows = cluster.requests(job_id)
        accepted += len(rows)
        assert info.total == len(rows)
        counts = Counter(r.status for r in rows)
        for row in rows:
            assert row.status.is_terminal, (job_id, row)
            assert row.results <= 1, (job_id, row)
            assert (row.results == 1) == (row.status is RequestStatus.SUCCEEDED), (job_id, row)
            if row.status is RequestStatus.FAILED:
                assert row.error, (job_id, row)
        assert (info.succeeded, info.failed, info.cancelled) == (
            counts[RequestStatus.SUCCEEDED],
            counts[RequestStatus.FAILED],
            counts[RequestStatus.CANCELLED],
        )
        states.update(str(s) for s in counts.elements())
        results += sum(r.results for r in rows)
    batches = cluster.batches()
    print(
        f"\nsoak: {len(jobs)} jobs, {accepted} requests accepted in {elapsed:.0f} s | "
        f"succeeded {states['succeeded']}, failed {states['failed']}, "
        f"cancelled {states['cancelled']} | results {results} | "
        f"{kills} workers SIGKILLed, {restarts} died otherwise, Redis restarted once | "
        f"{len(batches)} batches, {sum(b.refused for b in batches)} stale writes refused"
    )
    assert sum(states.values()) == accepted
    assert results == states["succeeded"]
    assert restarts == 0
