from __future__ import annotations

import pytest

from genq.errors import IllegalTransition
from genq.store.status import JobStatus, RequestStatus, check_transition, sources

R, J = RequestStatus, JobStatus


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (R.QUEUED, R.RUNNING),
        (R.QUEUED, R.CANCELLED),
        (R.RUNNING, R.RUNNING),  # takeover of an expired lease
        (R.RUNNING, R.QUEUED),  # release
        (R.RUNNING, R.SUCCEEDED),
        (R.RUNNING, R.FAILED),
        (R.FAILED, R.QUEUED),  # a retry of a completed job's failures
        (J.QUEUED, J.RUNNING),
        (J.RUNNING, J.CANCELLING),
        (J.RUNNING, J.COMPLETED),
        (J.CANCELLING, J.CANCELLED),
        (J.COMPLETED, J.QUEUED),  # the retry
    ],
)
def test_allowed_moves(old: RequestStatus | JobStatus, new: RequestStatus | JobStatus) -> None:
    check_transition(old, new)  # type: ignore[type-var]
    assert sources(old, to=new) == (old,)  # type: ignore[type-var]


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (R.QUEUED, R.SUCCEEDED),  # a result needs a claim
        (R.QUEUED, R.QUEUED),
        (R.SUCCEEDED, R.FAILED),
        (R.SUCCEEDED, R.RUNNING),
        (R.FAILED, R.RUNNING),  # a retry queues first
        (R.CANCELLED, R.RUNNING),
        (R.CANCELLED, R.QUEUED),
        (J.CANCELLED, J.QUEUED),  # only a completed job is retried
        (J.COMPLETED, J.CANCELLING),
        (J.CANCELLED, J.RUNNING),
        (J.CANCELLING, J.COMPLETED),  # a cancel, once asked, ends cancelled
        (J.RUNNING, J.QUEUED),
    ],
)
def test_refused_moves(old: RequestStatus | JobStatus, new: RequestStatus | JobStatus) -> None:
    with pytest.raises(IllegalTransition, match=f"from {old} to {new}"):
        check_transition(old, new)  # type: ignore[type-var]


def test_a_request_status_is_not_a_job_status() -> None:
    # The enums share the value "queued": the check must not confuse them.
    with pytest.raises(IllegalTransition):
        check_transition(R.QUEUED, J.RUNNING)  # type: ignore[type-var]


def test_sources_refuses_any_illegal_start() -> None:
    with pytest.raises(IllegalTransition, match="from succeeded to cancelled"):
        sources(R.QUEUED, R.SUCCEEDED, to=R.CANCELLED)


def test_terminal_states() -> None:
    assert [s for s in R if s.is_terminal] == [R.SUCCEEDED, R.FAILED, R.CANCELLED]
    assert [s for s in J if s.is_terminal] == [J.COMPLETED, J.CANCELLED]
    assert IllegalTransition.status_code == 409
