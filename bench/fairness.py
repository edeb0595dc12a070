"""Fair sharing benchmark: oldest-first against the fair rule, side by side in one run.

    python bench/fairness.py [--big 10000] [--max-new-tokens 16] [--wait 120] [--rounds 2]

1. Small-job latency behind a large job, on ``genq serve`` with tiny-gpt2 (a real process,
   its HTTP API and its in-process worker): a job of ``--big`` requests runs; a 5-request job
   of another tenant, then one of the same tenant, is submitted; seconds until each completes,
   the batches the worker wrote meanwhile, and how far the large job got. Oldest-first waits
   for the whole large job: it is cut off at ``--wait`` seconds.
2. Throughput on a mixed workload (two tenants, three parameter sets, one large job and six
   small ones, all queued at once) through the embedded worker in this process, rounds in
   alternating order: completion tokens/s, the ratio fair / oldest, decode rows per batch,
   prompt efficiency, and when the small jobs finished.
3. The claim on PostgreSQL (a throwaway server, as the tests start) with ``--pg-requests``
   requests in 40 jobs, each three quarters done: milliseconds per fair and oldest-first
   window, and the plans (which index each statement reads through). ``--pg-requests 0``
   skips it.

Prints numbers; it does not pass or fail.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import func, select  # noqa: E402

from genq.params import GenerationParams  # noqa: E402
from genq.settings import Settings  # noqa: E402
from genq.store import NewRequest, create_job, make_engine, session_factory, upgrade  # noqa: E402
from genq.store.tables import Batch, Job  # noqa: E402

PROMPTS = [json.loads(line)["prompt"] for line in Path(__file__).with_name("prompts.jsonl").open()]
MODEL = "tiny-gpt2"


def prompts(count: int, offset: int = 0) -> list[str]:
    # Cut to fit tiny-gpt2's context of 512 tokens with room for the new ones.
    return [f"{PROMPTS[(offset + i) % len(PROMPTS)][:300]} ({offset + i})" for i in range(count)]


# -- 1. small jobs behind a large one, on genq serve ------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Serve:
    def __init__(self, workdir: Path, cache: Path, order: str) -> None:
        self.url_db = f"sqlite:///{workdir / 'genq.db'}"
        self.port = free_port()
        self.env = {
            **os.environ,
            "GENQ_DATABASE_URL": self.url_db,
            "GENQ_MODEL_CACHE": str(cache),
            "GENQ_DEFAULT_MODEL": MODEL,
            "GENQ_CLAIM_ORDER": order,
            "GENQ_LOG_LEVEL": "WARNING",
        }
        genq = str(Path(sys.executable).with_name("genq"))
        self.genq = genq
        self.log = (workdir / "serve.log").open("w+")
        self.process = subprocess.Popen(
            [genq, "serve", "--port", str(self.port)],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        key = None
        assert self.process.stdout is not None
        for line in self.process.stdout:
            found = re.match(r"GENQ_API_KEY=(\S+)", line)
            if found:
                key = found.group(1)
                break
        assert key, "genq serve printed no key"
        other = subprocess.run(
            [genq, "keys", "create", "--tenant", "other"],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        self.keys = {"default": key, "other": other}
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=60)
        self.db = session_factory(make_engine(self.url_db))

    def submit(self, tenant: str, texts: list[str], max_new_tokens: int) -> str:
        body = {
            "requests": [{"prompt": p} for p in texts],
            "params": {"max_new_tokens": max_new_tokens},
        }
        r = self.http.post("/v1/jobs", json=body, headers=self._auth(tenant))
        r.raise_for_status()
        return str(r.json()["id"])

    def job(self, tenant: str, job_id: str) -> dict[str, Any]:
        r = self.http.get(f"/v1/jobs/{job_id}", headers=self._auth(tenant))
        r.raise_for_status()
        return dict(r.json())

    def batches(self) -> int:
        with self.db.begin() as session:
            return int(session.scalar(select(func.count()).select_from(Batch)) or 0)

    def stop(self) -> None:
        self.http.close()
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()

    def _auth(self, tenant: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[tenant]}"}


def behind_a_large_job(
    order: str, tenant: str, args: argparse.Namespace, cache: Path
) -> dict[str, Any]:
    """A fresh ``genq serve``; the large job runs; then the small job of ``tenant``."""
    with tempfile.TemporaryDirectory() as tmp:
        serve = Serve(Path(tmp), cache, order)
        try:
            big = serve.submit("default", prompts(args.big), args.max_new_tokens)
            while serve.job("default", big)["counts"]["succeeded"] == 0:
                time.sleep(0.1)
            before = serve.job("default", big)["counts"]["succeeded"]
            batches = serve.batches()
            start = time.monotonic()
            small = serve.submit(tenant, prompts(5, offset=10**6), args.max_new_tokens)
            status = "queued"
            while time.monotonic() - start < args.wait:
                status = serve.job(tenant, small)["status"]
                if status == "completed":
                    break
                time.sleep(0.05)
            seconds = time.monotonic() - start
            after = serve.job("default", big)["counts"]["succeeded"]
            return {
                "order": order,
                "small job of": "another tenant" if tenant == "other" else "same tenant",
                "seconds": seconds if status == "completed" else None,
                "batches meanwhile": serve.batches() - batches,
                "big job done meanwhile": after - before,
                "big job left": args.big - after,
            }
        finally:
            serve.stop()


def cancel_midway(args: argparse.Namespace, cache: Path) -> dict[str, Any]:
    """A 600-request job cancelled once 300 have succeeded (inside its second window of 256):
    how many more finish after."""
    with tempfile.TemporaryDirectory() as tmp:
        serve = Serve(Path(tmp), cache, "fair")
        try:
            job = serve.submit("default", prompts(600), args.max_new_tokens)
            while (done := serve.job("default", job)["counts"]["succeeded"]) < 300:
                time.sleep(0.01)
            r = serve.http.post(f"/v1/jobs/{job}/cancel", headers=serve._auth("default"))
            at_cancel = r.json()["counts"]["succeeded"]
            while (info := serve.job("default", job))["status"] != "cancelled":
                time.sleep(0.05)
            return {
                "seen done": done,
                "done at cancel": at_cancel,
                "done at end": info["counts"]["succeeded"],
                "finished after the cancel": info["counts"]["succeeded"] - at_cancel,
                "cancelled": info["counts"]["cancelled"],
            }
        finally:
            serve.stop()


# -- 2. throughput on a mixed workload --------------------------------------------------------

MIXED = [  # tenant, requests, params
    ("a", 3000, GenerationParams(max_new_tokens=16)),
    ("a", 150, GenerationParams(max_new_tokens=32)),
    ("a", 150, GenerationParams(max_new_tokens=32)),
    ("b", 150, GenerationParams(max_new_tokens=16)),
    ("b", 150, GenerationParams(max_new_tokens=16)),
    ("b", 150, GenerationParams(max_new_tokens=16, do_sample=True, temperature=0.8, seed=1)),
    ("b", 150, GenerationParams(max_new_tokens=16, do_sample=True, temperature=0.8, seed=2)),
]


def mixed_round(order: str, engine: Any, workdir: Path, n: int) -> dict[str, Any]:
    from worker.embedded import drain
    from worker.service import Runtime

    url = f"sqlite:///{workdir / f'mixed-{n}.db'}"
    upgrade(url)
    sessions = session_factory(make_engine(url))
    jobs = []
    with sessions.begin() as session:
        offset = 0
        for tenant, count, params in MIXED:
            texts = prompts(count, offset)
            offset += count
            jobs.append(
                create_job(
                    session,
                    tenant=tenant,
                    model=MODEL,
                    params=params,
                    requests=[NewRequest(prompt=p) for p in texts],
                )
            )
    settings = Settings(database_url=url, claim_order=order, buffer_seconds=0)  # type: ignore[arg-type]
    rt = Runtime(
        settings=settings,
        sessions=sessions,
        model=MODEL,
        worker_id="bench",
        make_engine=lambda: engine,
        window=settings.claim_window,
    )
    start = time.perf_counter()
    drain(rt)
    wall = time.perf_counter() - start
    with sessions.begin() as session:
        found = {
            j.id: j
            for j in session.execute(
                select(Job.id, Job.completion_tokens, Job.started_at, Job.finished_at, Job.status)
            )
        }
        batches = session.execute(select(Batch.rows, Batch.prompt_efficiency, Batch.seconds)).all()
    assert all(j.status == "completed" for j in found.values()), found
    first = min(j.started_at for j in found.values())
    small_done = max((found[j].finished_at - first).total_seconds() for j in jobs[1:])
    big_done = (found[jobs[0]].finished_at - first).total_seconds()
    tokens = sum(j.completion_tokens for j in found.values())
    seconds = sum(b.seconds for b in batches) or 1.0
    return {
        "order": order,
        "tok/s": tokens / wall,
        "rows/batch": sum(b.rows * b.seconds for b in batches) / seconds,
        "prompt efficiency": sum(b.prompt_efficiency * b.seconds for b in batches) / seconds,
        "small jobs done (s)": small_done,
        "big job done (s)": big_done,
    }


def mixed(args: argparse.Namespace, cache: Path) -> list[dict[str, Any]]:
    from worker.engine import Engine
    from worker.models import load_model

    settings = Settings(model_cache=cache, device="cpu")
    engine = Engine.from_settings(load_model(MODEL, settings), settings)
    order = ["fair", "oldest"]
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        mixed_round("fair", engine, Path(tmp), -1)  # warm-up, not counted
        for n in range(args.rounds):
            for o in order if n % 2 == 0 else order[::-1]:
                rounds.append(mixed_round(o, engine, Path(tmp), n * 2 + len(rounds)))
    return rounds


# -- 3. the fair claim on a large PostgreSQL table --------------------------------------------


def claim_cost(args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[str]]:
    """Claim windows of 256 with ``--pg-requests`` requests in 40 jobs of 4 tenants, each job
    three quarters done,
    fair and oldest-first: milliseconds per claim (median of 20, each released again), and
    the plans of the fair claim's statements."""
    from statistics import median

    from sqlalchemy import text, update

    from genq.store import claim
    from genq.store.claims import _SHARES_PG
    from genq.store.tables import Request
    from tests.conftest import running_pg_server

    rows: list[dict[str, Any]] = []
    plans: list[str] = []
    with running_pg_server() as pg:
        admin = pg.admin()
        admin.execute("CREATE DATABASE bench")
        admin.close()
        url = pg.url("bench")
        upgrade(url)
        sessions = session_factory(make_engine(url))
        per_job = args.pg_requests // 40
        for n in range(40):
            with sessions.begin() as session:
                create_job(
                    session,
                    tenant=f"t{n % 4}",
                    model=MODEL,
                    params=GenerationParams(max_new_tokens=16),
                    requests=[NewRequest(prompt=f"p {i}") for i in range(per_job)],
                )
        with sessions.begin() as session:  # jobs three quarters done, as in a busy service
            session.execute(
                update(Request)
                .where(Request.idx < per_job * 3 // 4)
                .values(status="succeeded", attempts=1)
            )
        with sessions.begin() as session:
            session.execute(text("ANALYZE"))
        for order in ("fair", "oldest"):
            times = []
            for _ in range(20):
                start = time.perf_counter()
                with sessions.begin() as session:
                    got = claim(
                        session,
                        worker_id="bench",
                        model=MODEL,
                        lease_seconds=600,
                        limit=256,
                        order=order,  # type: ignore[arg-type]
                    )
                times.append(time.perf_counter() - start)
                with sessions.begin() as session:  # back, so every claim sees the same table
                    session.execute(
                        update(Request)
                        .where(Request.id.in_([c.request_id for c in got]))
                        .values(status="queued", lease_owner=None, attempts=0)
                    )
            jobs = len({c.job_id for c in got})
            rows.append(
                {
                    "order": order,
                    "requests in the table": per_job * 40,
                    "queued": per_job * 40 - per_job * 3 // 4 * 40,
                    "ms per claim of 256": median(times) * 1000,
                    "jobs in the window": jobs,
                }
            )
        with sessions.begin() as session:
            job_id, job2 = session.scalars(text("SELECT id FROM jobs LIMIT 2")).all()
            for label, sql in (
                (
                    "open jobs",
                    "SELECT id FROM jobs WHERE status IN ('queued','running') AND model = :m",
                ),
                (
                    "running per job",
                    "SELECT job_id, count(*) FROM requests WHERE status = 'running' "
                    "AND model = :m GROUP BY job_id",
                ),
                (
                    "every job's share, one statement (two jobs shown)",
                    _SHARES_PG.format(rows="(:j, 64), (:j2, 64)").replace(":max_attempts", "3"),
                ),
            ):
                plan = session.execute(
                    text("EXPLAIN " + sql), {"m": MODEL, "j": job_id, "j2": job2}
                )
                plans.append(f"{label}:\n    " + "\n    ".join(r[0] for r in plan))
    return rows, plans


def table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    cols = list(rows[0])
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in rows:
        cells = []
        for c in cols:
            v = row[c]
            cells.append("-" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--big", type=int, default=10_000)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--wait", type=float, default=120.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--skip-serve", action="store_true")
    parser.add_argument("--pg-requests", type=int, default=400_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache_dir:
        cache = Path(cache_dir)
        if not args.skip_serve:
            rows = [
                behind_a_large_job(order, tenant, args, cache)
                for tenant in ("other", "default")
                for order in ("oldest", "fair")
            ]
            print(
                f"\n## A 5-request job behind a {args.big}-request job on genq serve "
                f"(tiny-gpt2, max_new_tokens {args.max_new_tokens}; '-': not done in "
                f"{args.wait:.0f} s)\n"
            )
            print(table(rows), flush=True)
            print(
                "\n## A 600-request job cancelled at 300 done (claim window 256, rows per "
                "decode batch up to GENQ_MAX_BATCH_SIZE)\n"
            )
            print(table([cancel_midway(args, cache)]), flush=True)
        rounds = mixed(args, cache)
        print("\n## Mixed workload: 2 tenants, 3 parameter sets, 1 large + 6 small jobs\n")
        print(table(rounds))
        fair = [r for r in rounds if r["order"] == "fair"]
        oldest = [r for r in rounds if r["order"] == "oldest"]
        for key in ("tok/s", "rows/batch", "prompt efficiency"):
            f = sum(r[key] for r in fair) / len(fair)
            o = sum(r[key] for r in oldest) / len(oldest)
            print(f"\n{key}: fair / oldest = {f / o:.3f}", end="")
        print()
    if args.pg_requests:
        rows, plans = claim_cost(args)
        print(f"\n## The claim on PostgreSQL, {args.pg_requests} requests in the table\n")
        print(table(rows))
        print("\n" + "\n".join(plans))


if __name__ == "__main__":
    main()
