"""Webhooks through the API: a job names its webhook_url, the API process sends the event
once the job ends, the job's deliveries and the tenant's secret read back."""

from __future__ import annotations

import time

import httpx
import standardwebhooks

from tests.api.conftest import Service
from tests.api.support import prompts, wait_job
from tests.genq.test_webhooks import Receiver, receiver

__all__ = ["receiver"]


def test_a_finished_job_is_posted_to_its_webhook(
    service: Service, live_url: str, receiver: Receiver
) -> None:
    a = service.as_("a")
    with httpx.Client(base_url=live_url, headers=a) as http:
        bad = http.post("/v1/jobs", json=prompts(1, webhook_url="ftp://example.com/x"))
        assert bad.status_code == 422 and "webhook_url" in bad.text
        job = http.post("/v1/jobs", json=prompts(3, webhook_url=receiver.url)).json()
        service.start_worker()
        wait_job(service.client, job["id"], a)
        deadline = time.monotonic() + 20
        while not receiver.got:
            assert time.monotonic() < deadline, "no webhook came"
            time.sleep(0.05)
        secret = http.get("/v1/webhooks/secret").json()["secret"]
        headers, body = receiver.got[0]
        event = standardwebhooks.Webhook(secret).verify(body, headers)
        assert event["type"] == "job.completed"
        assert event["data"]["id"] == job["id"] and event["data"]["counts"]["succeeded"] == 3
        while True:
            sent = http.get(f"/v1/jobs/{job['id']}/webhooks").json()["data"]
            if sent[0]["status"] != "pending" or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert [(d["event"], d["status"], d["attempts"]) for d in sent] == [
            ("job.completed", "delivered", 1)
        ]
        assert sent[0]["id"] == headers["webhook-id"]
        other = http.get(f"/v1/jobs/{job['id']}/webhooks", headers=service.as_("b"))
        assert other.status_code == 404
        assert http.get("/v1/webhooks/secret", headers=service.as_("b")).json()["secret"] != secret
