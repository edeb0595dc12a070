"""The batch finalizer: a poll only reads (a batch whose job ended reads as finalizing until the
finalizer has written its files), the files are written once in the transaction that ends the
batch, and a finalizer that fails midway or loses its lease leaves nothing behind."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from genq import batch_finalizer
from genq.batch_finalizer import finalize_pass
from genq.store import Choice, Outcome, claim, complete_many
from genq.store.tables import File, OpenAIBatch, utcnow
from tests.api.conftest import Service
from tests.api.test_fair_sharing import batch_body, openai_line, upload


@pytest.fixture
def quiet(make_service: Callable[..., Service]) -> Service:
    """A service whose batches move only when a test runs a pass."""
    return make_service(finalize=False)


def ended_batch(service: Service, n: int = 2) -> str:
    """A batch of ``n`` lines whose job has completed (done here, not by a worker)."""
    a = service.as_("a")
    file_id = upload(service, "a", [openai_line(i) for i in range(n)])
    batch = service.client.post("/v1/batches", json=batch_body(file_id), headers=a).json()
    with service.context.sessions.begin() as session:
        claims = claim(session, worker_id="w", model="tiny-gpt2", lease_seconds=60)
        done = Outcome(choices=(Choice("ok", "stop", 1),), prompt_tokens=2)
        complete_many(session, items=[(c.request_id, c.fence, done) for c in claims])
    return str(batch["id"])


def files(service: Service) -> int:
    with service.context.sessions.begin() as session:
        return int(session.scalar(select(func.count()).select_from(File)) or 0)


def read(service: Service, batch_id: str) -> dict[str, object]:
    answer = service.client.get(f"/v1/batches/{batch_id}", headers=service.as_("a"))
    assert answer.status_code == 200
    return dict(answer.json())


def test_a_poll_reads_and_the_finalizer_writes(quiet: Service) -> None:
    batch_id = ended_batch(quiet)
    before = files(quiet)
    for _ in range(3):  # however often it is polled, a poll writes nothing
        seen = read(quiet, batch_id)
        assert seen["status"] == "finalizing" and seen["output_file_id"] is None
        assert seen["finalizing_at"] is not None and seen["completed_at"] is None
    assert files(quiet) == before
    assert finalize_pass(quiet.context.sessions) == 2  # finalizing, then completed
    done = read(quiet, batch_id)
    assert done["status"] == "completed" and done["output_file_id"] is not None
    assert done["finalizing_at"] <= done["completed_at"]  # type: ignore[operator]
    assert files(quiet) == before + 1  # the output file; no error file for no errors
    assert finalize_pass(quiet.context.sessions) == 0  # written once
    assert files(quiet) == before + 1


def test_a_finalizer_that_fails_midway_leaves_nothing_and_the_next_one_writes(
    quiet: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch_id = ended_batch(quiet, n=3)
    before = files(quiet)
    real = batch_finalizer.write_files

    def dies(session, row, final, *, now):  # type: ignore[no-untyped-def]
        real(session, row, final, now=now)  # every part written, in its transaction...
        raise RuntimeError("killed")  # ...then gone before the batch ends

    monkeypatch.setattr(batch_finalizer, "write_files", dies)
    with pytest.raises(RuntimeError):
        finalize_pass(quiet.context.sessions, lease_seconds=0.0)
    assert files(quiet) == before  # rolled back with the transaction
    assert read(quiet, batch_id)["status"] == "finalizing"
    monkeypatch.setattr(batch_finalizer, "write_files", real)
    finalize_pass(quiet.context.sessions)  # its lease (0 s here) has run out
    done = read(quiet, batch_id)
    assert done["status"] == "completed" and files(quiet) == before + 1
    content = quiet.client.get(
        f"/v1/files/{done['output_file_id']}/content", headers=quiet.as_("a")
    )
    assert len(content.text.splitlines()) == 3


def test_a_finalizer_that_lost_its_lease_writes_nothing(
    quiet: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch_id = ended_batch(quiet)
    before = files(quiet)
    real = batch_finalizer.write_files

    def overtaken(session, row, final, *, now):  # type: ignore[no-untyped-def]
        real(session, row, final, now=now)
        # Another finalizer took the batch meanwhile (this one's lease had run out): what
        # this transaction's last UPDATE finds, seen from inside it.
        session.execute(
            update(OpenAIBatch)
            .where(OpenAIBatch.id == batch_id)
            .values(finalize_until=utcnow() + timedelta(hours=1))
        )

    monkeypatch.setattr(batch_finalizer, "write_files", overtaken)
    assert finalize_pass(quiet.context.sessions) == 1  # finalizing; the write rolled back
    assert files(quiet) == before
    seen = read(quiet, batch_id)
    assert seen["status"] == "finalizing" and seen["output_file_id"] is None
