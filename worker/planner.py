"""The batching planner: pure functions that size and feed the continuous decode batch.

A decode batch holds ``slots x capacity`` tokens of KV cache, so its shape comes from a token
budget and a row cap. Rows join as others finish, their prompts packed into prefill forwards
of a token budget; prompts that share a long token prefix have that prefix prefilled once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

PREFIX_BLOCK = 16
"""Shared prefixes are found in whole blocks of this many tokens."""

MIN_PREFIX_TOKENS = 64
"""A shorter shared prefix is not worth a forward and the copies of its own."""

ADMIT_FRACTION = 8
"""A running batch admits once a 1/8 of its slots are free: a prefill forward has a fixed cost
(reading every weight once), so a few rows at a time would pay it too often."""


@dataclass(frozen=True)
class Layout:
    slots: int  # rows the batch can hold
    capacity: int  # cache columns per slot
    column: int  # where the live rows' tokens end


def layout(
    *,
    live_lengths: Sequence[int],
    longest_prompt: int,
    max_new_tokens: int,
    max_rows: int,
    max_tokens: int,
    min_rows: int = 1,
) -> Layout:
    """A cache for rows of prompts up to ``longest_prompt`` tokens and ``max_new_tokens`` new
    ones, keeping rows that already hold ``live_lengths`` tokens. Room for twice the new tokens
    after the column, so rows admitted later fit for a while before the next relayout. Never
    fewer slots than the live rows plus ``min_rows`` (the next request's return sequences)."""
    column = max([longest_prompt, *live_lengths])
    capacity = column + 2 * max_new_tokens
    slots = max(len(live_lengths) + min_rows, min(max_rows, max_tokens // (capacity + 1)))
    return Layout(slots=slots, capacity=capacity, column=column)


def should_admit(*, free: int, slots: int, live: int) -> bool:
    return free > 0 and (live == 0 or free * ADMIT_FRACTION >= slots)


def chunk_size(lengths: Sequence[int], *, free: int, max_tokens: int) -> int:
    """How many of the next prompts (``lengths``, in admission order) one packed prefill
    takes: as many as there are free slots, within ``max_tokens`` tokens, and at least one."""
    taken = total = 0
    for length in lengths[:free]:
        if taken and total + length > max_tokens:
            break
        taken, total = taken + 1, total + length
    return taken


def shared_prefixes(
    prompts: Sequence[Sequence[int]],
    *,
    known: frozenset[tuple[int, ...]] = frozenset(),
    block: int = PREFIX_BLOCK,
    min_tokens: int = MIN_PREFIX_TOKENS,
) -> list[int]:
    """For each prompt, how many of its first tokens to take from a shared prefix (0: none):
    the longest whole-block prefix that at least half the prompts sharing its first
    ``min_tokens`` share too (two at least), or that is ``known`` (already prefilled). Fewer,
    widely shared prefixes beat many nested ones: each distinct prefix is read on its own at
    every decode step. At least one token is always left to prefill, whose logits give the first
    new token."""
    counts: dict[tuple[int, ...], int] = {}
    for prompt in prompts:
        for end in range(block, len(prompt), block):
            head = tuple(prompt[:end])
            counts[head] = counts.get(head, 0) + 1
    known_lengths = sorted({len(k) for k in known}, reverse=True)
    lengths = []
    first = -(-min_tokens // block) * block  # the first block end at or past min_tokens
    for prompt in prompts:
        best = 0
        if first < len(prompt):
            enough = max(2, counts[tuple(prompt[:first])] // 2)
            for end in range(first, len(prompt), block):
                if counts[tuple(prompt[:end])] < enough:
                    break
                best = end
        kept = (n for n in known_lengths if n < len(prompt) and tuple(prompt[:n]) in known)
        best = max(best, next(kept, 0))
        lengths.append(best)
    return lengths
