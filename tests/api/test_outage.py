"""While the database cannot be reached every route that needs it answers 503 with
Retry-After, never a 500, and the service recovers by itself once the database is back."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator

import pytest

from tests.api.conftest import Service
from tests.conftest import PgServer, running_pg_server
from tests.worker.conftest import LoadedModel

DOWN_FOR_S = 2.0
RECOVER_WITHIN_S = 10.0


@pytest.fixture
def own_pg() -> Iterator[PgServer]:
    """A server of this test's own, to stop and start."""
    with running_pg_server() as server:
        yield server


def _poll(service: Service, job_id: str) -> list[tuple[int, str | None]]:
    """(status, Retry-After) of one round of the routes clients use."""
    headers = service.as_("a")
    client = service.client
    answers = [
        client.get(f"/v1/jobs/{job_id}", headers=headers),
        client.get(f"/v1/jobs/{job_id}/results", headers=headers),
        client.get("/v1/jobs", headers=headers),
        client.post("/v1/jobs", json={"requests": [{"prompt": "x"}]}, headers=headers),
        client.get("/v1/batches", headers=headers),
        client.get("/metrics"),
    ]
    return [(a.status_code, a.headers.get("retry-after")) for a in answers]


def test_a_database_outage_answers_503_and_recovers(
    own_pg: PgServer, make_service: Callable[..., Service], tiny: LoadedModel
) -> None:
    with own_pg.admin() as conn:
        conn.execute('CREATE DATABASE "outage"')
    # No caches: every poll goes to the database.
    service = make_service(
        database_url=own_pg.url("outage"), key_cache_seconds=0, job_cache_seconds=0
    )
    job_id = service.client.post(
        "/v1/jobs", json={"requests": [{"prompt": "x"}]}, headers=service.as_("a")
    ).json()["id"]
    assert {status for status, _ in _poll(service, job_id)} <= {200, 202}

    own_pg.stop()
    seen: Counter[tuple[int, str | None]] = Counter()
    deadline = time.monotonic() + DOWN_FOR_S
    while time.monotonic() < deadline:
        seen.update(_poll(service, job_id))
    assert set(seen) == {(503, "1")}, seen
    assert service.client.get("/healthz").status_code == 200
    assert service.client.get("/readyz").status_code == 503

    own_pg.start()
    recovered_at = None
    deadline = time.monotonic() + RECOVER_WITHIN_S
    while time.monotonic() < deadline:
        answers = _poll(service, job_id)
        seen.update(answers)
        if {status for status, _ in answers} <= {200, 202}:
            recovered_at = time.monotonic()
            break
    assert recovered_at is not None, seen
    assert {status for status, _ in seen} <= {200, 202, 503}, seen
    assert service.client.get("/readyz").status_code == 200
