"""API benchmark: time to accept a 50,000-request job, and GET /v1/jobs/{id} latency under 50
concurrent pollers, against a live uvicorn server on a fresh SQLite database (embedded mode).
Numbers, not pass/fail:

    .venv/bin/python bench/service.py --count 50000 --pollers 50 --polls 20
"""

from __future__ import annotations

import argparse
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
import uvicorn

from api.app import create_app
from api.context import Context
from genq.auth import create_key
from genq.settings import Settings
from genq.store import make_engine, session_factory, upgrade


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=50_000)
    parser.add_argument("--pollers", type=int, default=50)
    parser.add_argument("--polls", type=int, default=20)
    args = parser.parse_args()
    url = f"sqlite:///{Path(tempfile.mkdtemp()) / 'bench.db'}"
    upgrade(url)
    settings = Settings(database_url=url, default_model="tiny-gpt2")
    context = Context(settings, session_factory(make_engine(url)), None)
    with context.sessions.begin() as session:
        key = create_key(session, tenant="bench")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(context), host="127.0.0.1", port=port, log_level="error")
    )
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {key}"}
    body = {
        "requests": [
            {"custom_id": f"r{i}", "prompt": f"Prompt number {i}."} for i in range(args.count)
        ],
        "params": {"max_new_tokens": 16},
    }
    with httpx.Client(base_url=base, headers=headers, timeout=300) as client:
        start = time.perf_counter()
        answer = client.post("/v1/jobs", json=body)
        accept = time.perf_counter() - start
        answer.raise_for_status()
        job_id = answer.json()["id"]
    print(f"accept {args.count} requests: {accept:.2f} s (HTTP {answer.status_code})")

    latencies: list[float] = []
    lock = threading.Lock()

    def poll() -> None:
        with httpx.Client(base_url=base, headers=headers, timeout=30) as c:
            for _ in range(args.polls):
                t = time.perf_counter()
                c.get(f"/v1/jobs/{job_id}").raise_for_status()
                with lock:
                    latencies.append(time.perf_counter() - t)

    threads = [threading.Thread(target=poll) for _ in range(args.pollers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1]
    print(
        f"poll GET /v1/jobs/{{id}}, {args.pollers} pollers x {args.polls}: "
        f"median {statistics.median(latencies) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms"
    )
    server.should_exit = True


if __name__ == "__main__":
    main()
