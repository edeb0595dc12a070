"""The batching planner: pure functions from sized requests to batches.

A batch holds ``rows x (padded prompt length + max_new_tokens)`` tokens in memory (the KV cache
grows to that size), so batches are capped by that token budget and a row cap. Within those
limits, a group sorted by prompt length is cut where the estimated decode work is least. The
engine prefills prompts in chunks of near-equal length whatever the batch, so a batch's padding
costs no prefill; it costs reading the padded cache at every decode step. A decode step also
costs about the same for few rows as for many, which pulls towards big batches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import groupby

DEFAULT_STEP_COST = 40
"""Cost of one decode step beyond its rows, in rows: on a CPU a step reads every weight once,
about as long as forty rows' arithmetic. A GPU's is far higher (batching is nearly free)."""

DEFAULT_KV_SPAN = 512
"""Cached positions a row reads in about the time of its arithmetic in one decode step. The
engine's attention skips most of a short row's left padding, so padding costs little."""


@dataclass(frozen=True)
class PlanItem:
    key: str  # maps the batch row back to its request
    group: str  # parameter-set key: only items of one group share a batch
    prompt_tokens: int
    max_new_tokens: int
    rows: int = 1  # num_return_sequences


@dataclass(frozen=True)
class Batch:
    group: str
    items: tuple[PlanItem, ...]

    @property
    def rows(self) -> int:
        return sum(item.rows for item in self.items)

    @property
    def padded_length(self) -> int:
        return max(item.prompt_tokens for item in self.items)

    @property
    def max_new_tokens(self) -> int:
        return max(item.max_new_tokens for item in self.items)

    @property
    def cost(self) -> int:
        return self.rows * (self.padded_length + self.max_new_tokens)

    @property
    def prompt_efficiency(self) -> float:
        """Share of the padded prompt matrix that is real tokens."""
        real = sum(item.prompt_tokens * item.rows for item in self.items)
        return real / max(1, self.rows * self.padded_length)


def batch_cost(rows: int, padded_length: int, max_new_tokens: int) -> int:
    return rows * (padded_length + max_new_tokens)


def plan(
    items: Iterable[PlanItem],
    *,
    max_batch_tokens: int,
    max_batch_size: int,
    step_cost: int = DEFAULT_STEP_COST,
    kv_span: int = DEFAULT_KV_SPAN,
) -> list[Batch]:
    """Group by parameter set, sort each group by prompt length, then cut each group where the
    estimated work is least, within the token budget and the row cap.

    An item too big for the budget on its own still gets a batch of its own: the budget guides
    packing, it does not refuse work (over-length prompts are refused earlier, by validation).
    """

    def work(rows: int, padded_length: int, max_new_tokens: int) -> float:
        return estimated_work(rows, padded_length, max_new_tokens, step_cost, kv_span)

    batches: list[Batch] = []
    by_group = sorted(items, key=lambda item: (item.group, item.prompt_tokens))
    for group, members in groupby(by_group, key=lambda item: item.group):
        batches.extend(_cut(group, list(members), max_batch_tokens, max_batch_size, work))
    return batches


def estimated_work(
    rows: int,
    padded_length: int,
    max_new_tokens: int,
    step_cost: int,
    kv_span: int = DEFAULT_KV_SPAN,
) -> float:
    """Decode work of one batch in row-step units: each of ``max_new_tokens`` steps costs
    ``step_cost`` (reading the weights), one unit per row, and each row's read of its cache
    (padded prompt plus the tokens so far, on average half the new ones)."""
    cached = padded_length + max_new_tokens / 2
    return max_new_tokens * (step_cost + rows * (1 + cached / kv_span))


def _cut(
    group: str,
    members: Sequence[PlanItem],
    max_batch_tokens: int,
    max_batch_size: int,
    work: Callable[[int, int, int], float],
) -> list[Batch]:
    # Members are sorted by length, so the best batches are runs of neighbours: the least total
    # work over the first j members is the best over i of (first i) + (one batch of i..j-1).
    # Runs are bounded by the row cap, so this is O(len(members) x max_batch_size).
    best = [0.0] * (len(members) + 1)
    start = [0] * (len(members) + 1)
    for j in range(1, len(members) + 1):
        length = members[j - 1].prompt_tokens  # the longest of any run ending here
        rows = longest_new = 0
        best[j] = -1.0
        for i in range(j - 1, -1, -1):
            rows += members[i].rows
            longest_new = max(longest_new, members[i].max_new_tokens)
            over = rows > max_batch_size or batch_cost(rows, length, longest_new) > max_batch_tokens
            if over and i < j - 1:
                break
            total = best[i] + work(rows, length, longest_new)
            if best[j] < 0 or total < best[j]:
                best[j], start[j] = total, i
    batches: list[Batch] = []
    j = len(members)
    while j > 0:
        batches.append(Batch(group, tuple(members[start[j] : j])))
        j = start[j]
    return batches[::-1]


PREFILL_OVERHEAD = 64
"""Fixed cost of one prefill forward, in tokens (reading the weights once)."""


def prefill_chunks(lengths: Sequence[int], max_tokens: int) -> list[int]:
    """Sizes of consecutive chunks of ``lengths`` (sorted ascending) for separate prefill
    forwards: the least padded work plus a fixed cost per forward, each chunk within
    ``max_tokens`` padded tokens."""
    items = [PlanItem(str(i), "", length, 0) for i, length in enumerate(lengths)]

    def work(rows: int, padded_length: int, _new: int) -> float:
        return rows * padded_length + PREFILL_OVERHEAD

    cut = _cut("", items, max_tokens, len(items), work)
    return [len(batch.items) for batch in cut]


def split(batch: Batch) -> tuple[Batch, Batch]:
    """Halve a batch (after running out of memory on it)."""
    half = len(batch.items) // 2
    return Batch(batch.group, batch.items[:half]), Batch(batch.group, batch.items[half:])
