"""Logits processors and stopping criteria that treat every row on its own.

transformers' built-in sampling draws from one global generator for the whole batch, so a
seeded request would give different text depending on its batch company. Here each row owns a
generator, so a seeded row draws the same numbers alone or in any batch, in any order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import cast

import torch
from transformers import (
    LogitsProcessor,
    StoppingCriteria,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)
from transformers.tokenization_utils_base import PreTrainedTokenizerBase


def row_seed(seed: int, index: int) -> int:
    """Seed for return sequence ``index`` of a request seeded with ``seed``."""
    digest = hashlib.sha256(f"{seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


class RowSampler(LogitsProcessor):
    """Warps and samples each row with its own generator; leaves only the drawn token finite,
    so generate's greedy step picks it."""

    def __init__(
        self,
        seeds: Sequence[int],
        *,
        temperature: float | None,
        top_k: int | None,
        top_p: float | None,
    ) -> None:
        self.generators = [torch.Generator().manual_seed(seed) for seed in seeds]
        self.warpers: list[LogitsProcessor] = []
        if temperature is not None and temperature != 1.0:
            self.warpers.append(TemperatureLogitsWarper(temperature))
        if top_k is not None:
            self.warpers.append(TopKLogitsWarper(top_k))
        if top_p is not None and top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(top_p))

    def select(self, keep: Sequence[int]) -> None:
        self.generators = [self.generators[j] for j in keep]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for warper in self.warpers:
            scores = warper(input_ids, scores)
        # One uniform draw per row per step, on the CPU, whatever the device: the row's stream
        # of draws depends on nothing but its seed.
        draws = torch.cat([torch.rand(1, generator=g) for g in self.generators])
        cdf = torch.softmax(scores.float(), dim=-1).cumsum(dim=-1)  # (rows, vocab)
        targets = draws.to(cdf.device).unsqueeze(1) * cdf[:, -1:]
        tokens = torch.searchsorted(cdf, targets, right=True).clamp_(max=cdf.shape[-1] - 1)
        picked = torch.full_like(scores, float("-inf"))
        return cast(torch.FloatTensor, picked.scatter_(1, tokens, 0.0))


class RepetitionPenalty(LogitsProcessor):
    """transformers' repetition penalty, minus the left padding: the stock one also penalises
    the pad token (EOS for GPT-2) in padded rows only, which makes output depend on the batch."""

    def __init__(self, penalty: float, first_real: torch.Tensor) -> None:
        self.penalty = penalty
        self.first_real = first_real  # (rows,) index of each row's first non-pad position

    def select(self, keep: Sequence[int]) -> None:
        self.first_real = self.first_real[list(keep)]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        real = positions.unsqueeze(0) >= self.first_real.to(input_ids.device).unsqueeze(1)
        seen = torch.zeros_like(scores).scatter_add_(1, input_ids, real.to(scores.dtype)) > 0
        penalised = torch.where(scores < 0, scores * self.penalty, scores / self.penalty)
        return cast(torch.FloatTensor, torch.where(seen, penalised, scores))


class StopStrings(StoppingCriteria):
    """Marks a row done once its new text contains one of its stop strings, and remembers after
    how many new tokens, so the completion token count is exact."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        stops: Sequence[tuple[str, ...]],
        prompt_length: int,
    ) -> None:
        self.tokenizer = tokenizer
        self.stops = stops
        self.prompt_length = prompt_length
        # A character can take several byte-level tokens; this window always covers the longest
        # stop string plus the token that completed it.
        self.window = 4 * max((len(s) for row in stops for s in row), default=0) + 4
        self.stopped_at: list[int | None] = [None] * len(stops)

    def select(self, keep: Sequence[int]) -> None:
        self.stops = [self.stops[j] for j in keep]
        self.stopped_at = [self.stopped_at[j] for j in keep]

    def __call__(
        self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: object
    ) -> torch.BoolTensor:
        generated = input_ids.shape[1] - self.prompt_length
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        for row, stops in enumerate(self.stops):
            if not stops:
                continue
            if self.stopped_at[row] is not None:
                done[row] = True
                continue
            start = max(self.prompt_length, input_ids.shape[1] - self.window)
            tail = self.tokenizer.decode(input_ids[row, start:], skip_special_tokens=True)
            if any(stop in tail for stop in stops):
                self.stopped_at[row] = generated
                done[row] = True
        return done  # type: ignore[return-value]


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """The text before the earliest stop string, and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
