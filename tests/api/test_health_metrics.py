from __future__ import annotations

import re
from collections.abc import Callable

from fastapi.testclient import TestClient

from api.app import create_app
from genq.store import BatchRecord, record_batch
from tests.api.conftest import Service
from tests.api.support import prompts, wait_job


def _value(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.M)
    assert match, f"{name} missing from:\n{text}"
    return float(match.group(1))


def _histogram(text: str, name: str) -> dict[str, float]:
    """A histogram's buckets by bound, with ``sum`` and ``count``."""
    found = {
        m.group(1): float(m.group(2))
        for m in re.finditer(rf'^{re.escape(name)}_bucket{{le="([^"]+)"}} (\S+)$', text, re.M)
    }
    return found | {key: _value(text, f"{name}_{key}") for key in ("sum", "count")}


def _delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {key: round(after[key] - before[key], 9) for key in after}


def _record(service: Service, *shapes: tuple[int, float]) -> None:
    """Batches of (rows, prompt efficiency), as workers record them."""
    with service.context.sessions.begin() as session:
        for rows, efficiency in shapes:
            batch = BatchRecord("w", "tiny-gpt2", "g", rows, 8, efficiency, 0.1, ())
            record_batch(session, batch=batch)


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
    assert _value(after, 'genq_queue_depth{model="tiny-gpt2"}') == 0  # a sample, though empty
    assert _value(after, 'genq_requests{status="succeeded"}') == 6
    done = 'genq_requests_finished_total{model="tiny-gpt2",status="succeeded"}'
    assert _value(before, done) == 0 and _value(after, done) == 6
    assert _value(after, 'genq_completion_tokens_total{model="tiny-gpt2"}') > 0
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


def test_a_scrape_moves_the_batch_histograms_by_exactly_the_new_batches(
    make_service: Callable[..., Service],
) -> None:
    service = make_service()
    rows, eff = "genq_batch_rows", "genq_batch_padding_efficiency"
    _record(service, (4, 0.5))
    first = service.client.get("/metrics").text
    assert (_value(first, f"{rows}_count"), _value(first, f"{rows}_sum")) == (1, 4)
    _record(service, (1, 0.95), (64, 0.7), (300, 1.0))
    second = service.client.get("/metrics").text
    row_bounds = ("1", "2", "4", "8", "16", "32", "64", "128", "256", "+Inf")
    assert _delta(_histogram(first, rows), _histogram(second, rows)) == dict(
        zip(row_bounds, (1, 1, 1, 1, 1, 1, 2, 2, 2, 3), strict=True)
    ) | {"sum": 365, "count": 3}
    eff_bounds = ("0.25", "0.5", "0.6", "0.7", "0.8", "0.9", "0.95", "1.0", "+Inf")
    assert _delta(_histogram(first, eff), _histogram(second, eff)) == dict(
        zip(eff_bounds, (0, 0, 0, 1, 1, 1, 2, 3, 3), strict=True)
    ) | {"sum": 2.65, "count": 3}
    third = service.client.get("/metrics").text
    for name in (rows, eff):  # nothing new: nothing moves
        assert _histogram(third, name) == _histogram(second, name)
    # A restarted API process catches up on its first scrape: the same counts.
    with TestClient(create_app(service.context)) as restarted:
        again = restarted.get("/metrics").text
    for name in (rows, eff):
        assert _histogram(again, name) == _histogram(second, name)


def test_a_metrics_token_guards_the_scrape(make_service: Callable[..., Service]) -> None:
    token = "scrape-token-0123456789"
    service = make_service(metrics_token=token)
    client = service.client
    assert client.get("/metrics").status_code == 401
    wrong = client.get("/metrics", headers={"Authorization": "Bearer nope-nope-nope-nope"})
    assert wrong.status_code == 401 and "GENQ_METRICS_TOKEN" in wrong.json()["error"]["message"]
    assert (
        client.get("/metrics", headers=service.as_("a")).status_code == 401
    )  # an API key is not it
    good = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert good.status_code == 200 and "genq_queue_depth" in good.text
    assert make_service().client.get("/metrics").status_code == 200  # unset: open, as before
