"""Every route that names a resource answers 404 to another tenant, and every route but health
and metrics needs a key. The routes are walked from the app, so a new one is covered too."""

from __future__ import annotations

import io
import json
import re

from tests.api.conftest import Service
from tests.api.support import prompts

OPEN = {"/healthz", "/readyz", "/metrics"}
SHARED = {"/v1/models/{model}"}  # the deployment's models, the same for every tenant


def _routes(service: Service) -> list[tuple[str, str]]:
    paths = service.client.app.openapi()["paths"]  # type: ignore[attr-defined]
    routes = [(method.upper(), path) for path, ops in paths.items() for method in sorted(ops)]
    return sorted(routes, key=lambda route: route[0] == "DELETE")  # deletes last: they remove


def _resources(service: Service, tenant: str) -> dict[str, str]:
    client, headers = service.client, service.as_(tenant)
    ids = {"job_id": client.post("/v1/jobs", json=prompts(2), headers=headers).json()["id"]}
    ids["model"] = "tiny-gpt2"
    body = {"prompt": "hi", "max_tokens": 2}
    line = json.dumps({"custom_id": "x", "method": "POST", "url": "/v1/completions", "body": body})
    line += "\n"

    upload = client.post(
        "/v1/files",
        files={"file": ("in.jsonl", io.BytesIO(line.encode()))},
        data={"purpose": "batch"},
        headers=headers,
    )
    if upload.status_code == 200:
        ids["file_id"] = upload.json()["id"]
        batch = client.post(
            "/v1/batches",
            json={
                "input_file_id": ids["file_id"],
                "endpoint": "/v1/completions",
                "completion_window": "24h",
            },
            headers=headers,
        )
        ids["batch_id"] = batch.json()["id"]
    return ids


def test_another_tenants_ids_answer_404_on_every_route(service: Service) -> None:
    owned = _resources(service, "a")
    checked = []
    for method, path in _routes(service):
        names = re.findall(r"{(\w+)}", path)
        if not names or path in SHARED:
            continue
        url = path.format(**owned)
        answer = service.client.request(method, url, headers=service.as_("b"))
        assert answer.status_code == 404, (method, url, answer.text)
        assert answer.json()["error"]["type"] == "not_found_error"
        # The owner gets it (or a 409 for a cancel of a finished thing, never a 404).
        mine = service.client.request(method, url, headers=service.as_("a"))
        assert mine.status_code in (200, 409), (method, url, mine.text)
        checked.append((method, path))
    assert ("GET", "/v1/jobs/{job_id}") in checked
    assert ("POST", "/v1/jobs/{job_id}/cancel") in checked
    assert len(checked) >= 3


def test_lists_show_only_the_callers_own(service: Service) -> None:
    owned = _resources(service, "a")
    for path, key in (
        ("/v1/jobs", "job_id"),
        ("/v1/batches", "batch_id"),
        ("/v1/files", "file_id"),
    ):
        if key not in owned:
            continue
        theirs = service.client.get(path, headers=service.as_("b")).json()["data"]
        assert theirs == []
        mine = service.client.get(path, headers=service.as_("a")).json()["data"]
        assert owned[key] in [item["id"] for item in mine]


def test_every_route_but_health_needs_a_key(service: Service) -> None:
    owned = _resources(service, "a")
    for method, path in _routes(service):
        if path in OPEN:
            continue
        url = path.format(**owned)
        for headers in ({}, {"Authorization": "Bearer gq_wrong"}, {"Authorization": "Basic x"}):
            answer = service.client.request(method, url, headers=headers)
            assert answer.status_code == 401, (method, url, headers, answer.text)
