"""Queue benchmark: what the distributed path costs over the engine alone, and how many requests
a second the claim -> write loop moves.

    python bench/dispatch.py [--model smollm2-135m] [--count 128] [--max-new-tokens 64]
                             [--rounds 2] [--dispatch-count 4000]

1. The same prompts, greedy, through the engine in this process and through submit -> Redis
   -> one `genq worker` -> PostgreSQL -> results, in alternating rounds: completion tokens/s
   of each (model load and warm-up excluded), the ratio, and whether every text is identical.
2. Dispatch capacity with a trivial generator (no model): requests/s from submit to the last
   result with 1 and 2 workers, and through the embedded worker on SQLite for reference.

Starts its own redis-server and PostgreSQL (as the integration tests do) on 127.0.0.1.
Prints numbers; it does not pass or fail.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

# The repository root, where the tests' service helpers (redis-server, PostgreSQL) live.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from genq.params import GenerationParams  # noqa: E402
from genq.settings import Settings, get_settings  # noqa: E402
from genq.store import upgrade  # noqa: E402
from worker.service import Generator  # noqa: E402
from worker.types import BatchReport, Choice, GenRequest, GenResult  # noqa: E402

PROMPTS = Path(__file__).with_name("prompts.jsonl")
TRIVIAL = "trivial"  # the model name the dispatch workers serve


class TrivialGenerator:
    """Answers every request at once with one token: only the dispatch path is left to time."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size

    def run(self, requests: Iterable[GenRequest]) -> Iterator[BatchReport]:
        pending = list(requests)
        for start in range(0, len(pending), self.batch_size):
            chunk = pending[start : start + self.batch_size]
            results = tuple(
                GenResult(r.key, (Choice("x", "length", 1),), prompt_tokens=1) for r in chunk
            )
            keys = tuple(r.key for r in chunk)
            yield BatchReport(chunk[0].params.group_key(), keys, len(chunk), 1, 1.0, 0.0, results)


def serve_trivial() -> None:
    """Entry of the dispatch workers: the real worker, the trivial generator."""
    from worker.tasks import run_worker

    settings = get_settings()
    run_worker(
        settings,
        model=TRIVIAL,
        make_engine=lambda: TrivialGenerator(settings.max_batch_size),
    )


def load_prompts(count: int) -> list[str]:
    lines = [json.loads(line)["prompt"] for line in PROMPTS.read_text().splitlines() if line]
    return [lines[i % len(lines)] for i in range(count)]


def alone(
    engine: Generator, prompts: list[str], params: GenerationParams
) -> tuple[int, float, list[str]]:
    """(completion tokens, seconds, texts) of ``prompts`` through ``engine`` in this process."""
    requests = [GenRequest(str(i), params, p) for i, p in enumerate(prompts)]
    started = time.perf_counter()
    results = {r.key: r for report in engine.run(requests) for r in report.results}
    elapsed = time.perf_counter() - started
    tokens = sum(r.completion_tokens for r in results.values())
    return tokens, elapsed, [results[str(i)].choices[0].text for i in range(len(prompts))]


def through_queue(
    cluster, prompts: list[str], params: GenerationParams
) -> tuple[int, float, list[str]]:  # type: ignore[no-untyped-def]
    """The same, from submit to the job's end, through Redis, one worker and PostgreSQL."""
    started = time.perf_counter()
    job = cluster.submit(prompts, params)
    (info,) = cluster.wait_jobs([job], timeout=3600, every=0.02)
    elapsed = time.perf_counter() - started
    texts = [row.choices[0].text for row in cluster.results(job)]
    return info.completion_tokens, elapsed, texts


def dispatch(cluster, count: int) -> float:  # type: ignore[no-untyped-def]
    prompts = [f"request {i}" for i in range(count)]
    params = GenerationParams(max_new_tokens=1)
    cluster.wait_jobs([cluster.submit(prompts[:8], params)], timeout=120)
    started = time.perf_counter()
    job = cluster.submit(prompts, params)
    cluster.wait_jobs([job], timeout=1800, every=0.02)
    return count / (time.perf_counter() - started)


def embedded_dispatch(count: int, workdir: Path) -> float:
    from genq.store import NewRequest, create_job, session_factory
    from genq.store.db import make_engine
    from worker.embedded import drain
    from worker.service import Runtime

    url = f"sqlite:///{workdir / 'dispatch.db'}"
    upgrade(url)
    settings = Settings(database_url=url)
    sessions = session_factory(make_engine(url))
    with sessions.begin() as session:
        job = create_job(
            session,
            tenant="bench",
            model=TRIVIAL,
            params=GenerationParams(max_new_tokens=1),
            requests=[NewRequest(prompt=f"request {i}") for i in range(count)],
        )
    rt = Runtime(
        settings=settings,
        sessions=sessions,
        model=TRIVIAL,
        worker_id="bench",
        make_engine=lambda: TrivialGenerator(settings.max_batch_size),
        window=settings.claim_window,
    )
    started = time.perf_counter()
    drain(rt, job_id=job)
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--count", type=int, default=128)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--dispatch-count", type=int, default=4000)
    parser.add_argument("--serve-trivial", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_trivial:
        serve_trivial()
        return

    from tests.conftest import running_pg_server
    from tests.integration.cluster import Cluster, RedisServer
    from worker.service import model_engine

    prompts = load_prompts(args.count)
    params = GenerationParams(max_new_tokens=args.max_new_tokens)
    engine = model_engine(get_settings(), args.model)()
    alone(engine, prompts[:4], params)  # warm up
    totals = {"alone": [0, 0.0], "queue": [0, 0.0]}
    same = 0

    with tempfile.TemporaryDirectory(prefix="genq-bench-") as tmp, running_pg_server() as pg:
        workdir = Path(tmp)
        redis = RedisServer(workdir)
        redis.start()
        clusters: list[Cluster] = []
        try:

            def cluster(name: str, model: str) -> Cluster:
                with pg.admin() as conn:
                    conn.execute(f'CREATE DATABASE "{name}"')
                url = pg.url(name)
                upgrade(url)
                logs = workdir / name
                logs.mkdir()
                built = Cluster(
                    database_url=url,
                    redis=redis,
                    model_cache=get_settings().model_cache,
                    logs=logs,
                    model=model,
                )
                built.env.pop("OMP_NUM_THREADS")  # one worker: let torch use every core
                built.configure(
                    lease_seconds=600,
                    reannounce_seconds=300,
                    reconcile_seconds=30,
                    buffer_seconds=0.2,
                    device="auto",
                )
                clusters.append(built)
                return built

            full = cluster("bench_full", args.model)
            full.start_worker()
            through_queue(full, prompts[:4], params)  # warm up
            # Rounds alternate, so that load from elsewhere on the machine hits both alike.
            for _ in range(args.rounds):
                tokens, seconds, alone_texts = alone(engine, prompts, params)
                totals["alone"][0] += tokens
                totals["alone"][1] += seconds
                tokens, seconds, queue_texts = through_queue(full, prompts, params)
                totals["queue"][0] += tokens
                totals["queue"][1] += seconds
                same += sum(a == b for a, b in zip(alone_texts, queue_texts, strict=True))
            full.close()

            trivial = cluster("bench_dispatch", TRIVIAL)
            command = [sys.executable, str(Path(__file__).resolve()), "--serve-trivial"]
            trivial.start_worker(command=command)
            one = dispatch(trivial, args.dispatch_count)
            trivial.start_worker(command=command)
            two = dispatch(trivial, args.dispatch_count)
            embedded = embedded_dispatch(args.dispatch_count, workdir)
        finally:
            for built in clusters:
                built.close()
            redis.stop()

    alone_tps = totals["alone"][0] / totals["alone"][1]
    queue_tps = totals["queue"][0] / totals["queue"][1]
    print(
        f"model {args.model}, {args.count} prompts x {args.rounds} rounds, max_new_tokens "
        f"{args.max_new_tokens}, {os.cpu_count()} CPUs"
    )
    print(f"engine in process          {alone_tps:8.1f} completion tokens/s")
    print(f"submit->Redis->worker->DB  {queue_tps:8.1f} completion tokens/s")
    print(f"ratio full / engine        {queue_tps / alone_tps:8.2f}x   (target >= 0.9x)")
    print(f"identical texts            {same}/{len(prompts) * args.rounds}")
    print(f"dispatch, trivial generator, {args.dispatch_count} requests:")
    print(f"  1 worker  (Redis + PostgreSQL) {one:8.0f} requests/s")
    print(f"  2 workers (Redis + PostgreSQL) {two:8.0f} requests/s")
    print(f"  embedded  (SQLite, no Redis)   {embedded:8.0f} requests/s")


if __name__ == "__main__":
    main()
