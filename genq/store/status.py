"""Request and job status, and the one table of moves between them.

Every status change in the store is a conditional UPDATE whose ``WHERE status IN (...)`` comes
from :func:`sources`, so an illegal move cannot be written even by a query."""

from __future__ import annotations

from enum import StrEnum
from typing import TypeVar

from genq.errors import IllegalTransition


class RequestStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL_REQUEST


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    CANCELLING = "cancelling"  # cancel asked; requests already running may still finish
    COMPLETED = "completed"  # every request ended; some may have failed
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.CANCELLED)


_TERMINAL_REQUEST = frozenset(
    {RequestStatus.SUCCEEDED, RequestStatus.FAILED, RequestStatus.CANCELLED}
)

_R, _J = RequestStatus, JobStatus
# RUNNING -> RUNNING is a takeover of an expired lease; RUNNING -> QUEUED is a release (warm
# shutdown or a retryable error); QUEUED -> FAILED is the reconciler giving up on a request that
# used up its attempts while queued. FAILED -> QUEUED and COMPLETED -> QUEUED are a retry of a
# completed job's failed requests (genq.store.retry), the only way back from an end.
_REQUEST_MOVES: dict[RequestStatus, frozenset[RequestStatus]] = {
    _R.QUEUED: frozenset({_R.RUNNING, _R.CANCELLED, _R.FAILED}),
    _R.RUNNING: frozenset({_R.RUNNING, _R.QUEUED, _R.SUCCEEDED, _R.FAILED, _R.CANCELLED}),
    _R.SUCCEEDED: frozenset(),
    _R.FAILED: frozenset({_R.QUEUED}),
    _R.CANCELLED: frozenset(),
}
_JOB_MOVES: dict[JobStatus, frozenset[JobStatus]] = {
    _J.QUEUED: frozenset({_J.RUNNING, _J.CANCELLING, _J.COMPLETED}),
    _J.RUNNING: frozenset({_J.CANCELLING, _J.COMPLETED}),
    _J.CANCELLING: frozenset({_J.CANCELLED}),
    _J.COMPLETED: frozenset({_J.QUEUED}),
    _J.CANCELLED: frozenset(),
}

S = TypeVar("S", RequestStatus, JobStatus)


def check_transition(old: S, new: S) -> None:
    """Raise :class:`IllegalTransition` unless ``old -> new`` is an allowed move."""
    # The two enums share values ("queued" == "queued"), so the table is picked by type.
    if isinstance(old, RequestStatus):
        kind, allowed = "request", _REQUEST_MOVES[old]
    else:
        kind, allowed = "job", _JOB_MOVES[old]
    if type(new) is not type(old) or new not in allowed:
        raise IllegalTransition(f"a {kind} cannot go from {old} to {new}")


def sources(*old: S, to: S) -> tuple[S, ...]:
    """The states a conditional UPDATE to ``to`` starts from, each checked to be allowed."""
    for state in old:
        check_transition(state, to)
    return old
