from __future__ import annotations

import time
from typing import Any

from fastapi.testclient import TestClient

TERMINAL = ("completed", "cancelled")


def wait_job(
    client: TestClient, job_id: str, headers: dict[str, str], *, timeout: float = 60.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/v1/jobs/{job_id}", headers=headers).json()
        if job["status"] in TERMINAL:
            return job
        assert time.monotonic() < deadline, f"job still {job['status']}: {job}"
        time.sleep(0.05)


def prompts(count: int, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "requests": [
            {"custom_id": f"r{i}", "prompt": f"Item {i}: the river"} for i in range(count)
        ],
        "params": {"max_new_tokens": 4},
    }
    body.update(extra)
    return body


def upload(service: Any, content: bytes, *, tenant: str = "a", name: str = "in.jsonl") -> str:
    """``content`` uploaded as a batch file of ``tenant``; its file id."""
    answer = service.client.post(
        "/v1/files",
        data={"purpose": "batch"},
        files={"file": (name, content, "application/jsonl")},
        headers=service.as_(tenant),
    )
    assert answer.status_code == 200, answer.text
    return str(answer.json()["id"])
