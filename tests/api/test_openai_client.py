"""The official openai client, pointed at a live genq server with base_url, unchanged."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import openai
import pytest
from sqlalchemy import update

from genq.store.tables import OpenAIBatch, utcnow
from tests.api.conftest import Service


@pytest.fixture
def live(service: Service, live_url: str) -> Iterator[Callable[[str], openai.OpenAI]]:
    """A factory of clients per tenant of a uvicorn server over the service's app."""
    clients: list[openai.OpenAI] = []

    def make(tenant: str) -> openai.OpenAI:
        client = openai.OpenAI(
            base_url=f"{live_url}/v1", api_key=service.keys[tenant], max_retries=0
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def _lines(endpoint: str, count: int) -> bytes:
    out = []
    for i in range(count):
        body: dict[str, Any] = {"model": "tiny-gpt2", "max_tokens": 3, "temperature": 0}
        if endpoint == "/v1/chat/completions":
            body["messages"] = [{"role": "user", "content": f"Say {i}"}]
        else:
            body["prompt"] = f"Count to {i}:"
        out.append({"custom_id": f"c{i}", "method": "POST", "url": endpoint, "body": body})
    # One bad line: validated alone, reported by line, the rest run.
    out.append({"custom_id": "bad", "method": "POST", "url": endpoint, "body": {"top_k": 3}})
    return "\n".join(json.dumps(o) for o in out).encode() + b"\n"


def _wait(client: openai.OpenAI, batch_id: str, *, until: tuple[str, ...]) -> Any:
    deadline = time.monotonic() + 60
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in until:
            return batch
        assert time.monotonic() < deadline, batch
        time.sleep(0.1)


@pytest.mark.parametrize("endpoint", ["/v1/completions", "/v1/chat/completions"])
def test_upload_create_retrieve_list_download(
    live: Callable[[str], openai.OpenAI], service: Service, tmp_path: Path, endpoint: str
) -> None:
    client = live("a")
    path = tmp_path / "in.jsonl"
    path.write_bytes(_lines(endpoint, 3))
    uploaded = client.files.create(file=path, purpose="batch")
    assert uploaded.bytes == path.stat().st_size
    assert client.files.retrieve(uploaded.id).filename == "in.jsonl"
    assert client.files.content(uploaded.id).content == path.read_bytes()
    batch = client.batches.create(
        input_file_id=uploaded.id,
        endpoint=endpoint,  # type: ignore[arg-type]
        completion_window="24h",
        metadata={"run": "t"},
    )
    assert batch.status == "in_progress"
    assert batch.metadata == {"run": "t"}
    assert batch.errors is not None and batch.errors.data is not None
    assert [(e.line, e.param) for e in batch.errors.data] == [(4, "body.top_k")]
    service.start_worker()
    done = _wait(client, batch.id, until=("completed", "failed"))
    assert done.status == "completed"
    assert done.request_counts is not None
    errors = [json.loads(x) for x in client.files.content(done.error_file_id).text.splitlines()]
    assert errors[0]["custom_id"] == "bad"
    assert "top_k" in errors[0]["response"]["body"]["error"]["message"]
    if "chat" in endpoint:  # tiny-gpt2 has no chat template: each line fails alone, by the worker
        assert (done.request_counts.completed, done.request_counts.failed) == (0, 4)
        assert [e["error"]["code"] for e in errors[1:]] == ["generation_failed"] * 3
        assert "no chat template" in errors[1]["error"]["message"]
        assert done.output_file_id is None
        return
    assert (done.request_counts.total, done.request_counts.completed) == (4, 3)
    assert done.request_counts.failed == 1
    assert done.completed_at is not None and done.output_file_id and done.error_file_id
    assert len(errors) == 1
    output = [json.loads(x) for x in client.files.content(done.output_file_id).text.splitlines()]
    assert [o["custom_id"] for o in output] == ["c0", "c1", "c2"]
    assert all(o["response"]["status_code"] == 200 for o in output)
    assert all(o["response"]["body"]["object"] == "text_completion" for o in output)
    assert all(o["response"]["body"]["usage"]["completion_tokens"] == 3 for o in output)
    from openai.types import Batch, Completion

    for o in output:
        _exact(Completion, o["response"]["body"])
        assert o["response"]["body"]["id"].startswith("cmpl-")
    assert done.model == "tiny-gpt2" and done.usage is not None
    assert done.usage.output_tokens == 9 and done.usage.input_tokens > 0
    assert done.usage.total_tokens == done.usage.input_tokens + 9
    _exact(Batch, client.batches.with_raw_response.retrieve(batch.id).http_response.json())
    listed = client.batches.list(limit=10)
    assert [b.id for b in listed.data] == [batch.id]
    assert live("b").batches.list().data == []
    with pytest.raises(openai.NotFoundError):
        live("b").batches.retrieve(batch.id)


def test_cancel_and_list_pages(live: Callable[[str], openai.OpenAI], tmp_path: Path) -> None:
    client = live("a")
    path = tmp_path / "in.jsonl"
    path.write_bytes(_lines("/v1/completions", 2))
    file_id = client.files.create(file=path, purpose="batch").id
    ids = [
        client.batches.create(
            input_file_id=file_id, endpoint="/v1/completions", completion_window="24h"
        ).id
        for _ in range(3)
    ]
    cancelling = client.batches.cancel(ids[0])
    assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None
    # Nothing was running: the finalizer writes its error file and it ends.
    cancelled = _wait(client, ids[0], until=("cancelled",))
    assert cancelled.finalizing_at is None and cancelled.cancelled_at is not None
    assert cancelled.request_counts is not None and cancelled.request_counts.failed == 3
    assert cancelled.output_file_id is None and cancelled.error_file_id
    # The SDK's auto-pagination follows after=last_id through our pages of 2.
    assert [b.id for b in client.batches.list(limit=2)] == ids[::-1]
    with pytest.raises(openai.UnprocessableEntityError) as bad:
        client.batches.create(
            input_file_id=file_id,
            endpoint="/v1/embeddings",  # type: ignore[arg-type]
            completion_window="24h",
        )
    assert "endpoint" in str(bad.value)


def test_a_batch_past_its_window_expires_keeping_finished_work(
    live: Callable[[str], openai.OpenAI], service: Service, tmp_path: Path
) -> None:
    from genq.store import Choice, Outcome, claim, complete_many

    client = live("a")
    path = tmp_path / "in.jsonl"
    path.write_bytes(_lines("/v1/completions", 3))
    file_id = client.files.create(file=path, purpose="batch").id
    batch = client.batches.create(
        input_file_id=file_id, endpoint="/v1/completions", completion_window="24h"
    )
    with service.context.sessions.begin() as session:  # one request done before the deadline
        [first] = claim(session, worker_id="w", model="tiny-gpt2", lease_seconds=60, limit=1)
        ok = Outcome(choices=(Choice("done", "stop", 1),), prompt_tokens=2)
        complete_many(session, items=[(first.request_id, first.fence, ok)])
        session.execute(
            update(OpenAIBatch)
            .where(OpenAIBatch.id == batch.id)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    # The finalizer cancels its job past the window, writes its files, and it ends expired.
    expired = _wait(client, batch.id, until=("expired",))
    assert expired.expired_at is not None and expired.finalizing_at is not None
    assert expired.request_counts is not None
    assert (expired.request_counts.completed, expired.request_counts.failed) == (1, 3)
    assert expired.output_file_id is not None
    output = client.files.content(expired.output_file_id).text.splitlines()
    assert [json.loads(x)["custom_id"] for x in output] == ["c0"]
    assert json.loads(output[0])["response"]["body"]["choices"][0]["text"] == "done"
    errors = [json.loads(x) for x in client.files.content(expired.error_file_id).text.splitlines()]
    assert sorted(e["error"]["code"] for e in errors if e["error"]) == ["batch_expired"] * 2


def _exact(model: type[Any], data: dict[str, Any]) -> None:
    """``data`` parses as the client's type, with every field the type requires and none it
    does not declare."""
    model.model_validate(data)
    fields = model.model_fields
    required = {name for name, field in fields.items() if field.is_required()}
    assert required <= set(data) <= set(fields), (model.__name__, sorted(data))


def test_models_and_files_through_the_official_client(
    live: Callable[[str], openai.OpenAI], service: Service, tmp_path: Path
) -> None:
    from openai.types import FileDeleted, FileObject, Model

    client, other = live("a"), live("b")
    models = client.models.list()
    names = [m.id for m in models.data]
    assert "tiny-gpt2" in names and "smollm2-135m" in names and len(set(names)) == len(names)
    for raw in client.models.with_raw_response.list().http_response.json()["data"]:
        _exact(Model, raw)
    tiny = client.models.retrieve("tiny-gpt2")
    assert tiny.id == "tiny-gpt2" and tiny.owned_by == "genq" and tiny.created > 0
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("no-such-model")

    path = tmp_path / "in.jsonl"
    path.write_bytes(_lines("/v1/completions", 2))
    ids = [client.files.create(file=path, purpose="batch").id for _ in range(5)]
    assert [f.id for f in client.files.list()] == ids[::-1]  # newest first
    pages = client.files.list(limit=2, order="asc")
    assert [f.id for f in pages.data] == ids[:2] and pages.has_more
    assert [f.id for f in client.files.list(limit=2, order="asc")] == ids  # the client pages on
    assert list(client.files.list(purpose="batch_output")) == []
    assert list(other.files.list()) == []  # another tenant's
    for raw in client.files.with_raw_response.list().http_response.json()["data"]:
        _exact(FileObject, raw)

    with pytest.raises(openai.NotFoundError):
        other.files.delete(ids[0])
    deleted = client.files.with_raw_response.delete(ids[0]).http_response.json()
    _exact(FileDeleted, deleted)
    assert deleted == {"id": ids[0], "object": "file", "deleted": True}
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(ids[0])
    with pytest.raises(openai.NotFoundError):
        client.files.delete(ids[0])
    assert [f.id for f in client.files.list()] == ids[:0:-1]
