"""The distributed mode end to end: real redis-server, real PostgreSQL, real ``genq worker``
processes on tiny-gpt2, and the faults the design must survive."""

from __future__ import annotations

import re
import signal
import time
from collections import Counter

from genq.params import GenerationParams
from genq.store import Announcement, JobStatus, RequestStatus, cancel_job
from tests.integration.cluster import MODEL, TENANT, Cluster, WorkerProcess, wait_for
from tests.integration.fault_worker import POISON_EXIT
from tests.worker.conftest import request, run_all, varied_prompts
from worker.engine import Engine
from worker.models import LoadedModel

SHORT = GenerationParams(max_new_tokens=5)
LONGER = GenerationParams(max_new_tokens=7)
R = RequestStatus
HANDLED_NOTHING = re.compile(r"Task genq\.generate\[[^\]]+\] succeeded in [^:]+: 0$", re.M)


def first_batch_of(cluster: Cluster, worker: WorkerProcess) -> None:
    wait_for(
        lambda: any(b.worker_id == worker.worker_id for b in cluster.batches()),
        timeout=60,
        what=f"a batch from {worker.name}",
    )


def assert_each_succeeded_once(cluster: Cluster, job_id: str, count: int) -> None:
    rows = cluster.requests(job_id)
    assert [(r.status, r.results) for r in rows] == [(R.SUCCEEDED, 1)] * count
    job = cluster.job(job_id)
    assert (job.status, job.succeeded, job.failed) == (JobStatus.COMPLETED, count, 0)


def test_jobs_of_one_parameter_set_share_batches_and_match_the_engine_alone(
    cluster: Cluster, tiny: LoadedModel
) -> None:
    cluster.configure(buffer_seconds=1.0)
    cluster.start_worker()
    # Prompts of one length: the planner then has no reason to cut them apart by length.
    prompts = [f"Note {n}: the river ran past the old mill and turned the wheel." for n in range(9)]
    jobs = [
        cluster.submit(prompts[0:3], SHORT),
        cluster.submit(prompts[3:6], SHORT),
        cluster.submit(prompts[6:9], LONGER),
    ]
    cluster.wait_jobs(jobs, timeout=60)
    ids = {job: [r.id for r in cluster.requests(job)] for job in jobs}
    group_of = {i: SHORT.group_key() for i in ids[jobs[0]] + ids[jobs[1]]}
    group_of.update({i: LONGER.group_key() for i in ids[jobs[2]]})
    batches = cluster.batches()
    for batch in batches:  # one parameter set per batch, as recorded
        assert {group_of[i] for i in batch.request_ids} == {batch.group_key}
    shared = [
        b
        for b in batches
        if set(b.request_ids) & set(ids[jobs[0]]) and set(b.request_ids) & set(ids[jobs[1]])
    ]
    assert shared, f"no batch holds requests of both jobs: {[b.request_ids for b in batches]}"
    alone = Engine(tiny, max_batch_tokens=65536, max_batch_size=64)
    for job, params, offset in [(jobs[0], SHORT, 0), (jobs[1], SHORT, 3), (jobs[2], LONGER, 6)]:
        assert_each_succeeded_once(cluster, job, 3)
        for n, row in enumerate(cluster.results(job)):
            expected = run_all(alone, [request("x", prompts[offset + n], **params.model_dump())])
            assert row.choices[0].text == expected["x"].choices[0].text
            assert row.choices[0].finish_reason == expected["x"].choices[0].finish_reason


def test_a_worker_killed_mid_batch_loses_nothing_and_duplicates_nothing(
    cluster: Cluster,
) -> None:
    cluster.configure(max_batch_size=2, claim_window=4, message_size=4)
    doomed = cluster.start_worker(faults={"GENQ_TEST_BATCH_DELAY": "1.0"})
    job = cluster.submit(varied_prompts(12), SHORT)
    first_batch_of(cluster, doomed)
    doomed.kill(signal.SIGKILL)  # every batch of it takes a second: this lands in one
    held = [r.id for r in cluster.requests(job) if r.lease_owner == doomed.worker_id]
    held = [r.id for r in cluster.requests(job) if r.id in held and r.status is R.RUNNING]
    assert held, "the killed worker held no claims"
    survivor = cluster.start_worker()
    cluster.wait_jobs([job], timeout=90)
    assert_each_succeeded_once(cluster, job, 12)
    attempts = {r.id: r.attempts for r in cluster.requests(job)}
    for request_id in held:
        assert cluster.result_worker(request_id) == survivor.worker_id
        assert attempts[request_id] == 2


def test_a_duplicate_message_claims_nothing_and_writes_nothing(cluster: Cluster) -> None:
    worker = cluster.start_worker()
    job = cluster.submit(varied_prompts(4), SHORT)
    cluster.wait_jobs([job], timeout=60)
    before = (cluster.batches(), cluster.results(job))
    handled_nothing = len(HANDLED_NOTHING.findall(worker.text()))
    ids = tuple(r.id for r in cluster.requests(job))
    cluster.publisher.publish(Announcement(MODEL, SHORT.group_key(), ids))  # the same again
    wait_for(
        lambda: len(HANDLED_NOTHING.findall(worker.text())) > handled_nothing,
        timeout=30,
        what="the duplicate to be handled",
    )
    assert (cluster.batches(), cluster.results(job)) == before
    assert_each_succeeded_once(cluster, job, 4)


def test_a_lease_that_expires_under_a_slow_batch_keeps_the_new_claims_result(
    cluster: Cluster,
) -> None:
    cluster.configure(lease_seconds=2)
    slow = cluster.start_worker(faults={"GENQ_TEST_STALL": "STALL"})
    job = cluster.submit(["STALL " + varied_prompts(1)[0]], SHORT)
    wait_for(
        lambda: cluster.requests(job)[0].lease_owner == slow.worker_id,
        timeout=30,
        what="the slow worker's claim",
    )
    fast = cluster.start_worker()
    cluster.wait_jobs([job], timeout=60)
    (row,) = cluster.requests(job)
    # The slow worker's batch ends after the other wrote its result: its write is refused.
    (stale,) = wait_for(
        lambda: [b for b in cluster.batches() if b.worker_id == slow.worker_id],
        timeout=60,
        what="the slow worker's batch",
    )
    assert (stale.request_ids, stale.refused) == ((row.id,), 1)
    assert (row.status, row.results, row.attempts) == (R.SUCCEEDED, 1, 2)
    assert cluster.result_worker(row.id) == fast.worker_id
    assert [b.refused for b in cluster.batches() if b.worker_id == fast.worker_id] == [0]
    assert cluster.job(job).succeeded == 1


def test_a_job_completes_across_a_redis_restart(cluster: Cluster) -> None:
    cluster.configure(max_batch_size=2, claim_window=2, message_size=2)
    worker = cluster.start_worker(faults={"GENQ_TEST_BATCH_DELAY": "0.5"})
    job = cluster.submit(varied_prompts(16), SHORT)
    first_batch_of(cluster, worker)
    cluster.redis.restart(down_for=1.0)  # every queued message is gone
    restarted = time.monotonic()
    done_before = sum(r.status is R.SUCCEEDED for r in cluster.requests(job))
    assert done_before < 16
    cluster.wait_jobs([job], timeout=120)
    assert_each_succeeded_once(cluster, job, 16)
    assert worker.alive()  # the same worker reconnected and carried on
    assert time.monotonic() - restarted > 1


def test_a_poison_request_fails_after_its_attempts_and_the_rest_succeeds(
    cluster: Cluster,
) -> None:
    cluster.configure(claim_window=4, message_size=4)
    faults = {"GENQ_TEST_POISON": "POISON"}
    workers = [cluster.start_worker(faults=faults, wait=False) for _ in range(2)]
    for worker in workers:
        cluster.wait_ready(worker)
    prompts = varied_prompts(6)
    prompts[2] = "POISON " + prompts[2]
    job = cluster.submit(prompts, SHORT)
    deaths = 0
    deadline = time.monotonic() + 150
    while not cluster.job(job).status.is_terminal:
        assert time.monotonic() < deadline, "the job did not end"
        for n, worker in enumerate(workers):
            if not worker.alive():  # a supervisor restarts what dies
                assert worker.proc.returncode == POISON_EXIT, worker.text()[-2000:]
                deaths += 1
                workers[n] = cluster.start_worker(faults=faults, wait=False)
        time.sleep(0.2)
    rows = cluster.requests(job)
    assert [(r.status, r.results) for r in rows] == [(R.SUCCEEDED, 1)] * 2 + [(R.FAILED, 0)] + [
        (R.SUCCEEDED, 1)
    ] * 3
    assert rows[2].error == "gave up after 3 attempts: worker lost"
    assert deaths == 3  # killed its worker once per attempt, then stopped
    info = cluster.job(job)
    assert (info.status, info.succeeded, info.failed) == (JobStatus.COMPLETED, 5, 1)


def test_two_workers_on_one_queue_share_the_load(cluster: Cluster) -> None:
    cluster.configure(claim_window=2, message_size=2, max_batch_size=2)
    faults = {"GENQ_TEST_BATCH_DELAY": "0.3"}
    workers = [cluster.start_worker(faults=faults, wait=False) for _ in range(2)]
    for worker in workers:
        cluster.wait_ready(worker)
    # Each worker process heartbeats from when its model is loaded: both count as live.
    beating = {w.worker_id: MODEL for w in workers}
    wait_for(lambda: cluster.heartbeats() == beating, timeout=10, what="both heartbeats")
    assert cluster.live_workers() == {MODEL: 2}
    job = cluster.submit(varied_prompts(16), SHORT)
    cluster.wait_jobs([job], timeout=90)
    assert_each_succeeded_once(cluster, job, 16)
    per_worker = Counter(cluster.result_worker(r.id) for r in cluster.requests(job))
    assert set(per_worker) == {w.worker_id for w in workers}, per_worker
    assert cluster.live_workers() == {MODEL: 2}  # still beating after the job
    assert not any("heartbeat of" in w.text() for w in workers)  # no beat missed


def test_sigterm_finishes_the_batch_in_hand_and_releases_the_rest(cluster: Cluster) -> None:
    cluster.configure(max_batch_size=2, claim_window=8, message_size=8)
    leaving = cluster.start_worker(faults={"GENQ_TEST_BATCH_DELAY": "1.0"})
    job = cluster.submit(varied_prompts(8), SHORT)
    first_batch_of(cluster, leaving)
    assert cluster.heartbeats() == {leaving.worker_id: MODEL}
    leaving.proc.send_signal(signal.SIGTERM)
    assert leaving.proc.wait(timeout=30) == 0
    assert cluster.heartbeats() == {}  # a clean exit drops its heartbeat: no longer live
    rows = cluster.requests(job)
    done = [r for r in rows if r.status is R.SUCCEEDED]
    # It wrote the batch it was in (at least two), held nothing when it left, and what it had
    # not started went back with its attempt returned.
    assert 2 <= len(done) < 8 and all(r.results == 1 for r in done)
    assert {(r.status, r.attempts, r.lease_owner) for r in rows if r not in done} == {
        (R.QUEUED, 0, None)
    }
    cluster.start_worker()
    cluster.wait_jobs([job], timeout=60)
    assert_each_succeeded_once(cluster, job, 8)


def test_a_cancelled_job_ends_cancelled_keeping_what_finished(cluster: Cluster) -> None:
    cluster.configure(max_batch_size=2, claim_window=6, message_size=6)
    worker = cluster.start_worker(faults={"GENQ_TEST_BATCH_DELAY": "1.0"})
    job = cluster.submit(varied_prompts(12), SHORT)
    first_batch_of(cluster, worker)
    with cluster.sessions.begin() as session:
        cancel_job(session, tenant=TENANT, job_id=job)
    (info,) = cluster.wait_jobs([job], timeout=60)
    rows = cluster.requests(job)
    done = [r for r in rows if r.status is R.SUCCEEDED]
    # The queued half was cancelled at once, the window's unstarted claims at the worker's
    # next lease renewal; what ran was kept, with its result.
    assert info.status is JobStatus.CANCELLED
    assert 2 <= len(done) < 6 and all(r.results == 1 for r in done)
    assert {(r.status, r.results) for r in rows if r not in done} == {(R.CANCELLED, 0)}
    assert (info.succeeded, info.cancelled) == (len(done), 12 - len(done))


def test_small_jobs_of_two_tenants_finish_before_a_large_one_on_two_workers(
    cluster: Cluster,
) -> None:
    cluster.configure(max_batch_size=8, claim_window=64, message_size=64)
    workers = [cluster.start_worker(wait=False) for _ in range(2)]
    for worker in workers:
        cluster.wait_ready(worker)
    big = cluster.submit(varied_prompts(3000), SHORT, tenant="big")
    for worker in workers:
        first_batch_of(cluster, worker)
    # Its messages fill the queue ahead of theirs: the workers claim by the fair rule anyway.
    small = [
        cluster.submit(varied_prompts(5), SHORT, tenant="other"),
        cluster.submit(varied_prompts(5), LONGER, tenant="other"),
        cluster.submit(varied_prompts(5), SHORT, tenant="big"),
    ]
    infos = cluster.wait_jobs(small, timeout=60)
    assert [i.status for i in infos] == [JobStatus.COMPLETED] * 3
    left = cluster.job(big)
    assert left.status is JobStatus.RUNNING and left.succeeded < 2000, left
    with cluster.sessions.begin() as session:
        cancel_job(session, tenant="big", job_id=big)
    (ended,) = cluster.wait_jobs([big], timeout=60)
    assert ended.status is JobStatus.CANCELLED
    assert ended.succeeded + ended.cancelled == 3000
