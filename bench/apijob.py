"""End-to-end benchmark on PostgreSQL and Redis: one job of one-token tiny-gpt2 requests
submitted over HTTP to `genq api`, run by N `genq worker` processes. Numbers, not pass/fail:

    .venv/bin/python bench/apijob.py [--count 20000] [--workers 1,2] [--rounds 1] [--baseline REV]

For each worker count, on a fresh database: the workers start and load the model first, then
the job is posted (POST /v1/jobs, the accept time) and polled until it has finished. It prints
requests/s from the post to the last result, and from the start of the first batch to the
last result (the results' own times). It starts
its own PostgreSQL and redis-server on 127.0.0.1 (as the integration tests do). With
``--baseline REV`` the API and workers of git revision REV run beside this tree's, rounds in
alternating order.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from sqlalchemy import func, select

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import worktree  # noqa: E402
from bench.pollers import serve_api  # noqa: E402
from genq.auth import create_key  # noqa: E402
from genq.settings import get_settings  # noqa: E402
from genq.store import make_engine, session_factory, upgrade  # noqa: E402
from genq.store.tables import Result  # noqa: E402

MODEL = "tiny-gpt2"
READY_TIMEOUT_S = 120.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--workers", default="1,2", help="worker counts, comma-separated")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument(
        "--timeout", type=float, default=180.0, help="seconds a job may take (then: unfinished)"
    )
    parser.add_argument("--baseline", metavar="REV", help="also run revision REV's API and workers")
    args = parser.parse_args()

    from tests.conftest import running_pg_server
    from tests.integration.cluster import RedisServer

    rows: list[tuple[str, int, dict[str, float]]] = []
    with tempfile.TemporaryDirectory(prefix="genq-apijob-") as tmp, running_pg_server() as pg:
        workdir = Path(tmp)
        redis = RedisServer(workdir)
        redis.start()
        codes = {"this tree": REPO}
        if args.baseline:
            codes[f"baseline {args.baseline}"] = worktree.add(args.baseline, workdir / "baseline")
        try:
            for n in range(args.rounds):
                for name in list(codes) if n % 2 == 0 else list(codes)[::-1]:
                    for workers in (int(w) for w in args.workers.split(",")):
                        database = f"apijob_{len(rows)}"
                        with pg.admin() as conn:
                            conn.execute(f'CREATE DATABASE "{database}"')
                        url = pg.url(database)
                        upgrade(url)
                        env = {
                            **os.environ,
                            "GENQ_DATABASE_URL": url,
                            "GENQ_REDIS_URL": redis.url,
                            "GENQ_MODEL_CACHE": str(get_settings().model_cache),
                            "GENQ_DEVICE": "cpu",
                            "GENQ_MAX_JOB_REQUESTS": str(max(args.count, 50_000)),
                            "GENQ_MAX_BODY_REQUESTS": str(max(args.count, 50_000)),
                            # Several workers share the cores: one thread each.
                            "OMP_NUM_THREADS": "1" if workers > 1 else str(os.cpu_count()),
                        }
                        found = _run(
                            codes[name], env, url, workers, args.count, workdir, args.timeout
                        )
                        print(f"{name}, {workers} workers: {found}", flush=True)
                        rows.append((name, workers, found))
        finally:
            redis.stop()
            if args.baseline:
                worktree.remove(workdir / "baseline")

    print(
        f"{os.cpu_count()} CPUs; one job of {args.count} one-token {MODEL} requests, posted to "
        "`genq api`, Redis, PostgreSQL:"
    )
    print("| code | workers | accept s | requests/s, post to last result | first batch to last |")
    print("|---|---|---|---|---|")
    for name, workers, f in rows:
        rates = f"{f['rate']:.0f} | {f['worker_rate']:.0f}"
        if not f["rate"]:
            rates = f"unfinished after {args.timeout:g} s ({f['done']:.0f} done) | -"
        print(f"| {name} | {workers} | {f['accept']:.2f} | {rates} |")


def _run(
    code: Path,
    env: dict[str, str],
    url: str,
    workers: int,
    count: int,
    workdir: Path,
    timeout: float,
) -> dict[str, float]:
    """Accept seconds and rates; a job unfinished after ``timeout`` reads as rate 0, with the
    requests it had finished (``done``)."""
    sessions = session_factory(make_engine(url))
    with sessions.begin() as session:
        key = create_key(session, tenant="bench", name="bench apijob")
    body = {
        "model": MODEL,
        "requests": [
            {"custom_id": f"r{i}", "prompt": f"Prompt {i}: the river"} for i in range(count)
        ],
        "params": {"max_new_tokens": 1},
    }
    headers = {"Authorization": f"Bearer {key}"}
    with (
        _workers(code, env, workers, workdir),
        serve_api(code, env, workers=1) as (base, _child),
        httpx.Client(base_url=base, headers=headers, timeout=300) as client,
    ):
        posted = time.perf_counter()
        posted_at = time.time()
        answer = client.post("/v1/jobs", json=body)
        accepted = time.perf_counter()
        answer.raise_for_status()
        job_id = answer.json()["id"]
        deadline = posted + timeout
        while True:
            job = client.get(f"/v1/jobs/{job_id}").json()
            done = sum(job["counts"][k] for k in ("succeeded", "failed", "cancelled"))
            now = time.perf_counter()
            if job["status"] in ("completed", "cancelled"):
                break
            if now > deadline:
                return {"accept": accepted - posted, "rate": 0.0, "worker_rate": 0.0, "done": done}
            time.sleep(0.05)
    if job["counts"]["succeeded"] != count:
        raise SystemExit(f"not every request succeeded: {job['counts']}")
    # From the results' own times: polls are answered from the API's cache.
    with sessions.begin() as session:
        first, last = session.execute(
            select(func.min(Result.started_at), func.max(Result.finished_at))
        ).one()
    return {
        "done": done,
        "accept": accepted - posted,
        "rate": count / (last.timestamp() - posted_at),
        "worker_rate": count / (last - first).total_seconds(),
    }


@contextlib.contextmanager
def _workers(code: Path, env: dict[str, str], count: int, workdir: Path) -> Iterator[None]:
    """``count`` `genq worker` processes of the tree at ``code``, each ready (model loaded)."""
    procs = []
    try:
        for n in range(count):
            log = workdir / f"worker-{time.monotonic_ns()}-{n}.log"
            with log.open("wb") as sink:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "genq", "worker", "--model", MODEL],
                    cwd=code,
                    env={**env, "PYTHONPATH": str(code), "PYTHONUNBUFFERED": "1"},
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                )
            procs.append((proc, log))
        deadline = time.monotonic() + READY_TIMEOUT_S
        for proc, log in procs:
            while " ready." not in log.read_text(errors="replace"):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"a worker did not come up:\n{log.read_text()[-3000:]}")
                time.sleep(0.2)
        yield
    finally:
        for proc, _log in procs:
            proc.terminate()
        for proc, _log in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    main()
