"""Fair sharing through the API: quotas answer 429 with nothing stored, priorities and where a
job stands are readable, /metrics shows work per tenant, and small jobs of another tenant (or
of the same one) finish before a large job that started first."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select

from genq.store.shares import set_tenant
from genq.store.tables import Job, OpenAIBatch, Request
from tests.api.conftest import Service
from tests.api.support import prompts, wait_job
from tests.api.support import upload as upload_bytes
from worker.models import LoadedModel


def stored(service: Service) -> tuple[int, int]:
    with service.context.sessions.begin() as session:
        jobs = session.scalar(select(func.count()).select_from(Job))
        requests = session.scalar(select(func.count()).select_from(Request))
    return int(jobs or 0), int(requests or 0)


def openai_line(n: int = 0) -> dict[str, Any]:
    return {
        "custom_id": f"l{n}",
        "method": "POST",
        "url": "/v1/completions",
        "body": {"model": "tiny-gpt2", "prompt": "hi", "max_tokens": 2},
    }


def upload(service: Service, tenant: str, lines: list[dict[str, Any]]) -> str:
    content = "".join(json.dumps(line) + "\n" for line in lines).encode()
    return upload_bytes(service, content, tenant=tenant)


def batch_body(file_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "input_file_id": file_id,
        "endpoint": "/v1/completions",
        "completion_window": "24h",
        **extra,
    }


def test_a_quota_answers_429_with_retry_after_and_stores_nothing(
    backend_service: Callable[..., Service],
) -> None:
    service = backend_service(max_queued_requests=10)
    client, a, b = service.client, service.as_("a"), service.as_("b")
    assert client.post("/v1/jobs", json=prompts(8), headers=a).status_code == 202
    over = client.post("/v1/jobs", json=prompts(3), headers=a)
    assert over.status_code == 429
    assert int(over.headers["Retry-After"]) > 0
    error = over.json()["error"]
    assert error["type"] == "rate_limit_error"
    assert "11 requests queued or running, over its limit of 10" in error["message"]
    assert stored(service) == (1, 8)
    # Another tenant has its own limit; a file job is checked the same way.
    assert client.post("/v1/jobs", json=prompts(10), headers=b).status_code == 202
    native = upload(service, "b", [{"prompt": f"line {i}"} for i in range(3)])
    refused = client.post("/v1/jobs", json={"input_file_id": native}, headers=b)
    assert refused.status_code == 429
    openai_file = upload(service, "b", [openai_line(i) for i in range(3)])
    batch = client.post("/v1/batches", json=batch_body(openai_file), headers=b)
    assert batch.status_code == 429
    assert stored(service) == (2, 18)
    with service.context.sessions.begin() as session:
        assert session.scalar(select(func.count()).select_from(OpenAIBatch)) == 0
    # A tenant's own, larger limit lets it through.
    with service.context.sessions.begin() as session:
        set_tenant(session, name="b", weight=None, max_queued_requests=100, max_queued_tokens=None)
    assert client.post("/v1/jobs", json={"input_file_id": native}, headers=b).status_code == 202


def test_priority_is_checked_kept_and_read_back(service: Service) -> None:
    client, a = service.client, service.as_("a")
    job = client.post("/v1/jobs", json=prompts(2, priority=5), headers=a).json()
    assert job["priority"] == 5
    for bad in (101, "5", 1.5):
        answer = client.post("/v1/jobs", json=prompts(2, priority=bad), headers=a)
        assert answer.status_code == 422 and "priority" in answer.json()["error"]["message"]
    body = batch_body(upload(service, "a", [openai_line()]))
    bad = client.post("/v1/batches", json={**body, "metadata": {"priority": "high"}}, headers=a)
    assert bad.status_code == 422
    assert bad.json()["error"]["message"].startswith("metadata.priority")
    ok = client.post("/v1/batches", json={**body, "metadata": {"priority": "3"}}, headers=a)
    assert ok.status_code == 200
    with service.context.sessions.begin() as session:
        assert sorted(session.scalars(select(Job.priority))) == [3, 5]


def test_a_queued_job_says_where_it_stands_and_metrics_show_tenants(service: Service) -> None:
    client, a, b = service.client, service.as_("a"), service.as_("b")
    big = client.post("/v1/jobs", json=prompts(600), headers=a).json()
    small = client.post("/v1/jobs", json=prompts(5), headers=b).json()
    stands = client.get(f"/v1/jobs/{small['id']}", headers=b).json()["queue"]
    assert stands == {
        "queued": 5,
        "running": 0,
        "next_window": 5,
        "share": round(5 / 256, 4),
        "jobs_waiting": 2,
    }
    assert client.get(f"/v1/jobs/{big['id']}", headers=a).json()["queue"]["next_window"] == 251
    text = client.get("/metrics").text
    assert 'genq_tenant_queued_requests{tenant="a"} 600.0' in text
    assert 'genq_tenant_queued_requests{tenant="b"} 5.0' in text
    assert 'genq_tenant_running_requests{tenant="a"} 0.0' in text
    # Prompts of 17 bytes are 5 estimated tokens, and 4 new tokens each.
    assert 'genq_tenant_queued_tokens{tenant="b"} 45.0' in text
    assert "Item 0" not in text


def test_small_jobs_finish_before_a_large_job_that_started_first(
    make_service: Callable[..., Service], tiny: LoadedModel
) -> None:
    service = make_service(max_batch_size=8)
    client, a, b = service.client, service.as_("a"), service.as_("b")
    big = client.post("/v1/jobs", json=prompts(1500, params={"max_new_tokens": 8}), headers=a)
    service.start_worker()
    deadline = time.monotonic() + 60
    while client.get(f"/v1/jobs/{big.json()['id']}", headers=a).json()["counts"]["succeeded"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    small = [
        client.post("/v1/jobs", json=prompts(5), headers=b).json(),  # other tenant, other params
        client.post("/v1/jobs", json=prompts(5, params={"max_new_tokens": 8}), headers=a).json(),
    ]
    for job in small:
        headers = b if job is small[0] else a
        assert wait_job(client, job["id"], headers)["status"] == "completed"
    left = client.get(f"/v1/jobs/{big.json()['id']}", headers=a).json()
    assert left["status"] == "running"
    assert left["counts"]["succeeded"] < 1000, left["counts"]


def test_a_cancelled_openai_batch_says_when_it_was_asked(service: Service) -> None:
    client, a = service.client, service.as_("a")
    body = batch_body(upload(service, "a", [openai_line()]))
    batch = client.post("/v1/batches", json=body, headers=a).json()
    assert batch["cancelling_at"] is None
    cancelling = client.post(f"/v1/batches/{batch['id']}/cancel", headers=a).json()
    assert cancelling["status"] == "cancelling" and cancelling["cancelled_at"] is None
    deadline = time.monotonic() + 30
    while (cancelled := client.get(f"/v1/batches/{batch['id']}", headers=a).json())[
        "status"
    ] != "cancelled":
        assert time.monotonic() < deadline, cancelled
        time.sleep(0.05)
    assert cancelled["created_at"] <= cancelled["cancelling_at"] <= cancelled["cancelled_at"]
