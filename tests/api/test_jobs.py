from __future__ import annotations

import json
import subprocess
import sys

from genq.store import Choice, Outcome, claim, complete_many
from tests.api.conftest import Service
from tests.api.support import prompts, wait_job


def test_the_api_never_imports_torch() -> None:
    code = "import sys, api.app; api.app.create_app(); assert 'torch' not in sys.modules, 'torch'"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_submit_run_read_results(service: Service) -> None:
    client, a = service.client, service.as_("a")
    answer = client.post("/v1/jobs", json=prompts(5, metadata={"purpose": "test"}), headers=a)
    assert answer.status_code == 202, answer.text
    job = answer.json()
    assert job["status"] == "queued"
    assert job["counts"] == {"total": 5, "succeeded": 0, "failed": 0, "cancelled": 0, "refused": 0}
    assert job["model"] == "tiny-gpt2"
    assert job["metadata"] == {"purpose": "test"}
    service.start_worker()
    done = wait_job(client, job["id"], a)
    assert done["status"] == "completed"
    assert done["counts"]["succeeded"] == 5
    assert done["progress"] == 1.0
    assert done["usage"]["completion_tokens"] == 20  # 5 x max_new_tokens 4 (tiny never stops)
    assert done["started_at"] and done["finished_at"]
    assert done["throughput"]["tokens_per_second"] > 0
    assert done["eta_seconds"] is None
    page = client.get(f"/v1/jobs/{job['id']}/results", headers=a).json()
    assert [r["custom_id"] for r in page["data"]] == [f"r{i}" for i in range(5)]
    assert all(r["status"] == "succeeded" and r["text"] for r in page["data"])
    assert page["has_more"] is False
    stream = client.get(f"/v1/jobs/{job['id']}/results?format=jsonl", headers=a)
    assert stream.headers["content-type"].startswith("application/jsonl")
    lines = stream.text.splitlines()
    assert len(lines) == 5
    assert [line for line in lines] == [__import__("json").dumps(r) for r in page["data"]]


def test_results_pages_with_a_cursor(service: Service) -> None:
    client, a = service.client, service.as_("a")
    job = client.post("/v1/jobs", json=prompts(7), headers=a).json()
    service.start_worker()
    wait_job(client, job["id"], a)
    seen, after = [], -1
    while True:
        page = client.get(
            f"/v1/jobs/{job['id']}/results", params={"after": after, "limit": 3}, headers=a
        ).json()
        seen += [r["idx"] for r in page["data"]]
        after = page["next"]
        if not page["has_more"]:
            break
    assert seen == list(range(7))


def test_jobs_list_newest_first_with_a_cursor(service: Service) -> None:
    client, a = service.client, service.as_("a")
    ids = [client.post("/v1/jobs", json=prompts(1), headers=a).json()["id"] for _ in range(5)]
    client.post("/v1/jobs", json=prompts(1), headers=service.as_("b"))
    listed, after = [], None
    while True:
        params = {"limit": 2, **({"after": after} if after else {})}
        page = client.get("/v1/jobs", params=params, headers=a).json()
        listed += [j["id"] for j in page["data"]]
        after = page["last_id"]
        if not page["has_more"]:
            break
    assert listed == ids[::-1]


def test_cancel_a_queued_job(service: Service) -> None:
    client, a = service.client, service.as_("a")
    job = client.post("/v1/jobs", json=prompts(3), headers=a).json()
    cancelled = client.post(f"/v1/jobs/{job['id']}/cancel", headers=a).json()
    assert cancelled["status"] == "cancelled"
    assert cancelled["counts"]["cancelled"] == 3
    results = client.get(f"/v1/jobs/{job['id']}/results", headers=a).json()["data"]
    assert [r["status"] for r in results] == ["cancelled"] * 3


def test_cancelling_a_completed_job_is_a_conflict(service: Service) -> None:
    client, a = service.client, service.as_("a")
    job = client.post("/v1/jobs", json=prompts(1), headers=a).json()
    service.start_worker()
    wait_job(client, job["id"], a)
    answer = client.post(f"/v1/jobs/{job['id']}/cancel", headers=a)
    assert answer.status_code == 409
    assert "completed" in answer.json()["error"]["message"]


def test_results_are_readable_while_the_job_runs(service: Service) -> None:
    client, a = service.client, service.as_("a")
    job = client.post("/v1/jobs", json=prompts(4), headers=a).json()
    # A worker holds the first three and has finished the first and third so far.
    with service.context.sessions.begin() as session:
        claims = claim(session, worker_id="w", model="tiny-gpt2", lease_seconds=60, limit=3)
        ok = Outcome(choices=(Choice("hi", "length", 1),), prompt_tokens=3)
        items = [(c.request_id, c.fence, ok) for c in claims if c.idx in (0, 2)]
        assert complete_many(session, items=items) == [True, True]
    running = client.get(f"/v1/jobs/{job['id']}", headers=a).json()
    assert running["status"] == "running"
    assert running["counts"]["succeeded"] == 2
    assert running["progress"] == 0.5
    assert running["eta_seconds"] is not None and running["eta_seconds"] >= 0
    page = client.get(f"/v1/jobs/{job['id']}/results", headers=a).json()
    # Input order up to the first open request: idx 2 waits for idx 1, so no cursor skips it.
    assert [r["idx"] for r in page["data"]] == [0]
    assert page["has_more"] is True and page["next"] == 0
    stream = client.get(f"/v1/jobs/{job['id']}/results?format=jsonl", headers=a).text
    assert [json.loads(line)["idx"] for line in stream.splitlines()] == [0, 2]


def test_retry_runs_only_the_failed_requests_again(service: Service) -> None:
    client, a = service.client, service.as_("a")
    job = client.post("/v1/jobs", json=prompts(4), headers=a).json()
    early = client.post(f"/v1/jobs/{job['id']}/retry", headers=a)
    assert early.status_code == 409 and "is queued" in early.json()["error"]["message"]
    # A first run in which requests 1 and 3 failed.
    with service.context.sessions.begin() as session:
        claims = claim(session, worker_id="w", model="tiny-gpt2", lease_seconds=60)
        ok = Outcome(choices=(Choice("first run", "length", 1),), prompt_tokens=3)
        items = [
            (c.request_id, c.fence, Outcome(error="CUDA out of memory") if c.idx % 2 else ok)
            for c in claims
        ]
        assert complete_many(session, items=items) == [True] * 4
    failed = client.get(f"/v1/jobs/{job['id']}", headers=a).json()
    assert failed["status"] == "completed" and failed["counts"]["failed"] == 2
    other = client.post(f"/v1/jobs/{job['id']}/retry", headers=service.as_("b"))
    assert other.status_code == 404

    answer = client.post(f"/v1/jobs/{job['id']}/retry", headers=a)
    assert answer.status_code == 200, answer.text
    retried = answer.json()
    assert retried["requeued"] == 2 and retried["retried"] == 2
    assert retried["status"] == "queued" and retried["counts"]["failed"] == 0
    # A poll right after reads the retry, not the completed job it held.
    assert client.get(f"/v1/jobs/{job['id']}", headers=a).json()["status"] == "queued"
    service.start_worker()
    done = wait_job(client, job["id"], a)
    assert done["counts"] == {
        "total": 4,
        "succeeded": 4,
        "failed": 0,
        "cancelled": 0,
        "refused": 0,
    }
    rows = client.get(f"/v1/jobs/{job['id']}/results", headers=a).json()["data"]
    assert [r["text"] == "first run" for r in rows] == [True, False, True, False]
    assert all(r["status"] == "succeeded" for r in rows)
    again = client.post(f"/v1/jobs/{job['id']}/retry", headers=a).json()
    assert again["requeued"] == 0 and again["status"] == "completed"


def test_answers_are_what_the_schema_documents(service: Service) -> None:
    from api import schemas

    client, a = service.client, service.as_("a")
    created = client.post("/v1/jobs", json=prompts(3), headers=a)
    schemas.JobPublic.model_validate(created.json())  # every field, and no other
    job_id = created.json()["id"]
    queued = client.get(f"/v1/jobs/{job_id}", headers=a).json()
    assert schemas.JobPublic.model_validate(queued).queue is not None
    service.start_worker()
    wait_job(client, job_id, a)
    schemas.JobPublic.model_validate(client.get(f"/v1/jobs/{job_id}", headers=a).json())
    schemas.JobList.model_validate(client.get("/v1/jobs", headers=a).json())
    page = schemas.ResultPage.model_validate(
        client.get(f"/v1/jobs/{job_id}/results", headers=a).json()
    )
    assert len(page.data) == 3
    schemas.JobRetried.model_validate(client.post(f"/v1/jobs/{job_id}/retry", headers=a).json())
    schemas.WebhookSecret.model_validate(client.get("/v1/webhooks/secret", headers=a).json())
    schemas.WebhookDeliveryList.model_validate(
        client.get(f"/v1/jobs/{job_id}/webhooks", headers=a).json()
    )
    other = client.post("/v1/jobs", json=prompts(1), headers=a).json()["id"]
    schemas.JobPublic.model_validate(client.post(f"/v1/jobs/{other}/cancel", headers=a).json())
    # The schema names these types for the routes, and a bearer key for all but the open ones.
    doc = client.get("/openapi.json").json()
    read = doc["paths"]["/v1/jobs/{job_id}"]["get"]
    assert read["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/JobPublic"
    }
    assert read["security"] == [{"apiKey": []}]
    assert doc["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    assert "security" not in doc["paths"]["/healthz"]["get"]
    assert set(read["responses"]) >= {"200", "401", "404", "422"}
