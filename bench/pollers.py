"""API benchmark on PostgreSQL: `genq api --workers N` answering many keep-alive pollers, with
no worker running. Numbers, not pass/fail:

    .venv/bin/python bench/pollers.py [--workers 1,2] [--pollers 200] [--seconds 20]
                                      [--jobs 20] [--requests 200] [--rounds 1] [--baseline REV]

It starts its own PostgreSQL and redis-server on 127.0.0.1 (as the integration tests do),
submits ``--jobs`` jobs of ``--requests`` requests through the API and finishes the first half
of each job's requests in the store (so that results pages have rows and jobs stay running).
Then, for each API process count, a fresh `genq api` serves two workloads in turn, each for
``--seconds`` seconds after every poller's connection is open:

- ``job``: every poller polls GET /v1/jobs/{id} back to back, the pollers spread over the jobs;
- ``job+results``: every poller alternates GET /v1/jobs/{id} and its first results page
  (GET /v1/jobs/{id}/results?limit=``--page``).

It prints polls/s, the median, p99 and max latency, and the CPU the API processes and
PostgreSQL spent per poll. The pollers run in this process, on plain HTTP/1.1 over asyncio
streams, and share the CPUs with the service they measure. With ``--baseline REV`` the API of
git revision REV runs beside this tree's, in alternating order, on the same database.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import uvloop

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import worktree  # noqa: E402
from bench.dispatch import PgCpu, tree_cpu  # noqa: E402
from bench.service import _free_port  # noqa: E402
from genq.auth import create_key  # noqa: E402
from genq.store import make_engine, session_factory, upgrade  # noqa: E402
from genq.store.claims import claim, complete_many  # noqa: E402
from genq.store.records import Choice, Outcome  # noqa: E402

MODEL = "tiny-gpt2"
START_TIMEOUT_S = 60.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2", help="API process counts, comma-separated")
    parser.add_argument("--pollers", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--requests", type=int, default=200, help="requests per job")
    parser.add_argument("--page", type=int, default=100, help="results page size")
    parser.add_argument("--workloads", default="job,job+results", help="comma-separated")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--baseline", metavar="REV", help="also run the API of revision REV")
    args = parser.parse_args()

    from tests.conftest import running_pg_server
    from tests.integration.cluster import RedisServer

    counts = [int(n) for n in args.workers.split(",")]
    rows: list[tuple[str, int, str, dict[str, float]]] = []
    with tempfile.TemporaryDirectory(prefix="genq-pollers-") as tmp, running_pg_server() as pg:
        workdir = Path(tmp)
        redis = RedisServer(workdir)
        redis.start()
        codes = {"this tree": REPO}
        if args.baseline:
            tree = worktree.add(args.baseline, workdir / "baseline")
            codes[f"baseline {args.baseline}"] = tree
        try:
            with pg.admin() as conn:
                conn.execute('CREATE DATABASE "bench_pollers"')
            url = pg.url("bench_pollers")
            upgrade(url)
            env = {
                **os.environ,
                "GENQ_DATABASE_URL": url,
                "GENQ_REDIS_URL": redis.url,
                "GENQ_LOG_LEVEL": "WARNING",
            }
            key = _key(url)
            job_ids = _prepare(REPO, env, key, args)
            cpu = PgCpu(pg)
            for n in range(args.rounds):
                names = list(codes) if n % 2 == 0 else list(codes)[::-1]
                for name in names:
                    for workers in counts:
                        for workload in args.workloads.split(","):
                            found = _measure(
                                codes[name], env, key, job_ids, workers, workload, cpu, args
                            )
                            rows.append((name, workers, workload, found))
        finally:
            redis.stop()
            if args.baseline:
                worktree.remove(workdir / "baseline")

    print(
        f"{os.cpu_count()} CPUs; {args.pollers} keep-alive pollers back to back for "
        f"{args.seconds:g} s, {args.jobs} jobs of {args.requests} requests (half finished), "
        f"PostgreSQL, no worker running"
    )
    print(
        "| API code | processes | workload | polls/s | median ms | p99 ms | max ms | "
        "API CPU ms/poll | PG CPU ms/poll | pollers' CPU ms/poll |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, workers, workload, f in rows:
        print(
            f"| {name} | {workers} | {workload} | {f['rate']:.0f} | {f['p50']:.1f} | "
            f"{f['p99']:.1f} | {f['max']:.1f} | {f['api_cpu']:.2f} | {f['pg_cpu']:.2f} | "
            f"{f['client_cpu']:.2f} |"
        )


def _key(url: str) -> str:
    sessions = session_factory(make_engine(url))
    with sessions.begin() as session:
        return create_key(session, tenant="bench", name="bench pollers")


def _prepare(code: Path, env: dict[str, str], key: str, args: argparse.Namespace) -> list[str]:
    """The jobs, submitted through an API of this tree, each half finished in the store."""
    headers = {"Authorization": f"Bearer {key}"}
    job_ids = []
    with (
        serve_api(code, env, workers=1) as (base, _child),
        httpx.Client(base_url=base, headers=headers, timeout=120) as client,
    ):
        for j in range(args.jobs):
            body = {
                "model": MODEL,
                "requests": [
                    {"custom_id": f"j{j}-r{i}", "prompt": f"Prompt {i} of job {j}: the river"}
                    for i in range(args.requests)
                ],
                "params": {"max_new_tokens": 16},
            }
            answer = client.post("/v1/jobs", json=body)
            answer.raise_for_status()
            job_ids.append(answer.json()["id"])
    sessions = session_factory(make_engine(env["GENQ_DATABASE_URL"]))
    half = args.requests // 2
    for job_id in job_ids:
        with sessions.begin() as session:
            claims = claim(
                session,
                worker_id="bench",
                model=MODEL,
                lease_seconds=3600,
                job_id=job_id,
                limit=half,
                order="oldest",
            )
        text = "a reply of a few words, as a short completion would be"
        outcome = Outcome(choices=(Choice(text, "length", 16),), prompt_tokens=12)
        with sessions.begin() as session:
            complete_many(session, items=[(c.request_id, c.fence, outcome) for c in claims])
    return job_ids


@contextlib.contextmanager
def serve_api(code: Path, env: dict[str, str], *, workers: int):  # type: ignore[no-untyped-def]
    """`genq api --workers N` of the tree at ``code``, answering; yields its base URL."""
    port = _free_port()
    command = [
        sys.executable,
        "-m",
        "genq",
        "api",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    child = subprocess.Popen(
        command,
        cwd=code,
        env={**env, "PYTHONPATH": str(code)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base}/healthz").status_code == 200:
                    break
            if time.monotonic() > deadline or child.poll() is not None:
                raise SystemExit(f"genq api ({code}) did not come up")
            time.sleep(0.2)
        yield base, child
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGTERM)
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()


def _measure(
    code: Path,
    env: dict[str, str],
    key: str,
    job_ids: list[str],
    workers: int,
    workload: str,
    cpu: PgCpu,
    args: argparse.Namespace,
) -> dict[str, float]:
    cycles = []
    for n in range(args.pollers):
        job_id = job_ids[n % len(job_ids)]
        cycle = [f"/v1/jobs/{job_id}"]
        if workload == "job+results":
            cycle.append(f"/v1/jobs/{job_id}/results?limit={args.page}")
        cycles.append(cycle)
    with serve_api(code, env, workers=workers) as (base, child):
        found, before = uvloop.run(_pollers(base, key, cycles, args, child.pid, cpu))
        api_cpu, pg_cpu = tree_cpu(child.pid) - before[0], cpu.seconds() - before[1]
    polls = found["rate"] * args.seconds
    found["api_cpu"] = api_cpu * 1000 / polls
    found["pg_cpu"] = pg_cpu * 1000 / polls
    print(f"{code.name} {workers} {workload}: {found}", flush=True)
    return found


async def _pollers(
    base: str,
    key: str,
    cycles: list[list[str]],
    args: argparse.Namespace,
    api_pid: int,
    cpu: PgCpu,
) -> tuple[dict[str, float], tuple[float, float]]:
    """Each poller polls its cycle back to back on its own keep-alive connection, after one
    warm-up poll each: plain HTTP/1.1 on asyncio streams (uvloop), whose own CPU is the
    client's. Latencies from the bytes sent to the whole response read; the CPU the API and
    PostgreSQL spent before the first timed poll."""
    url = httpx.URL(base)
    opened = [await _connect(url, key, cycle) for cycle in cycles]
    for poller in opened:
        await _poll(*poller, 0)
    latencies: list[float] = []
    before = tree_cpu(api_pid), cpu.seconds()
    mine = os.times()
    stop = time.perf_counter() + args.seconds

    async def run(poller: tuple[asyncio.StreamReader, asyncio.StreamWriter, list[bytes]]) -> None:
        n = 0
        while time.perf_counter() < stop:
            latencies.append(await _poll(*poller, n))
            n += 1

    await asyncio.gather(*(run(p) for p in opened))
    for _reader, writer, _requests in opened:
        writer.close()
    ordered = sorted(latencies)
    spent = os.times()
    client = spent.user + spent.system - mine.user - mine.system
    return {
        "client_cpu": client * 1000 / len(ordered),
        "rate": len(ordered) / args.seconds,
        "p50": ordered[len(ordered) // 2] * 1000,
        "p99": ordered[max(0, round(len(ordered) * 0.99) - 1)] * 1000,
        "max": ordered[-1] * 1000,
    }, before


async def _connect(
    url: httpx.URL, key: str, cycle: list[str]
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, list[bytes]]:
    reader, writer = await asyncio.open_connection(url.host, url.port)
    requests = [
        f"GET {path} HTTP/1.1\r\nHost: {url.host}\r\nAuthorization: Bearer {key}\r\n\r\n".encode()
        for path in cycle
    ]
    return reader, writer, requests


async def _poll(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, requests: list[bytes], n: int
) -> float:
    sent = time.perf_counter()
    writer.write(requests[n % len(requests)])
    head = await reader.readuntil(b"\r\n\r\n")
    fields = (line.partition(b":") for line in head.split(b"\r\n")[1:])
    length = next(int(v) for k, _, v in fields if k.lower() == b"content-length")
    body = await reader.readexactly(length)
    if not head.startswith(b"HTTP/1.1 200 "):
        raise RuntimeError(f"poll answered {head.splitlines()[0]!r}: {body[:200]!r}")
    return time.perf_counter() - sent


if __name__ == "__main__":
    main()
