"""Queue benchmark: what the distributed path costs over the engine alone, and how many requests
a second the claim -> write loop moves.

    python bench/dispatch.py [--model smollm2-135m] [--count 128] [--max-new-tokens 64]
                             [--rounds 2] [--dispatch-count 4000]

1. The same prompts, greedy, through the engine in this process and through submit -> Redis
   -> one `genq worker` -> PostgreSQL -> results, in alternating rounds: completion tokens/s
   of each (model load and warm-up excluded), the ratio, and whether every text is identical.
2. Dispatch capacity with a trivial generator (no model): requests/s from submit to the last
   result with 1 and 2 workers, and through the embedded worker on SQLite for reference.
3. An accelerator stand-in (``--accelerator-ms``): a generator that takes that long per batch of
   ``--accelerator-rows`` one-token requests, sleeping (the GIL free, as while a GPU computes)
   and continuously refilled as the real engine is. One worker: requests/s, and the fraction of
   the wall time the stand-in was not generating (the accelerator's idle fraction).

With ``--baseline REV``, the workers of git revision REV run beside this tree's in parts 2 and
3 (its worker code, this file's generators), rounds in alternating order.

Starts its own redis-server and PostgreSQL (as the integration tests do) on 127.0.0.1.
Prints numbers; it does not pass or fail.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

# The repository root, where the tests' service helpers (redis-server, PostgreSQL) live; a
# dispatch worker of another revision (--code=DIR) imports that tree's genq and worker instead.
_CODE = next((arg.split("=", 1)[1] for arg in sys.argv if arg.startswith("--code=")), None)
sys.path.insert(0, _CODE or str(Path(__file__).resolve().parents[1]))

from genq.params import GenerationParams  # noqa: E402
from genq.settings import Settings, get_settings  # noqa: E402
from genq.store import upgrade  # noqa: E402
from worker.service import Generator  # noqa: E402
from worker.types import BatchReport, Choice, GenRequest, GenResult  # noqa: E402

PROMPTS = Path(__file__).with_name("prompts.jsonl")
REPO = Path(__file__).resolve().parents[1]
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


class AcceleratorRun:
    """One run of :class:`AcceleratorGenerator`: the engine's interface (``withdraw``,
    ``before_admit``, ``extend``, ``refill``) over a queue of requests."""

    def __init__(self, requests: Iterable[GenRequest], rows: int, seconds: float) -> None:
        self.pending = deque(requests)
        self.rows, self.seconds = rows, seconds
        self.before_admit: Callable[[], None] | None = None
        self.refill: Callable[[], None] | None = None

    def __iter__(self) -> AcceleratorRun:
        return self

    def __next__(self) -> BatchReport:
        if self.refill is not None and len(self.pending) < self.rows:
            self.refill()
        if self.before_admit is not None:
            self.before_admit()
        if not self.pending:
            raise StopIteration
        chunk = [self.pending.popleft() for _ in range(min(self.rows, len(self.pending)))]
        time.sleep(self.seconds)
        results = tuple(
            GenResult(r.key, (Choice("x", "length", 1),), prompt_tokens=1) for r in chunk
        )
        keys = tuple(r.key for r in chunk)
        return BatchReport(
            chunk[0].params.group_key(), keys, len(chunk), 1, 1.0, self.seconds, results
        )

    def extend(self, requests: Iterable[GenRequest]) -> None:
        self.pending.extend(requests)

    def withdraw(self, keys: Iterable[str]) -> set[str]:
        wanted = set(keys)
        taken = {r.key for r in self.pending if r.key in wanted}
        self.pending = deque(r for r in self.pending if r.key not in wanted)
        return taken

    def close(self) -> None:
        self.pending.clear()


class AcceleratorGenerator:
    """``seconds`` per batch of up to ``rows`` requests, one token each."""

    def __init__(self, rows: int, seconds: float) -> None:
        self.rows, self.seconds = rows, seconds

    def run(self, requests: Iterable[GenRequest]) -> AcceleratorRun:
        return AcceleratorRun(requests, self.rows, self.seconds)


def serve(kind: str) -> None:
    """Entry of the dispatch workers: the real worker, a stand-in generator."""
    from worker.tasks import run_worker

    settings = get_settings()
    if kind == "trivial":
        generator: Generator = TrivialGenerator(settings.max_batch_size)
    else:
        generator = AcceleratorGenerator(settings.max_batch_size, float(kind) / 1000)
    run_worker(settings, model=TRIVIAL, make_engine=lambda: generator)


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


def dispatch(cluster, count: int, cpu: PgCpu) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(requests/s from submit to the last result, PostgreSQL CPU ms per 1,000 requests)."""
    prompts = [f"request {i}" for i in range(count)]
    params = GenerationParams(max_new_tokens=1)
    cluster.wait_jobs([cluster.submit(prompts[:8], params)], timeout=120)
    started, used = time.perf_counter(), cpu.seconds()
    job = cluster.submit(prompts, params)
    cluster.wait_jobs([job], timeout=1800, every=0.02)
    elapsed, used = time.perf_counter() - started, cpu.seconds() - used
    return count / elapsed, used * 1e6 / count


def accelerated(cluster, count: int) -> tuple[float, float, float]:  # type: ignore[no-untyped-def]
    """One job of ``count``: (requests/s from submit to the last result, requests/s from the
    first batch's start to the last one's end, the stand-in's idle fraction over that span)."""
    prompts = [f"request {i}" for i in range(count)]
    params = GenerationParams(max_new_tokens=1)
    cluster.wait_jobs([cluster.submit(prompts[:8], params)], timeout=120)
    before = len(cluster.batches())
    started = time.perf_counter()
    job = cluster.submit(prompts, params)
    cluster.wait_jobs([job], timeout=1800, every=0.01)
    elapsed = time.perf_counter() - started
    batches = cluster.batches()[before:]
    first = min(b.created_at.timestamp() - b.seconds for b in batches)
    span = max(b.created_at.timestamp() for b in batches) - first
    busy = sum(b.seconds for b in batches)
    return count / elapsed, count / span, 1 - busy / span


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
    parser.add_argument(
        "--accelerator-ms", type=float, default=30.0, help="part 3: ms per batch (0: skip it)"
    )
    parser.add_argument("--accelerator-rows", type=int, default=64, help="part 3: batch rows")
    parser.add_argument("--accelerator-count", type=int, default=8000)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--code", help=argparse.SUPPRESS)  # read before the imports
    parser.add_argument(
        "--skip-engine", action="store_true", help="only the dispatch part (no model)"
    )
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="also run the dispatch workers of git revision REV, side by side",
    )
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return

    from bench import worktree
    from tests.conftest import running_pg_server
    from tests.integration.cluster import Cluster, RedisServer
    from worker.service import model_engine

    prompts = load_prompts(args.count)
    params = GenerationParams(max_new_tokens=args.max_new_tokens)
    engine = None if args.skip_engine else model_engine(get_settings(), args.model)()
    if engine is not None:
        alone(engine, prompts[:4], params)  # warm up
    totals = {"alone": [0, 0.0], "queue": [0, 0.0]}
    same = 0
    rates: dict[str, list[tuple[float, float]]] = {}
    stand_in: dict[str, list[tuple[float, float, float]]] = {}

    with tempfile.TemporaryDirectory(prefix="genq-bench-") as tmp, running_pg_server() as pg:
        workdir = Path(tmp)
        redis = RedisServer(workdir)
        redis.start()
        clusters: list[Cluster] = []
        codes = {"this tree": REPO}
        if args.baseline:
            tree = worktree.add(args.baseline, workdir / "baseline")
            codes[f"baseline {args.baseline}"] = tree

        def command(name: str, kind: str) -> list[str]:
            # The code's own directory comes first on its sys.path: its genq, not this tree's.
            here = str(Path(__file__).resolve())
            return [sys.executable, here, f"--serve={kind}", f"--code={codes[name]}"]

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

            if engine is not None:
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

            # Each code's workers in turn, rounds in alternating order.
            for n in range(args.rounds):
                names = list(codes) if n % 2 == 0 else list(codes)[::-1]
                for name in names:
                    trivial = cluster(f"bench_dispatch_{n}_{len(clusters)}", TRIVIAL)
                    cpu = PgCpu(pg)
                    trivial.start_worker(command=command(name, "trivial"))
                    one = dispatch(trivial, args.dispatch_count, cpu)
                    trivial.start_worker(command=command(name, "trivial"))
                    two = dispatch(trivial, args.dispatch_count, cpu)
                    rates.setdefault(name, []).extend([one, two])
                    trivial.close()
            for n in range(args.rounds if args.accelerator_ms else 0):
                names = list(codes) if n % 2 == 0 else list(codes)[::-1]
                for name in names:
                    accel = cluster(f"bench_accelerator_{n}_{len(clusters)}", TRIVIAL)
                    accel.configure(max_batch_size=args.accelerator_rows)
                    accel.start_worker(command=command(name, str(args.accelerator_ms)))
                    stand_in.setdefault(name, []).append(accelerated(accel, args.accelerator_count))
                    accel.close()
            embedded = embedded_dispatch(args.dispatch_count, workdir)
        finally:
            for built in clusters:
                built.close()
            redis.stop()
            if args.baseline:
                worktree.remove(workdir / "baseline")

    print(f"{os.cpu_count()} CPUs")
    if engine is not None:
        alone_tps = totals["alone"][0] / totals["alone"][1]
        queue_tps = totals["queue"][0] / totals["queue"][1]
        print(
            f"model {args.model}, {args.count} prompts x {args.rounds} rounds, max_new_tokens "
            f"{args.max_new_tokens}"
        )
        print(f"engine in process          {alone_tps:8.1f} completion tokens/s")
        print(f"submit->Redis->worker->DB  {queue_tps:8.1f} completion tokens/s")
        print(f"ratio full / engine        {queue_tps / alone_tps:8.2f}x   (target >= 0.9x)")
        print(f"identical texts            {same}/{len(prompts) * args.rounds}")
    print(
        f"dispatch, trivial generator, {args.dispatch_count} requests, Redis + PostgreSQL "
        f"(requests/s, PostgreSQL CPU ms per 1,000 requests; each round):"
    )
    print(f"| workers' code | {'1 worker':>22} | {'2 workers':>22} |")
    print("|---|---|---|")
    for name, found in rates.items():
        for one, two in zip(found[::2], found[1::2], strict=True):
            print(
                f"| {name} | {one[0]:8.0f} req/s {one[1]:6.0f} ms | {two[0]:8.0f} req/s "
                f"{two[1]:6.0f} ms |"
            )
    if len(rates) == 2:
        mine, base = (sum(r[0] for r in v) / len(v) for v in rates.values())
        print(f"this tree / baseline: {mine / base:.2f}x requests/s (mean over rounds)")
    print(f"embedded (SQLite, no Redis, this tree): {embedded:8.0f} requests/s")
    if stand_in:
        ideal = args.accelerator_rows / args.accelerator_ms * 1000
        print(
            f"accelerator stand-in, {args.accelerator_ms:g} ms per batch of "
            f"{args.accelerator_rows} (at most {ideal:.0f} requests/s), "
            f"{args.accelerator_count} requests, 1 worker, Redis + PostgreSQL:"
        )
        print(
            "| workers' code | requests/s, submit to last result | requests/s, first batch to "
            "last | accelerator idle over that span |"
        )
        print("|---|---|---|---|")
        for name, found in stand_in.items():
            for whole, worker, idle in found:
                print(f"| {name} | {whole:8.0f} | {worker:8.0f} | {idle:6.1%} |")


class PgCpu:
    """CPU time of a PostgreSQL server, its backends included: the postmaster's own and its
    reaped children's (from /proc), plus every live child's."""

    def __init__(self, pg) -> None:  # type: ignore[no-untyped-def]
        with pg.admin() as conn:
            backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        self.postmaster = int(_stat(backend)[1])

    def seconds(self) -> float:
        return tree_cpu(self.postmaster)


def tree_cpu(pid: int) -> float:
    """CPU seconds of process ``pid``, its reaped children's and its live children's."""
    tick = os.sysconf("SC_CLK_TCK")
    fields = _stat(pid)
    total = sum(int(f) for f in fields[11:15])
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        for child in children.read_text().split():
            # One that exited meanwhile is counted in the parent's cutime once reaped.
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                total += sum(int(f) for f in _stat(int(child))[11:13])
    return total / tick


def _stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name: [0] state, [1] ppid, [11] utime,
    [12] stime, [13] cutime, [14] cstime (clock ticks)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()


if __name__ == "__main__":
    main()
