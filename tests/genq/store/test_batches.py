from __future__ import annotations

from genq.store import BatchRecord, list_batches, record_batch
from tests.conftest import Database
from tests.genq.store.support import MODEL, at


def batch(worker_id: str, *ids: str, refused: int = 0) -> BatchRecord:
    return BatchRecord(
        worker_id=worker_id,
        model=MODEL,
        group_key="ps_0123456789abcdef",
        rows=len(ids),
        padded_length=12,
        prompt_efficiency=0.75,
        seconds=0.5,
        request_ids=ids,
        refused=refused,
    )


def test_batches_read_back_in_the_order_written(store: Database) -> None:
    with store.sessions.begin() as session:
        first = record_batch(session, batch=batch("w1", "req_a", "req_b"), now=at(1))
        second = record_batch(session, batch=batch("w2", "req_c", refused=1), now=at(2))
    assert second > first
    with store.sessions.begin() as session:
        every = list_batches(session)
        later = list_batches(session, after_id=first)
    assert every == [
        BatchRecord(**{**batch("w1", "req_a", "req_b").__dict__, "id": first, "created_at": at(1)}),
        BatchRecord(
            **{**batch("w2", "req_c", refused=1).__dict__, "id": second, "created_at": at(2)}
        ),
    ]
    assert later == every[1:]
