"""API benchmark on the embedded service (`genq serve`: the API and its in-process worker on a
fresh SQLite database, started as a child process, so that the pollers' own work stays out of
it): the time to accept a 50,000-request job, then GET /v1/jobs/{id} latency under 50
concurrent pollers while the worker generates that job on the tiny-gpt2 test model. Numbers,
not pass/fail:

    .venv/bin/python bench/service.py --count 50000 --pollers 50 --polls 100 [--interval 1]

Polling starts once the worker has finished some requests, and the requests it finishes during
the polling window are printed: the proof that it was generating all along.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

MODEL = "tiny-gpt2"
START_TIMEOUT_S = 120.0
"""How long the service may take to answer, and its worker to finish a first request."""

QUIET_S = 3.0
"""How long the worker's rate is measured without pollers, to compare with its rate under them."""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=50_000, help="requests in the job")
    parser.add_argument("--pollers", type=int, default=50)
    parser.add_argument("--polls", type=int, default=100, help="polls per poller")
    parser.add_argument(
        "--interval",
        type=float,
        default=0.0,
        help="seconds a poller waits between polls (genq submit --wait: 1); 0: back to back",
    )
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument(
        "--job-cache-seconds",
        type=float,
        default=None,
        help="GENQ_JOB_CACHE_SECONDS for the service (0: every poll reads the database)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        port = _free_port()
        base = f"http://127.0.0.1:{port}"
        child, key = _start_service(Path(tmp), port, args.job_cache_seconds)
        try:
            _run(args, base, {"Authorization": f"Bearer {key}"})
        finally:
            child.terminate()
            child.wait(timeout=60)


def _run(args: argparse.Namespace, base: str, headers: dict[str, str]) -> None:
    body = {
        "model": MODEL,
        "requests": [
            {"custom_id": f"r{i}", "prompt": f"Prompt number {i}: the river"}
            for i in range(args.count)
        ],
        "params": {"max_new_tokens": args.max_new_tokens},
    }
    with httpx.Client(base_url=base, headers=headers, timeout=300) as client:
        start = time.perf_counter()
        answer = client.post("/v1/jobs", json=body)
        accept = time.perf_counter() - start
        answer.raise_for_status()
        job_id = answer.json()["id"]
        print(f"accept {args.count} requests: {accept:.2f} s (HTTP {answer.status_code})")
        quiet = _wait_running(client, job_id)
        time.sleep(QUIET_S)
        before = client.get(f"/v1/jobs/{job_id}").json()
        window = time.perf_counter()
        path = f"/v1/jobs/{job_id}"
        runs = asyncio.run(_poll_all(base, headers, path, args.pollers, args.polls, args.interval))
        window = time.perf_counter() - window
        after = client.get(f"/v1/jobs/{job_id}").json()
    finished = _done(after) - _done(before)
    pace = f"every {args.interval:g} s" if args.interval else "back to back"
    print(
        f"poll GET /v1/jobs/{{id}} while the job runs, {args.pollers} pollers x {args.polls} "
        f"{pace}, each on its own keep-alive connection:"
    )
    print(f"  polls on open connections: {_summary([t for run in runs for t in run[1:]])}")
    print(f"  first poll of each new connection: {_summary([run[0] for run in runs])}")
    print(f"  all polls: {_summary([t for run in runs for t in run])}")
    print(
        f"worker alone for {QUIET_S:.0f} s before polling: "
        f"{(_done(before) - _done(quiet)) / QUIET_S:.0f} requests/s"
    )
    print(
        f"worker during the {window:.1f} s polling window: {finished} requests finished "
        f"({finished / window:.0f}/s); job {after['status']}, "
        f"{_done(after)}/{after['counts']['total']} done"
    )
    if not finished:
        print("no batch landed during the window, so it proves nothing: raise --polls")


def _start_service(
    tmp: Path, port: int, job_cache_seconds: float | None
) -> tuple[subprocess.Popen[str], str]:
    """`genq serve` on a fresh database in ``tmp``; returns the process and the key it prints."""
    env = {
        **os.environ,
        "GENQ_DATABASE_URL": f"sqlite:///{tmp / 'bench.db'}",
        "GENQ_DEFAULT_MODEL": MODEL,
        "GENQ_DEVICE": "cpu",
    }
    if job_cache_seconds is not None:
        env["GENQ_JOB_CACHE_SECONDS"] = str(job_cache_seconds)
    command = [sys.executable, "-m", "genq", "serve", "--port", str(port), "--tenant", "bench"]
    root = Path(__file__).resolve().parents[1]
    child = subprocess.Popen(command, env=env, cwd=root, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    key = None
    for line in child.stdout:
        if line.startswith("GENQ_API_KEY="):
            key = line.strip().partition("=")[2]
            break
    if key is None:
        raise SystemExit(f"genq serve exited ({child.wait()}) without printing a key")
    # Keep reading what it prints, so that a full pipe never stalls it.
    threading.Thread(target=child.stdout.read, daemon=True).start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                return child, key
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or child.poll() is not None:
            child.kill()
            raise SystemExit("genq serve did not come up")
        time.sleep(0.1)


def _wait_running(client: httpx.Client, job_id: str) -> dict[str, Any]:
    """The job once the worker has loaded the model and finished a first request."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if _done(job) > 0:
            return job
        if time.monotonic() > deadline:
            raise SystemExit(f"the worker finished nothing in {START_TIMEOUT_S:.0f} s: {job}")
        time.sleep(0.2)


async def _poll_all(
    base: str, headers: dict[str, str], path: str, pollers: int, polls: int, interval: float
) -> list[list[float]]:
    """Each poller's latencies, in the order of its polls."""
    # Pollers that wait start spread over one interval, as independent clients would be.
    starts = [interval * n / pollers for n in range(pollers)]
    return list(
        await asyncio.gather(
            *(_poller(base, headers, path, polls, interval, start) for start in starts)
        )
    )


async def _poller(
    base: str,
    headers: dict[str, str],
    path: str,
    polls: int,
    interval: float,
    start: float,
) -> list[float]:
    """``polls`` GETs of ``path`` on one keep-alive connection, ``interval`` seconds apart after
    a first wait of ``start``. Plain HTTP/1.1 on asyncio streams: httpx spends more CPU per
    request than the server does, and on a small machine the pollers share the CPUs with the
    service they measure."""
    url = httpx.URL(base)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {url.host}",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    await asyncio.sleep(start)
    latencies: list[float] = []
    try:
        for n in range(polls):
            if n:
                await asyncio.sleep(interval)
            sent = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            fields = (line.partition(b":") for line in head.split(b"\r\n")[1:])
            length = next(int(v) for k, _, v in fields if k.lower() == b"content-length")
            body = await reader.readexactly(length)
            latencies.append(time.perf_counter() - sent)
            if not head.startswith(b"HTTP/1.1 200 "):
                raise RuntimeError(f"poll answered {head.splitlines()[0]!r}: {body[:200]!r}")
    finally:
        writer.close()
        await writer.wait_closed()
    return latencies


def _summary(latencies: list[float]) -> str:
    if not latencies:
        return "none"
    ordered = sorted(latencies)
    p99 = ordered[max(0, round(len(ordered) * 0.99) - 1)]
    return (
        f"median {statistics.median(ordered) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
        f"max {ordered[-1] * 1000:.1f} ms ({len(ordered)} polls)"
    )


def _done(job: dict[str, Any]) -> int:
    counts = job["counts"]
    return int(counts["succeeded"] + counts["failed"] + counts["cancelled"])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


if __name__ == "__main__":
    main()
