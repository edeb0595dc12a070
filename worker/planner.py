"""The batching planner: pure functions from sized requests to batches.

A batch costs ``rows x (padded prompt length + max_new_tokens)`` tokens of work and memory (the
KV cache grows to that size), so batches are cut by that token budget and a row cap. Sorting a
group by prompt length first keeps padding small.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import groupby


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


def plan(items: Iterable[PlanItem], *, max_batch_tokens: int, max_batch_size: int) -> list[Batch]:
    """Group by parameter set, sort each group by prompt length, cut by budget and row cap.

    An item too big for the budget on its own still gets a batch of its own: the budget guides
    packing, it does not refuse work (over-length prompts are refused earlier, by validation).
    """
    batches: list[Batch] = []
    by_group = sorted(items, key=lambda item: (item.group, item.prompt_tokens))
    for group, members in groupby(by_group, key=lambda item: item.group):
        batches.extend(_cut(group, list(members), max_batch_tokens, max_batch_size))
    return batches


def _cut(
    group: str, members: Sequence[PlanItem], max_batch_tokens: int, max_batch_size: int
) -> list[Batch]:
    batches: list[Batch] = []
    current: list[PlanItem] = []
    rows = longest_new = 0
    for item in members:  # ascending length: the newcomer sets the padded length
        new_rows = rows + item.rows
        new_longest = max(longest_new, item.max_new_tokens)
        cost = batch_cost(new_rows, item.prompt_tokens, new_longest)
        if current and (cost > max_batch_tokens or new_rows > max_batch_size):
            batches.append(Batch(group, tuple(current)))
            current, new_rows, new_longest = [], item.rows, item.max_new_tokens
        current.append(item)
        rows, longest_new = new_rows, new_longest
    if current:
        batches.append(Batch(group, tuple(current)))
    return batches


def split(batch: Batch) -> tuple[Batch, Batch]:
    """Halve a batch (after running out of memory on it)."""
    half = len(batch.items) // 2
    return Batch(batch.group, batch.items[:half]), Batch(batch.group, batch.items[half:])
