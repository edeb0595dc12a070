from __future__ import annotations

import re

from tests.api.conftest import Service
from tests.api.support import prompts, wait_job


def _value(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.M)
    assert match, f"{name} missing from:\n{text}"
    return float(match.group(1))


def test_health_and_readiness(service: Service) -> None:
    assert service.client.get("/healthz").json() == {"status": "ok"}
    ready = service.client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["database"] == "ok"


def test_metrics_move_after_a_job(service: Service) -> None:
    client, a = service.client, service.as_("a")
    job = client.post("/v1/jobs", json=prompts(6), headers=a).json()
    before = client.get("/metrics").text
    assert _value(before, 'genq_queue_depth{model="tiny-gpt2"}') == 6
    assert _value(before, 'genq_requests{status="queued"}') == 6
    assert _value(before, "genq_batch_rows_count") == 0
    assert _value(before, "genq_generated_tokens_per_second") == 0
    service.start_worker()
    wait_job(client, job["id"], a)
    after = client.get("/metrics").text
    assert 'genq_queue_depth{model="tiny-gpt2"}' not in after
    assert _value(after, 'genq_requests{status="succeeded"}') == 6
    assert _value(after, "genq_batch_rows_sum") == 6
    assert _value(after, "genq_batch_rows_count") >= 1
    assert (
        0
        < _value(after, "genq_batch_padding_efficiency_sum")
        <= _value(after, "genq_batch_padding_efficiency_count")
    )
    assert _value(after, "genq_generated_tokens_per_second") == 6 * 4 / 60
    assert _value(after, "genq_job_latency_seconds_count") == 1
    assert _value(after, 'genq_live_workers{model="tiny-gpt2"}') == 1
