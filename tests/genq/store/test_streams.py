"""Million-request intake in the store: files kept in parts, jobs written from a stream."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import delete, func, select

from genq.errors import InvalidRequest, NotFound
from genq.params import GenerationParams
from genq.store import NewRequest, create_job, get_job
from genq.store.files import PART_BYTES, create_file, file_content, read_parts
from genq.store.tables import FilePart, Job, Request
from tests.conftest import Database
from tests.genq.store.support import TENANT


def test_a_file_is_stored_in_parts_and_read_back_whole(store: Database) -> None:
    data = bytes(range(256)) * (PART_BYTES // 256 * 2 + 7)  # two full parts and a bit
    # Chunks of every size: smaller than a part, across a part's end, larger than a part.
    chunks = [data[:10], data[10 : PART_BYTES + 5], data[PART_BYTES + 5 :]]
    with store.sessions.begin() as session:
        info = create_file(session, tenant=TENANT, purpose="batch", filename="in", content=chunks)
    assert info.bytes == len(data)
    with store.sessions.begin() as session:
        sizes = session.scalars(
            select(func.length(FilePart.data)).where(FilePart.file_id == info.id)
        ).all()
        assert sorted(sizes, reverse=True) == [PART_BYTES, PART_BYTES, len(data) - 2 * PART_BYTES]
        assert file_content(session, tenant=TENANT, file_id=info.id) == data
    parts = list(read_parts(store.sessions, tenant=TENANT, file_id=info.id))
    assert b"".join(parts) == data and len(parts) == 3
    with pytest.raises(NotFound):
        read_parts(store.sessions, tenant="someone-else", file_id=info.id)


def test_a_file_deleted_while_it_is_read_ends_in_not_found(store: Database) -> None:
    data = b"x" * (PART_BYTES * 2)
    with store.sessions.begin() as session:
        info = create_file(session, tenant=TENANT, purpose="batch", filename="in", content=data)
    parts = read_parts(store.sessions, tenant=TENANT, file_id=info.id)
    assert next(parts) == data[:PART_BYTES]
    with store.sessions.begin() as session:
        session.execute(delete(FilePart).where(FilePart.file_id == info.id, FilePart.seq == 1))
    with pytest.raises(NotFound, match="deleted while it was read"):
        next(parts)


def requests(n: int, *, fail_at: int | None = None) -> Iterator[NewRequest]:
    for i in range(n):
        if i == fail_at:
            raise InvalidRequest("input_file_id", "line 3: broken")
        yield NewRequest(custom_id=f"c{i}", prompt=f"prompt {i}")


def test_a_job_is_written_from_a_stream_across_chunks(
    store: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("genq.store.db.INSERT_CHUNK", 3)
    monkeypatch.setattr("genq.store.jobs.INSERT_ROWS", 3)
    with store.sessions.begin() as session:
        job_id = create_job(
            session, tenant=TENANT, model="m", params=GenerationParams(), requests=requests(10)
        )
    with store.sessions.begin() as session:
        job = get_job(session, tenant=TENANT, job_id=job_id)
        rows = session.execute(
            select(Request.idx, Request.custom_id).where(Request.job_id == job_id)
        ).all()
    assert (job.total, job.status, job.model) == (10, "queued", "m")
    assert sorted(rows) == [(i, f"c{i}") for i in range(10)]


def test_a_model_the_stream_settles_late_is_every_request_s(
    store: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("genq.store.jobs.INSERT_ROWS", 2)
    asked: list[str] = []

    def stream() -> Iterator[NewRequest]:
        for i in range(7):
            if i == 5:
                asked.append("named")  # the line that names the model comes late
            yield NewRequest(custom_id=f"c{i}", prompt="p")

    def model() -> str:
        return "named-model" if asked else "default-model"

    with store.sessions.begin() as session:
        job_id = create_job(
            session, tenant=TENANT, model=model, params=GenerationParams(), requests=stream()
        )
    with store.sessions.begin() as session:
        models = session.scalars(select(Request.model).where(Request.job_id == job_id)).all()
        assert get_job(session, tenant=TENANT, job_id=job_id).model == "named-model"
    assert models == ["named-model"] * 7


def test_a_stream_that_fails_midway_stores_nothing(
    store: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("genq.store.db.INSERT_CHUNK", 2)
    monkeypatch.setattr("genq.store.jobs.INSERT_ROWS", 2)
    with pytest.raises(InvalidRequest, match="broken"), store.sessions.begin() as session:
        create_job(
            session,
            tenant=TENANT,
            model="m",
            params=GenerationParams(),
            requests=requests(10, fail_at=7),
        )
    with store.sessions.begin() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 0
        assert session.scalar(select(func.count()).select_from(Request)) == 0
