"""Choosing each row's next token, every row on its own.

transformers' built-in sampling draws from one global generator for the whole batch, so a
seeded request would give different text depending on its batch company. Here each row owns a
generator, so a seeded row draws the same numbers alone or in any batch, in any order. The
other processors (repetition penalty, banned n-grams, a minimum length) read only the row's
own tokens, never the padding around it. A processor no row asked for costs nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from genq.params import GenerationParams


def row_seed(seed: int, index: int) -> int:
    """Seed for return sequence ``index`` of a request seeded with ``seed``."""
    digest = hashlib.sha256(f"{seed}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


@dataclass
class NGramBans:
    """transformers' no-repeat-n-gram rule over one row's prompt and new tokens."""

    size: int
    tokens: list[int]
    seen: dict[tuple[int, ...], set[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for end in range(self.size, len(self.tokens) + 1):
            self._note(end)

    def add(self, token: int) -> None:
        self.tokens.append(token)
        self._note(len(self.tokens))

    def banned(self) -> list[int]:
        if len(self.tokens) < self.size - 1:
            return []
        head = tuple(self.tokens[len(self.tokens) - self.size + 1 :])
        return sorted(self.seen.get(head, ()))

    def _note(self, end: int) -> None:
        if end >= self.size:
            gram = self.tokens[end - self.size : end]
            self.seen.setdefault(tuple(gram[:-1]), set()).add(gram[-1])


def warp(scores: torch.Tensor, params: GenerationParams) -> torch.Tensor:
    """Temperature, top-k and top-p as transformers applies them, for rows of one setting."""
    if params.temperature is not None and params.temperature != 1.0:
        scores = TemperatureLogitsWarper(params.temperature)(None, scores)  # type: ignore[arg-type]
    if params.top_k is not None:
        scores = TopKLogitsWarper(params.top_k)(None, scores)  # type: ignore[arg-type]
    if params.top_p is not None and params.top_p < 1.0:
        scores = TopPLogitsWarper(params.top_p)(None, scores)  # type: ignore[arg-type]
    return scores


def draw(scores: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
    """One token per row from softmax(scores), with one uniform draw from the row's own
    generator, on the CPU whatever the device: the row's stream of draws depends on nothing but
    its seed."""
    draws = torch.cat([torch.rand(1, generator=g) for g in generators])
    cdf = torch.softmax(scores.float(), dim=-1).cumsum(dim=-1)  # (rows, vocab)
    targets = draws.to(cdf.device).unsqueeze(1) * cdf[:, -1:]
    return torch.searchsorted(cdf, targets, right=True).clamp_(max=cdf.shape[-1] - 1).squeeze(1)


def penalise(scores: torch.Tensor, seen: torch.Tensor, penalty: torch.Tensor) -> torch.Tensor:
    """transformers' repetition penalty, per row: ``seen`` (rows, vocab) marks the row's own
    prompt and new tokens, ``penalty`` (rows, 1) is 1.0 for a row that asked for none."""
    penalised = torch.where(scores < 0, scores * penalty, scores / penalty)
    return torch.where(seen, penalised, scores)


class StopWatch:
    """Whether a row's new text contains one of its stop strings yet."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, stops: Sequence[str]) -> None:
        self.tokenizer = tokenizer
        self.stops = tuple(stops)
        # A character can take several byte-level tokens; this window always covers the longest
        # stop string plus the token that completed it.
        self.window = 4 * max(len(s) for s in stops) + 4

    def hit(self, tokens: Sequence[int]) -> bool:
        tail = self.tokenizer.decode(list(tokens[-self.window :]), skip_special_tokens=True)
        return any(stop in tail for stop in self.stops)


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """The text before the earliest stop string, and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
