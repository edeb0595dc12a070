"""Bad input answers 4xx with a message naming the field, and stores nothing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from genq.store.tables import Job, Request
from tests.api.conftest import Service

OK_REQUEST = {"prompt": "hello"}


def job(**fields: Any) -> dict[str, Any]:
    return {"requests": [OK_REQUEST], **fields}


CASES: list[tuple[str, Any, int, str]] = [
    # (name, JSON body or raw bytes, status, text the message must hold)
    ("malformed json", b'{"requests": [', 400, "body: malformed JSON"),
    ("not an object", [1, 2], 422, "body"),
    ("requests missing", {"params": {}}, 422, "requests: give requests, or input_file_id"),
    ("requests not a list", {"requests": "hello"}, 422, "requests:"),
    ("no requests", {"requests": []}, 422, "requests: a job needs at least one request"),
    ("unknown top field", job(colour="red"), 422, "colour: unknown field"),
    ("unknown request field", {"requests": [{"prompt": "x", "n": 2}]}, 422, "requests.0.n"),
    ("prompt wrong type", {"requests": [{"prompt": 5}]}, 422, "requests.0.prompt"),
    ("empty prompt", {"requests": [OK_REQUEST, {"prompt": ""}]}, 422, "requests.1.prompt"),
    ("neither prompt nor messages", {"requests": [{"custom_id": "a"}]}, 422, "requests.0:"),
    (
        "both prompt and messages",
        {"requests": [{"prompt": "x", "messages": [{"role": "user", "content": "x"}]}]},
        422,
        "exactly one of prompt or messages",
    ),
    ("empty messages", {"requests": [{"messages": []}]}, 422, "requests.0.messages"),
    (
        "message without content",
        {"requests": [{"messages": [{"role": "user"}]}]},
        422,
        "requests.0.messages.0.content",
    ),
    (
        "custom_id too long",
        {"requests": [{"prompt": "x", "custom_id": "c" * 300}]},
        422,
        "requests.0.custom_id",
    ),
    ("params not an object", job(params=[1]), 422, "params:"),
    ("unknown parameter", job(params={"beams": 2}), 422, "params.beams: unknown parameter"),
    ("negative max_new_tokens", job(params={"max_new_tokens": -1}), 422, "params.max_new_tokens"),
    ("top_p out of range", job(params={"do_sample": True, "top_p": 2}), 422, "params.top_p"),
    (
        "sampling knob when greedy",
        job(params={"temperature": 0.5}),
        422,
        "params.temperature: temperature only applies when do_sample is true",
    ),
    (
        "min above max",
        job(params={"max_new_tokens": 2, "min_new_tokens": 5}),
        422,
        "params.min_new_tokens",
    ),
    ("unknown model", job(model="no-such-model"), 404, "model: unknown model 'no-such-model'"),
    ("model with spaces", job(model="a b"), 422, "model: must be 1 to 200 printable"),
    ("metadata wrong type", job(metadata={"k": 1}), 422, "metadata.k"),
    ("too many requests", {"requests": [OK_REQUEST] * 4}, 422, "requests: at most 3 requests"),
]


def _count(service: Service) -> tuple[int, int]:
    with service.context.sessions.begin() as session:
        return (
            session.scalar(select(func.count()).select_from(Job)) or 0,
            session.scalar(select(func.count()).select_from(Request)) or 0,
        )


@pytest.fixture
def capped(make_service: Any) -> Service:
    service: Service = make_service(max_job_requests=3, max_body_bytes=4096)
    return service


@pytest.mark.parametrize(("name", "body", "status", "text"), CASES, ids=[c[0] for c in CASES])
def test_bad_job_is_refused_by_field(
    capped: Service, name: str, body: Any, status: int, text: str
) -> None:
    headers = {**capped.as_("a"), "content-type": "application/json"}
    if isinstance(body, bytes):
        answer = capped.client.post("/v1/jobs", content=body, headers=headers)
    else:
        answer = capped.client.post("/v1/jobs", json=body, headers=capped.as_("a"))
    assert answer.status_code == status, answer.text
    assert text in answer.json()["error"]["message"]
    assert _count(capped) == (0, 0)


def test_a_good_job_still_passes_the_same_checks(capped: Service) -> None:
    answer = capped.client.post(
        "/v1/jobs", json={"requests": [OK_REQUEST] * 3}, headers=capped.as_("a")
    )
    assert answer.status_code == 202, answer.text
    assert _count(capped) == (1, 3)


def test_an_oversize_declared_body_is_413(capped: Service) -> None:
    body = {"requests": [{"prompt": "x" * 5000}]}
    answer = capped.client.post("/v1/jobs", json=body, headers=capped.as_("a"))
    assert answer.status_code == 413
    assert "larger than 4096 bytes" in answer.json()["error"]["message"]
    assert _count(capped) == (0, 0)


def test_an_oversize_streamed_body_is_413_whatever_its_header_says(capped: Service) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: sent chunked
        yield b'{"requests": [{"prompt": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}]}'

    headers = {**capped.as_("a"), "content-type": "application/json"}
    answer = capped.client.post("/v1/jobs", content=chunks(), headers=headers)
    assert answer.status_code == 413
    assert _count(capped) == (0, 0)


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "query.limit"),
        ("limit=5000", "query.limit"),
        ("after=x", "query.after"),
        ("format=xml", "query.format"),
    ],
)
def test_bad_query_parameters_are_422_by_name(capped: Service, query: str, field: str) -> None:
    job_id = capped.client.post("/v1/jobs", json=job(), headers=capped.as_("a")).json()["id"]
    answer = capped.client.get(f"/v1/jobs/{job_id}/results?{query}", headers=capped.as_("a"))
    assert answer.status_code == 422
    assert answer.json()["error"]["message"].startswith(field)
