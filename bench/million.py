"""Million-request jobs on PostgreSQL and Redis, through `genq api`. Numbers, not pass/fail:

    .venv/bin/python bench/million.py [--requests 1000000] [--form native|openai]
                                      [--dispatch-seconds 30] [--baseline REV]

On a fresh database, with its own PostgreSQL and redis-server on 127.0.0.1 (as the tests):

1. **accept**: a JSONL file of ``--requests`` lines is uploaded (POST /v1/files, streamed from
   disk) and made one job (POST /v1/jobs with ``input_file_id``, as `genq submit` does; or
   POST /v1/batches with ``--form openai``). It prints the seconds of each and the API
   process's peak resident memory over both.
2. **reads at that size**: /metrics scrapes and GET /v1/jobs/{id} polls (median and max ms).
3. **dispatch**: one `genq worker` (tiny-gpt2, one token) runs for ``--dispatch-seconds`` on
   the big job, then on a 20,000-request job in a fresh database: requests/s from the results'
   own times, side by side.
4. **results**: every request of the big job is then finished in the store (one statement) and
   GET /v1/jobs/{id}/results?format=jsonl is read to the end: seconds, lines, and the API
   process's peak memory while it streams.

With ``--baseline REV`` the API and worker of git revision REV run the same steps first.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select, text

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench import apijob, worktree  # noqa: E402
from bench.apijob import _workers  # noqa: E402
from bench.pollers import serve_api  # noqa: E402
from genq.auth import create_key  # noqa: E402
from genq.settings import get_settings  # noqa: E402
from genq.store import make_engine, reap, session_factory  # noqa: E402
from genq.store.tables import Result  # noqa: E402

MODEL = "tiny-gpt2"
SMALL_JOB = 20_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1_000_000)
    parser.add_argument("--form", choices=("native", "openai"), default="native")
    parser.add_argument("--dispatch-seconds", type=float, default=30.0, help="0 skips dispatch")
    parser.add_argument("--skip-results", action="store_true")
    parser.add_argument("--baseline", metavar="REV", help="also run revision REV's API and worker")
    args = parser.parse_args()

    from tests.conftest import running_pg_server
    from tests.integration.cluster import RedisServer

    found: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="genq-million-") as tmp, running_pg_server() as pg:
        workdir = Path(tmp)
        source = workdir / "input.jsonl"
        write_input(source, args.requests, form=args.form)
        print(f"input: {args.requests} lines, {source.stat().st_size / 2**20:.0f} MiB", flush=True)
        redis = RedisServer(workdir)
        redis.start()
        codes = {"this tree": REPO}
        if args.baseline:
            codes = {f"baseline {args.baseline}": worktree.add(args.baseline, workdir / "base")}
            codes["this tree"] = REPO
        try:
            for n, (name, code) in enumerate(codes.items()):
                found[name] = run(code, pg, redis, f"million_{n}", source, args, workdir)
                print(f"{name}: {found[name]}", flush=True)
        finally:
            redis.stop()
            if args.baseline:
                worktree.remove(workdir / "base")
    report(found, args)


def environment(
    pg: Any, redis: Any, database: str, requests: int, code: Path = REPO
) -> dict[str, str]:
    with pg.admin() as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    url = pg.url(database)
    # The schema of the tree that runs on it (a baseline's may be older).
    command = f"from genq.store import upgrade; upgrade({url!r})"
    env = {**os.environ, "PYTHONPATH": str(code)}
    subprocess.run([sys.executable, "-c", command], cwd=code, env=env, check=True)
    return {
        **os.environ,
        "GENQ_DATABASE_URL": url,
        "GENQ_REDIS_URL": redis.url,
        "GENQ_MODEL_CACHE": str(get_settings().model_cache),
        "GENQ_DEVICE": "cpu",
        "GENQ_MAX_JOB_REQUESTS": str(requests),
        "GENQ_MAX_BODY_BYTES": str(2**31),
        "OMP_NUM_THREADS": str(os.cpu_count()),
    }


def write_input(path: Path, count: int, *, form: str) -> None:
    with path.open("w") as out:
        for i in range(count):
            prompt = f"Item {i}: the river ran past the mill and"
            if form == "native":
                line: dict[str, Any] = {"custom_id": f"r{i}", "prompt": prompt}
            else:
                body = {"model": MODEL, "prompt": prompt, "max_tokens": 1}
                line = {"custom_id": f"r{i}", "method": "POST", "url": "/v1/completions"}
                line["body"] = body
            out.write(json.dumps(line) + "\n")


def run(
    code: Path,
    pg: Any,
    redis: Any,
    database: str,
    source: Path,
    args: argparse.Namespace,
    workdir: Path,
) -> dict[str, float]:
    env = environment(pg, redis, database, args.requests, code)
    url = env["GENQ_DATABASE_URL"]
    sessions = session_factory(make_engine(url))
    with sessions.begin() as session:
        key = create_key(session, tenant="bench", name="bench million")
    headers = {"Authorization": f"Bearer {key}"}
    found: dict[str, float] = {}
    with (
        serve_api(code, env, workers=1) as (base, child),
        httpx.Client(base_url=base, headers=headers, timeout=600) as client,
    ):
        found["idle_mib"] = peak_mib(child.pid)
        reset_peak(child.pid)
        started = time.perf_counter()
        with source.open("rb") as handle:
            answer = client.post(
                "/v1/files",
                data={"purpose": "batch"},
                files={"file": (source.name, handle, "application/jsonl")},
            )
        answer.raise_for_status()
        uploaded = time.perf_counter()
        found["upload_peak_mib"] = peak_mib(child.pid)
        reset_peak(child.pid)
        file_id = answer.json()["id"]
        if args.form == "native":
            body = {"input_file_id": file_id, "model": MODEL, "params": {"max_new_tokens": 1}}
            answer = client.post("/v1/jobs", json=body)
            answer.raise_for_status()
            job_id = answer.json()["id"]
        else:
            body = {
                "input_file_id": file_id,
                "endpoint": "/v1/completions",
                "completion_window": "24h",
            }
            answer = client.post("/v1/batches", json=body)
            answer.raise_for_status()
            with sessions.begin() as session:
                job_id = session.scalar(
                    text("SELECT job_id FROM openai_batches WHERE id = :id"),
                    {"id": answer.json()["id"]},
                )
        accepted = time.perf_counter()
        found["upload_s"] = uploaded - started
        found["create_s"] = accepted - uploaded
        found["accept_s"] = accepted - started
        found["create_peak_mib"] = peak_mib(child.pid)
        found["scrape_ms"], found["scrape_max_ms"] = timed(lambda: client.get("/metrics"), 10)
        found["poll_ms"], found["poll_max_ms"] = timed(
            lambda: client.get(f"/v1/jobs/{job_id}"), 50, pause=0.05
        )
        found["reconcile_ms"], found["reconcile_max_ms"] = timed(lambda: reconcile(sessions), 5)
        if args.dispatch_seconds:
            found["dispatch_big"] = dispatch(code, env, sessions, args.dispatch_seconds, workdir)
        if not args.skip_results:
            finish_all(sessions, job_id)
            reset_peak(child.pid)
            started = time.perf_counter()
            lines = 0
            with client.stream("GET", f"/v1/jobs/{job_id}/results?format=jsonl") as r:
                r.raise_for_status()
                for chunk in r.iter_bytes():
                    lines += chunk.count(b"\n")
            found["results_s"] = time.perf_counter() - started
            found["results_lines"] = lines
            found["results_peak_mib"] = peak_mib(child.pid)
    if args.dispatch_seconds:
        # The same worker on a small job of a fresh database, for the rate it keeps there.
        env = environment(pg, redis, database + "_small", SMALL_JOB, code)
        env["GENQ_REDIS_URL"] = redis.url.rsplit("/", 1)[0] + "/1"  # not the big job's queue
        small = apijob._run(
            code, env, env["GENQ_DATABASE_URL"], 1, SMALL_JOB, workdir, args.dispatch_seconds * 4
        )
        found["dispatch_small"] = small["worker_rate"]
    return found


def dispatch(
    code: Path, env: dict[str, str], sessions: Any, seconds: float, workdir: Path
) -> float:
    """Requests/s one worker finishes in ``seconds``, from the results' own times."""
    with _workers(code, env, 1, workdir):
        time.sleep(seconds)
    with sessions.begin() as session:
        first, last, done = session.execute(
            select(func.min(Result.started_at), func.max(Result.finished_at), func.count())
        ).one()
    if not done:
        return 0.0
    return float(done / max((last - first).total_seconds(), 1e-9))


def finish_all(sessions: Any, job_id: str) -> None:
    """Every still-queued request of the job succeeded with a one-token result (as a worker
    would have written it), and the job's counts to match."""
    choices = [{"text": " the", "finish_reason": "length", "completion_tokens": 1}]
    with sessions.begin() as session:
        session.execute(
            text(
                "INSERT INTO results (request_id, choices, prompt_tokens, completion_tokens,"
                " fence, started_at, finished_at) SELECT id, CAST(:choices AS JSON), 9, 1,"
                " fence, now(), now() FROM requests WHERE job_id = :job AND status = 'queued'"
            ),
            {"job": job_id, "choices": json.dumps(choices)},
        )
        session.execute(
            text(
                "UPDATE requests SET status = 'succeeded' WHERE job_id = :job AND status = 'queued'"
            ),
            {"job": job_id},
        )
        session.execute(
            text(
                "UPDATE jobs SET status = 'completed', succeeded = total - failed - cancelled,"
                " started_at = coalesce(started_at, now()), finished_at = now() WHERE id = :job"
            ),
            {"job": job_id},
        )


def reconcile(sessions: Any) -> None:
    """One reconciler pass's reads and writes (reap), rolled back: nothing is due yet."""
    with sessions() as session:
        reap(session)
        session.rollback()


def timed(call: Any, count: int, *, pause: float = 0.0) -> tuple[float, float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        answer = call()
        if answer is not None:
            answer.raise_for_status()
        times.append((time.perf_counter() - started) * 1000)
        time.sleep(pause)
    return statistics.median(times), max(times)


def processes(pid: int) -> list[int]:
    found = [pid]
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        for child in children.read_text().split():
            found.extend(processes(int(child)))
    return found


def reset_peak(pid: int) -> None:
    """Restart the peak resident memory (VmHWM) of the process tree at ``pid``."""
    for each in processes(pid):
        Path(f"/proc/{each}/clear_refs").write_text("5")


def peak_mib(pid: int) -> float:
    """The largest peak resident memory among the processes of the tree at ``pid``."""
    peaks = []
    for each in processes(pid):
        for line in Path(f"/proc/{each}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                peaks.append(int(line.split()[1]) / 1024)
    return max(peaks)


ROWS = (
    ("upload_s", "upload, s"),
    ("create_s", "create the job, s"),
    ("accept_s", "accept (upload + create), s"),
    ("idle_mib", "API memory before, MiB"),
    ("upload_peak_mib", "API peak during upload, MiB"),
    ("create_peak_mib", "API peak during create, MiB"),
    ("scrape_ms", "/metrics scrape, median ms"),
    ("poll_ms", "GET /v1/jobs/{id}, median ms"),
    ("reconcile_ms", "reconciler pass (reap), median ms"),
    ("dispatch_big", "1 worker, req/s on the big job"),
    ("dispatch_small", "1 worker, req/s on a 20,000-request job"),
    ("results_s", "results as JSONL, s"),
    ("results_peak_mib", "API peak while streaming results, MiB"),
)


def report(found: dict[str, dict[str, float]], args: argparse.Namespace) -> None:
    names = list(found)
    where = f"{args.requests} {args.form} lines, PostgreSQL, Redis"
    print(f"{os.cpu_count()} CPUs; one job of {where}:")
    print("| | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for key, label in ROWS:
        cells = [f"{found[n][key]:.1f}" if key in found[n] else "-" for n in names]
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
