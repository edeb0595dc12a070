"""What the intake costs a submit: POST /v1/jobs of a large job, in process on a fresh SQLite
database each time, with the job's parameters only and with parameters of each request's own,
alternated, several rounds. Numbers, not pass/fail:

    .venv/bin/python bench/intake.py --count 50000 --rounds 3

Also times the intake alone (parse and check the JSON, validate the body, resolve every
request) apart from the store's write.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastapi.testclient import TestClient  # noqa: E402

from api.app import create_app  # noqa: E402
from api.context import Context  # noqa: E402
from genq.auth import create_key  # noqa: E402
from genq.intake import JobCreate, job_requests  # noqa: E402
from genq.intake.bodies import validated  # noqa: E402
from genq.intake.jsontext import loads  # noqa: E402
from genq.settings import Settings  # noqa: E402
from genq.store import make_engine, session_factory, upgrade  # noqa: E402


def body(count: int, *, own: bool) -> bytes:
    requests: list[dict[str, object]] = [
        {"custom_id": f"r{i}", "prompt": f"Item {i}: the river ran past the mill"}
        for i in range(count)
    ]
    if own:
        for i, request in enumerate(requests):
            request["params"] = {"max_new_tokens": 4 + i % 3}
    return json.dumps({"requests": requests, "params": {"max_new_tokens": 4}}).encode()


def submit_seconds(content: bytes) -> float:
    with tempfile.TemporaryDirectory(prefix="genq-intake-") as root:
        url = f"sqlite:///{Path(root) / 'genq.db'}"
        upgrade(url)
        settings = Settings(database_url=url, default_model="tiny-gpt2", max_body_requests=10**7)
        engine = make_engine(url)
        context = Context(settings, session_factory(engine), None)
        with context.sessions.begin() as session:
            key = create_key(session, tenant="bench")
        headers = {"Authorization": f"Bearer {key}", "content-type": "application/json"}
        with TestClient(create_app(context)) as client:
            started = time.perf_counter()
            answer = client.post("/v1/jobs", content=content, headers=headers)
            elapsed = time.perf_counter() - started
        engine.dispose()
    assert answer.status_code == 202, answer.text
    return elapsed


def intake_seconds(content: bytes, settings: Settings) -> float:
    started = time.perf_counter()
    job_requests(validated(JobCreate, loads(content)), settings=settings)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    bodies = {"job params": body(args.count, own=False), "own params": body(args.count, own=True)}
    settings = Settings(max_job_requests=max(args.count, 1), max_body_requests=max(args.count, 1))
    submit: dict[str, list[float]] = {name: [] for name in bodies}
    intake: dict[str, list[float]] = {name: [] for name in bodies}
    for _ in range(args.rounds):
        for name, content in bodies.items():
            submit[name].append(submit_seconds(content))
            intake[name].append(intake_seconds(content, settings))
    print(f"{args.count} requests, {args.rounds} rounds, median (min-max) seconds")
    for name in bodies:
        for label, times in (("POST /v1/jobs", submit[name]), ("intake alone", intake[name])):
            print(
                f"  {name:<10} {label:<14} {statistics.median(times):6.2f}"
                f" ({min(times):.2f}-{max(times):.2f})"
            )
    ratio = statistics.median(submit["own params"]) / statistics.median(submit["job params"])
    print(f"  own params / job params, POST /v1/jobs: {ratio:.2f}x")


if __name__ == "__main__":
    main()
