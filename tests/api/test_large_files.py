"""Files larger than a stored part, through the HTTP API: uploaded, read back and made a job
exactly as a small one would be, on both databases."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

from sqlalchemy import func, select

from genq.store.files import PART_BYTES
from genq.store.tables import File, FilePart, Job
from tests.api.conftest import Service


def upload(service: Service, content: bytes) -> str:
    answer = service.client.post(
        "/v1/files",
        data={"purpose": "batch"},
        files={"file": ("big.jsonl", content, "application/jsonl")},
        headers=service.as_("a"),
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["bytes"] == len(content)
    return str(answer.json()["id"])


def big_file(lines: int) -> bytes:
    padding = "x" * 60
    rows = [json.dumps({"custom_id": f"r{i}", "prompt": f"{i} {padding}"}) for i in range(lines)]
    rows.append(json.dumps({"custom_id": "r0", "prompt": "the same id as line 1"}))
    return ("\n".join(rows) + "\n").encode()


def test_a_file_of_several_parts_reads_back_and_runs_as_one_job(
    backend_service: Callable[..., Service],
) -> None:
    service = backend_service()
    content = big_file(30_000)
    assert len(content) > 2 * PART_BYTES
    file_id = upload(service, content)
    with service.context.sessions.begin() as session:
        parts = session.scalar(select(func.count()).where(FilePart.file_id == file_id))
    assert parts == len(content) // PART_BYTES + 1
    download = service.client.get(f"/v1/files/{file_id}/content", headers=service.as_("a"))
    assert download.status_code == 200 and download.content == content
    answer = service.client.post(
        "/v1/jobs", json={"input_file_id": file_id}, headers=service.as_("a")
    )
    assert answer.status_code == 202, answer.text
    job = answer.json()
    # Every line a request; the last repeats line 1's id, parts and chunks away, and fails.
    assert job["counts"]["total"] == 30_001
    assert (job["counts"]["failed"], job["counts"]["refused"]) == (1, 1)


def test_a_file_over_the_job_size_is_refused_whole_after_reading(
    backend_service: Callable[..., Service],
) -> None:
    service = backend_service(max_job_requests=20_000)
    file_id = upload(service, big_file(20_000))  # 20,001 lines
    answer = service.client.post(
        "/v1/jobs", json={"input_file_id": file_id}, headers=service.as_("a")
    )
    assert answer.status_code == 422
    assert "at most 20000 lines per job" in answer.json()["error"]["message"]
    with service.context.sessions.begin() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 0


def test_an_upload_over_the_body_limit_is_413_and_stores_no_file(
    make_service: Callable[..., Service],
) -> None:
    service = make_service(max_body_bytes=PART_BYTES)
    boundary = b"--b\r\n"

    def body() -> Iterator[bytes]:  # chunked: the limit is found only as the bytes come
        yield boundary + b'Content-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        yield boundary + b'Content-Disposition: form-data; name="file"; filename="in.jsonl"\r\n'
        yield b"Content-Type: application/jsonl\r\n\r\n"
        for _ in range(64):
            yield b'{"prompt": "x"}\n' * 2048
        yield b"\r\n--b--\r\n"

    headers = {**service.as_("a"), "content-type": "multipart/form-data; boundary=b"}
    answer = service.client.post("/v1/files", content=body(), headers=headers)
    assert answer.status_code == 413, answer.text
    with service.context.sessions.begin() as session:
        assert session.scalar(select(func.count()).select_from(File)) == 0
        assert session.scalar(select(func.count()).select_from(FilePart)) == 0
