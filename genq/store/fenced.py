"""Matching many ``(request_id, fence)`` claims in one statement.

A row-value list, ``(id, fence) IN ((..), (..), ...)``, grows PostgreSQL's expression tree with
every pair: at about ten thousand pairs a statement fails with "stack depth limit exceeded".
A join against a ``VALUES`` table avoids that, but where the table's statistics are stale (a
job just inserted) the planner may loop over every pair for every row. So a claim is matched
by two flat lists instead: its id (the primary key's index finds the rows) and ``id/fence``
(checked by hash on PostgreSQL). A bounded number of claims per statement keeps each under the
driver's limit on bound values: a store write over claims costs one statement per
:data:`KEYS_PER_STATEMENT` of them, whatever the batch's size."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

from sqlalchemy import ColumnElement, String, and_, cast

from genq.store.tables import Request

KEYS_PER_STATEMENT = 5000
"""Claims matched per statement: 2 bound values each, far below the 65,535 one statement may
bind."""

T = TypeVar("T")


def chunks(items: Sequence[T]) -> Iterator[Sequence[T]]:
    """``items`` in runs of at most :data:`KEYS_PER_STATEMENT`."""
    for start in range(0, len(items), KEYS_PER_STATEMENT):
        yield items[start : start + KEYS_PER_STATEMENT]


def among(keys: Sequence[tuple[str, int]]) -> ColumnElement[bool]:
    """Whether a request is one of the claims ``keys`` (at most one statement's worth): its id
    and its fence both."""
    ids = [request_id for request_id, _ in keys]
    tags = [f"{request_id}/{fence}" for request_id, fence in keys]
    tag = Request.id + "/" + cast(Request.fence, String)
    return and_(Request.id.in_(ids), tag.in_(tags))
