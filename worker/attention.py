"""Decode attention that reads each row's cache from about where its prompt starts.

A padded batch holds every row's cache at the width of its longest prompt, and plain SDPA reads
all of it at every decode step, the left padding of short rows included; with many rows that
read costs as much as the step's arithmetic. Here the rows are cut into spans of neighbours
whose prompts start at about the same column, and each span attends over the columns from its
own first real one. The masked columns it skips add nothing to the result.

The engine names the spans for the ``generate`` calls it makes (``row_spans``); any other
attention call (prefill, or a model used elsewhere) is plain SDPA.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch
from transformers import AttentionInterface, PreTrainedModel
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

NAME = "genq_sdpa"

SPAN_OVERHEAD = 256
"""Cost of one more attention call per layer, in cached positions read."""

Span = tuple[int, int, int]  # rows [start, end) attend over the columns from the third onwards

_spans: ContextVar[tuple[Span, ...] | None] = ContextVar("genq_row_spans", default=None)


def spanned_sdpa(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    spans = _spans.get()
    if spans is None or query.shape[2] != 1 or key.shape[0] != spans[-1][1] or len(spans) == 1:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    outputs = []
    for start, end, column in spans:
        mask = None if attention_mask is None else attention_mask[start:end, ..., column:]
        out, _ = sdpa_attention_forward(
            module,
            query[start:end],
            key[start:end, :, column:],
            value[start:end, :, column:],
            mask,
            **kwargs,
        )
        outputs.append(out)
    return torch.cat(outputs), None


def install(model: PreTrainedModel) -> bool:
    """Switch a model that uses SDPA to the spanned kind; False (and no change) otherwise."""
    if getattr(model.config, "_attn_implementation", None) != "sdpa":
        return False
    AttentionInterface.register(NAME, spanned_sdpa)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)
    model.set_attn_implementation(NAME)
    return True


@contextmanager
def row_spans(spans: tuple[Span, ...] | None) -> Iterator[None]:
    token = _spans.set(spans)
    try:
        yield
    finally:
        _spans.reset(token)


def plan_spans(first_real: Sequence[int]) -> tuple[Span, ...]:
    """Cut rows (given each row's first real column) into spans of neighbours, least cached
    positions read plus a fixed cost per span. Rows keep their order."""
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
    spans: list[Span] = []
    j = n
    while j > 0:
        i = cut[j]
        spans.append((i, j, min(first_real[i:j])))
        j = i
    return tuple(reversed(spans))
