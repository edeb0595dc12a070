"""Attention over the slot cache: each group of rows reads only its own columns.

A decode batch keeps every row in a slot of one cache (``worker.kvslots``), right-aligned at a
shared column, so a short row's slot holds columns it never uses. Plain SDPA over the batch
would read all of them at every step. Here the engine names, for each forward, the spans of
query rows with the slots and columns they read (``planned``); rows of a span are neighbours
whose tokens start at about the same column, and a mask is needed only where they differ.
Columns left out add nothing to the result.

Rows that start with a shared prefix read its keys and values from one copy, for all of them
at once (``_after_prefix``), then their own columns; one softmax covers both.

On the CPU in float32, decode rows without a shared prefix go instead to ``worker.cpu_attention``
(``OwnColumns``): each row reads exactly its own columns, so there is nothing to mask.

Any attention call outside ``planned`` (a model used elsewhere, a shared prefix prefilled on
its own) is plain SDPA.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from transformers import AttentionInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

from worker import cpu_attention

NAME = "genq_sdpa"

SPAN_OVERHEAD = 1024
"""Cost of one more attention call per layer, in cached positions read: on a CPU a call costs
about 100 us, the time to read about a thousand positions of keys and values."""

PLANNED = torch.ones(1, 1, 1, 1, dtype=torch.bool)
"""The attention mask a planned forward passes: 4D, so transformers uses it as it is (and
builds none); the spans carry the real masks."""


@dataclass(frozen=True)
class Span:
    rows: slice  # query rows of the forward (decode: one per batch row)
    slots: slice | torch.Tensor  # their slots in the cache, in the same order
    columns: slice | torch.Tensor  # the key columns they read
    mask: torch.Tensor | None  # (rows, 1, queries, columns): True where a row may attend
    # decode: a shared prefix's keys and values per layer, (kv_heads, length, head_dim), that
    # every row of the span attends to ahead of its own columns
    prefix: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None
    queries: slice = field(default_factory=lambda: slice(None))  # packed prefill: its queries


@dataclass(frozen=True)
class OwnColumns:
    """Decode rows that each read their own slot's columns [start, end), and no others."""

    rows: slice  # query rows of the forward
    slots: np.ndarray  # (rows,) int64
    starts: np.ndarray  # (rows,) int64
    end: int


Plan = tuple["Span | OwnColumns", ...]

_plan: ContextVar[Plan | None] = ContextVar("genq_attention_plan", default=None)


def slot_sdpa(
    module: torch.nn.Module,
    query: torch.Tensor,  # (rows, heads, queries, head_dim)
    key: torch.Tensor,  # (slots, kv_heads, columns, head_dim): the whole cache
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    plan = _plan.get()
    if plan is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    outputs = []
    scaling = kwargs.get("scaling") or query.shape[-1] ** -0.5
    for span in plan:
        if isinstance(span, OwnColumns):
            q = query[span.rows]
            outputs.append(
                cpu_attention.attend(q, key, value, span.slots, span.starts, span.end, scaling)
            )
            continue
        k, v = key[span.slots], value[span.slots]
        if isinstance(span.columns, slice):
            k, v = k[:, :, span.columns], v[:, :, span.columns]
        else:  # a shared prefix and then the span's own tokens: gather just those
            k, v = k.index_select(2, span.columns), v.index_select(2, span.columns)
        q = query[span.rows, :, span.queries]
        if span.prefix is None:
            out, _ = sdpa_attention_forward(module, q, k, v, span.mask, **kwargs)
        else:
            pk, pv = span.prefix[int(module.layer_idx)]  # type: ignore[arg-type]
            out = _after_prefix(q, k, v, span.mask, pk, pv, scaling)
        outputs.append(out)
    if len(outputs) == 1:
        return outputs[0], None
    # outputs are (rows, queries, heads, head_dim): decode spans split rows, prefill queries
    return torch.cat(outputs, dim=0 if query.shape[2] == 1 else 1), None


def _after_prefix(
    query: torch.Tensor,  # (rows, heads, 1, head_dim)
    key: torch.Tensor,  # (rows, kv_heads, columns, head_dim): each row's own columns
    value: torch.Tensor,
    mask: torch.Tensor | None,  # (rows, 1, 1, columns)
    prefix_key: torch.Tensor,  # (kv_heads, length, head_dim): shared by every row
    prefix_value: torch.Tensor,
    scaling: float,
) -> torch.Tensor:
    """One decode step's attention over a shared prefix and then each row's own columns. The
    prefix is one matrix product for all rows (read once, not once per row)."""
    rows, heads, _, dim = query.shape
    kv_heads, length, _ = prefix_key.shape
    groups = heads // kv_heads
    q = query.reshape(rows, kv_heads, groups, dim)
    # (kv_heads, rows x groups, dim) @ (kv_heads, dim, length): the prefix scores
    shared = torch.matmul(q.transpose(0, 1).reshape(kv_heads, rows * groups, dim), prefix_key.mT)
    shared = shared.reshape(kv_heads, rows, groups, length).transpose(0, 1)
    own = torch.matmul(q, key.mT)  # (rows, kv_heads, groups, columns)
    if mask is not None:
        own = own.masked_fill(~mask.reshape(rows, 1, 1, -1), float("-inf"))
    weights = torch.softmax(torch.cat([shared, own], dim=-1) * scaling, dim=-1)
    prefix_weights = weights[..., :length].transpose(0, 1).reshape(kv_heads, rows * groups, length)
    out = torch.matmul(prefix_weights, prefix_value).reshape(kv_heads, rows, groups, dim)
    out = out.transpose(0, 1) + torch.matmul(weights[..., length:], value)
    # as sdpa_attention_forward gives it: (rows, 1, heads, head_dim)
    return out.reshape(rows, heads, 1, dim).transpose(1, 2).contiguous()


def install(model: PreTrainedModel) -> bool:
    """Switch a model that uses SDPA to the slot kind; False (and no change) otherwise."""
    current = getattr(model.config, "_attn_implementation", None)
    if current == NAME:
        return True
    if current != "sdpa":
        return False
    AttentionInterface.register(NAME, slot_sdpa)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)
    model.set_attn_implementation(NAME)
    return True


@contextmanager
def planned(spans: Plan) -> Iterator[None]:
    token = _plan.set(spans)
    try:
        yield
    finally:
        _plan.reset(token)


def plan_spans(first_real: Sequence[int]) -> tuple[tuple[int, int, int], ...]:
    """Cut rows (given each row's first real column) into spans ``(start, end, column)`` of
    neighbours: the least cached positions read plus a fixed cost per span. Rows keep their
    order."""
    n = len(first_real)
    rightmost = max(first_real, default=0)
    best = [0] * (n + 1)
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        column = first_real[j - 1]
        best[j] = -1
        for i in range(j - 1, -1, -1):
            column = min(column, first_real[i])
            # Reading from ``column`` costs (j - i) rows x (columns to the right), counted
            # from the rightmost start (the columns after it every row reads anyway).
            cost = best[i] + (j - i) * (rightmost - column) + SPAN_OVERHEAD
            if best[j] < 0 or cost < best[j]:
                best[j], cut[j] = cost, i
    spans: list[tuple[int, int, int]] = []
    j = n
    while j > 0:
        i = cut[j]
        spans.append((i, j, min(first_real[i:j])))
        j = i
    return tuple(reversed(spans))
