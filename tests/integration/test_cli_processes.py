"""The real ``genq`` processes end to end: ``genq serve`` driven by the CLI client (submit
--wait, status, results, cancel), and the distributed deployment as compose runs it (``genq db
upgrade``, ``genq keys create``, ``genq api`` and a ``genq worker`` on Redis and PostgreSQL).
Every wait is bounded and every process is killed at teardown."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from genq.store.db import make_engine
from genq.store.tables import Request
from tests.integration.cluster import MODEL, START_TIMEOUT_S, Cluster, free_port, wait_for
from worker.models import LoadedModel

GENQ = [sys.executable, "-m", "genq"]
CLI_TIMEOUT_S = 120.0
JOB_TIMEOUT_S = 240.0
STOP_TIMEOUT_S = 60.0
NEW_TOKENS = 4
BIG_JOB = 400
"""Requests of the job that is cancelled or interrupted while it runs."""


def write_jobs(path: Path, count: int, *, prefix: str, **params: int) -> Path:
    lines: list[dict[str, Any]] = [
        {
            "custom_id": f"{prefix}{i}",
            "prompt": f"Line {i}: the river ran past the mill",
            "params": params,
        }
        for i in range(count)
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def run_genq(*args: str, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*GENQ, *args], env=env, capture_output=True, text=True, timeout=CLI_TIMEOUT_S
    )


def genq(*args: str, env: Mapping[str, str]) -> str:
    """Run ``genq ARGS`` to the end; its stdout, after checking that it succeeded."""
    done = run_genq(*args, env=env)
    assert done.returncode == 0, f"genq {' '.join(args)}: {done.returncode}\n{done.stderr}"
    return done.stdout


@contextmanager
def running(
    command: Sequence[str], *, env: Mapping[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """A process with its output in ``log``, killed on the way out if still running."""
    with log.open("wb") as sink:
        proc = subprocess.Popen(command, env=env, stdout=sink, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=STOP_TIMEOUT_S)
        print(f"----- {log.name}\n{log.read_text(errors='replace')[-4000:]}")


def wait_listening(proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    def answers() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"{url} server exited: {proc.returncode}\n{log.read_text()}")
        try:
            return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(answers, timeout=START_TIMEOUT_S, what=f"{url}/healthz", every=0.2)


def stop(proc: subprocess.Popen[bytes], log: Path) -> None:
    """SIGTERM, the way compose and a service manager stop it: it ends by itself, without a
    traceback, with 0 or by the signal (uvicorn raises it again after its graceful shutdown)."""
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=STOP_TIMEOUT_S) in (0, -signal.SIGTERM), log.read_text()
    assert "Traceback" not in log.read_text()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_generated(rows: list[dict[str, Any]], custom_ids: list[str]) -> None:
    assert [r["custom_id"] for r in rows] == custom_ids
    for row in rows:
        assert row["status"] == "succeeded", row
        assert row["text"] and row["usage"]["completion_tokens"] == NEW_TOKENS, row


@dataclass(frozen=True)
class Served:
    proc: subprocess.Popen[bytes]
    log: Path
    database_url: str
    client_env: dict[str, str]  # GENQ_API_URL and GENQ_API_KEY for the CLI client

    def http(self) -> httpx.Client:
        env = self.client_env
        headers = {"Authorization": f"Bearer {env['GENQ_API_KEY']}"}
        return httpx.Client(base_url=env["GENQ_API_URL"], headers=headers)


@contextmanager
def serving(model_cache: Path, workdir: Path, *, claim_window: int) -> Iterator[Served]:
    """``genq serve`` on a new SQLite file and a free port, answering, with the key it printed.
    Its worker runs batches of two, so that a job of :data:`BIG_JOB` is still running when the
    test acts on it."""
    port, log = free_port(), workdir / "serve.log"
    database_url = f"sqlite:///{workdir / 'serve.db'}"
    env = {
        **os.environ,
        "GENQ_DATABASE_URL": database_url,
        "GENQ_MODEL_CACHE": str(model_cache),
        "GENQ_DEFAULT_MODEL": MODEL,
        "GENQ_DEVICE": "cpu",
        "GENQ_BUFFER_SECONDS": "0",
        "GENQ_MAX_BATCH_SIZE": "2",
        "GENQ_CLAIM_WINDOW": str(claim_window),
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    with running([*GENQ, "serve", "--port", str(port)], env=env, log=log) as proc:

        def printed_key() -> str | None:
            if proc.poll() is not None:
                raise AssertionError(f"genq serve exited: {proc.returncode}\n{log.read_text()}")
            keys = [x for x in log.read_text().splitlines() if x.startswith("GENQ_API_KEY=")]
            return keys[0].removeprefix("GENQ_API_KEY=") if keys else None

        key = wait_for(printed_key, timeout=START_TIMEOUT_S, what="the key genq serve prints")
        url = f"http://127.0.0.1:{port}"
        assert f"GENQ_API_URL={url}" in log.read_text()
        wait_listening(proc, url, log)
        client_env = {**os.environ, "GENQ_API_URL": url, "GENQ_API_KEY": key}
        yield Served(proc, log, database_url, client_env)


def test_serve_with_the_cli_client(tiny: LoadedModel, tiny_cache: Path, tmp_path: Path) -> None:
    # Small windows: requests a cancel finds still queued are cancelled (running ones finish).
    with serving(tiny_cache, tmp_path, claim_window=8) as served:
        client = served.client_env
        small = write_jobs(
            tmp_path / "small.jsonl",
            6,
            prefix="q",
            max_new_tokens=NEW_TOKENS,
            min_new_tokens=NEW_TOKENS,
        )
        job = genq("submit", str(small), "--wait", env=client).splitlines()[0]
        status = json.loads(genq("status", job, env=client))
        assert status["status"] == "completed"
        assert status["counts"]["total"] == status["counts"]["succeeded"] == 6
        out = tmp_path / "small.out.jsonl"
        genq("results", job, "-o", str(out), env=client)
        assert_generated(read_jsonl(out), [f"q{i}" for i in range(6)])

        big = write_jobs(tmp_path / "big.jsonl", BIG_JOB, prefix="b", max_new_tokens=16)
        doomed = genq("submit", str(big), env=client).strip()
        assert genq("cancel", doomed, env=client).strip() in ("cancelling", "cancelled")

        def cancelled() -> dict[str, Any] | None:
            job = json.loads(genq("status", doomed, env=client))
            return job if job["status"] == "cancelled" else None

        counts = wait_for(cancelled, timeout=JOB_TIMEOUT_S, what="the cancel", every=0.5)["counts"]
        assert counts["cancelled"] > 0 and counts["failed"] == 0
        assert counts["succeeded"] + counts["cancelled"] == counts["total"] == BIG_JOB
        out = tmp_path / "big.out.jsonl"
        genq("results", doomed, "-o", str(out), env=client)
        rows = read_jsonl(out)  # finished work is kept; the rest says it was cancelled
        assert [r["custom_id"] for r in rows] == [f"b{i}" for i in range(BIG_JOB)]
        statuses = [r["status"] for r in rows]
        assert statuses.count("succeeded") == counts["succeeded"]
        assert statuses.count("cancelled") == counts["cancelled"]

        refused = run_genq("cancel", job, env=client)  # a completed job cannot be cancelled
        assert refused.returncode == 2 and "HTTP 409" in refused.stderr, refused.stderr
        stop(served.proc, served.log)


def test_serve_releases_its_claims_on_sigterm(
    tiny: LoadedModel, tiny_cache: Path, tmp_path: Path
) -> None:
    # One window holds the whole job, so the stop always finds requests claimed.
    with serving(tiny_cache, tmp_path, claim_window=BIG_JOB) as served:
        big = write_jobs(tmp_path / "big.jsonl", BIG_JOB, prefix="b", max_new_tokens=16)
        job_id = genq("submit", str(big), env=served.client_env).strip()
        with served.http() as http:

            def working() -> bool:
                counts = http.get(f"/v1/jobs/{job_id}").json()["counts"]
                return bool(counts["succeeded"] >= 2)

            wait_for(working, timeout=JOB_TIMEOUT_S, what="the job to be under way", every=0.2)
        stop(served.proc, served.log)
    engine = make_engine(served.database_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(Request.status, func.count()).group_by(Request.status))
            statuses = {str(status): count for status, count in rows}
    finally:
        engine.dispose()
    # The batch in hand is written, the rest of the window goes back to the queue at once.
    assert "running" not in statuses and statuses["succeeded"] >= 2, statuses
    assert statuses["succeeded"] + statuses["queued"] == BIG_JOB, statuses


def test_distributed_api_and_worker_processes(cluster: Cluster, tmp_path: Path) -> None:
    env = {**os.environ, **cluster.env, "PYTHONUNBUFFERED": "1"}
    # What compose's migrate service runs on every start: the schema is already there.
    assert "up to date" in genq("db", "upgrade", env=env)
    key = genq("keys", "create", "--tenant", "ops", env=env).strip()
    worker = cluster.start_worker()
    port = free_port()
    log = tmp_path / "api.log"
    command = [*GENQ, "api", "--host", "127.0.0.1", "--port", str(port)]
    with running(command, env=env, log=log) as api:
        url = f"http://127.0.0.1:{port}"
        wait_listening(api, url, log)
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}) as http:
            ready = http.get("/readyz")
            assert ready.json() == {"status": "ok", "database": "ok", "redis": "ok"}
            body = {
                "model": MODEL,
                "params": {"max_new_tokens": NEW_TOKENS, "min_new_tokens": NEW_TOKENS},
                "requests": [{"custom_id": f"d{i}", "prompt": f"Prompt {i}"} for i in range(8)],
            }
            created = http.post("/v1/jobs", json=body)
            assert created.status_code == 202, created.text
            job_id = created.json()["id"]

            def completed() -> dict[str, Any] | None:
                job: dict[str, Any] = http.get(f"/v1/jobs/{job_id}").json()
                return job if job["status"] == "completed" else None

            job = wait_for(completed, timeout=JOB_TIMEOUT_S, what=f"job {job_id}", every=0.5)
            assert job["counts"]["succeeded"] == 8
            results = http.get(f"/v1/jobs/{job_id}/results", params={"format": "jsonl"})
            assert results.status_code == 200
            rows = [json.loads(line) for line in results.text.splitlines()]
        assert_generated(rows, [f"d{i}" for i in range(8)])
        written_by = {cluster.result_worker(r.id) for r in cluster.requests(job_id)}
        assert written_by == {worker.worker_id}
        stop(api, log)
    assert "Finished server process" in log.read_text()  # uvicorn's graceful shutdown ran
