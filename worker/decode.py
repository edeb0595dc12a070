"""The decode batch: rows in the slots of one KV cache, stepped together, joining and leaving
between steps (continuous batching).

Every forward is one of two kinds, and both go through ``Forward`` (the engine's model call):
``admit`` prefills new rows' prompts, packed into one sequence with no padding, into free
slots; ``step`` feeds every live row its last token and picks the next. Each row's tokens sit
right-aligned at ``column``, the cache column the next step writes; a shared prefix is not in
the slots but read from its one copy.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from genq.params import GenerationParams
from worker import attention
from worker.kvslots import SlotCache, Write
from worker.sampling import NGramBans, StopWatch, draw, penalise, warp
from worker.types import GenRequest

# (rows in the forward, input ids, position ids, cache, spans, positions whose logits to keep
# or None for the last) -> (rows, vocab) logits
Forward = Callable[
    [
        Sequence["Row"],
        torch.Tensor,
        torch.Tensor,
        SlotCache,
        attention.Plan,
        torch.Tensor | None,
    ],
    torch.Tensor,
]
KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer (kv_heads, length, head_dim)

COMPACT_GAPS = 2
"""Holes between live rows' slots past which the batch is compacted: each hole costs an
attention call per layer at every step; compacting costs one copy of the rows that move."""

PREFILL_BLOCK = 256
"""Packed prompt tokens per attention block in a prefill (whole rows; a longer row is a block
of its own)."""


@dataclass(frozen=True)
class Prefix:
    """A prompt prefix several rows share, prefilled once."""

    tokens: tuple[int, ...]
    kv: KV


@dataclass(eq=False)
class Row:
    """One return sequence of one request, from admission to its last token."""

    request: GenRequest
    index: int  # which return sequence
    ids: list[int]  # the prompt's token ids
    seed: int  # used only when sampling
    prefix: Prefix | None = None
    # While in a batch:
    slot: int = -1
    start: int = 0  # the cache column of its first token after the prefix
    tokens: list[int] = field(default_factory=list)  # new tokens so far
    stopped: bool = False  # a stop string showed up
    generator: torch.Generator | None = None
    bans: NGramBans | None = None
    stops: StopWatch | None = None

    @property
    def params(self) -> GenerationParams:
        return self.request.params

    @property
    def key(self) -> str:
        return self.request.key

    @property
    def shared(self) -> int:
        """Prompt tokens taken from the shared prefix."""
        return len(self.prefix.tokens) if self.prefix is not None else 0

    @property
    def own(self) -> list[int]:
        """Prompt tokens this row prefills itself."""
        return self.ids[self.shared :]

    def reset(self) -> None:
        """Back to not started: evicted rows run again from their prompt, the same way."""
        self.slot, self.tokens, self.stopped = -1, [], False
        self.generator = self.bans = self.stops = None


class DecodeBatch:
    def __init__(
        self,
        forward: Forward,
        tokenizer: PreTrainedTokenizerBase,
        *,
        layers: int,
        slots: int,
        capacity: int,
        column: int,
        eos: Sequence[int],
        pad_id: int,
        device: torch.device,
        own_columns: bool = False,
    ) -> None:
        self.forward = forward
        self.tokenizer = tokenizer
        self.cache = SlotCache(layers, slots, capacity, device)
        self.column = column
        self.eos = list(eos)
        self.pad_id = pad_id
        self.device = device
        self.own_columns = own_columns  # decode attention through attention.OwnColumns
        self.rows: list[Row | None] = [None] * slots  # by slot
        self.last = torch.zeros(slots, dtype=torch.long, device=device)  # each slot's last token
        self.seen: torch.Tensor | None = None  # (slots, vocab) for repetition penalties
        self._order: list[Row] | None = None  # live rows by slot, made again after a change
        self._spans: list[_Planned] = []
        self._slots_t = self._starts_t = self._offsets_t = torch.zeros(0, dtype=torch.long)
        self._write_slots: torch.Tensor | slice = self._slots_t  # a slice when they are a run

    # -- membership ---------------------------------------------------------------------------

    @property
    def live(self) -> list[Row]:
        if self._order is None:
            live = [row for row in self.rows if row is not None]
            runs = sum(1 for a, b in zip(live, live[1:], strict=False) if b.slot != a.slot + 1)
            if runs >= COMPACT_GAPS:
                with torch.inference_mode():  # the cache's tensors are inference tensors
                    self._compact(live)
            self._order = live
            self._plan_decode()
        return self._order

    @property
    def free(self) -> int:
        return sum(row is None for row in self.rows)

    @property
    def slots(self) -> int:
        return len(self.rows)

    def fits(self, row: Row) -> bool:
        """Whether ``row`` can join without a relayout: its prompt ends at the current column
        and all its new tokens fit after it."""
        return len(row.own) <= self.column and self.column + row.params.max_new_tokens <= (
            self.cache.capacity
        )

    def remove(self, row: Row) -> None:
        self.rows[row.slot] = None
        row.slot = -1
        self._order = None

    def relayout(self, slots: int, capacity: int, column: int) -> None:
        """Move the live rows into slots 0.., right-aligned at ``column``: in place when the
        cache keeps its shape, else into a new one of ``slots`` x ``capacity``."""
        live = self.live
        keep = [(row.slot, row.start, self.column) for row in live]
        if (slots, capacity) == (self.slots, self.cache.capacity):
            self.cache.shift(keep, column)
        else:
            self.cache = self.cache.moved(keep, slots, capacity, column)
        index = torch.tensor([row.slot for row in live], dtype=torch.long, device=self.device)
        last = torch.zeros(slots, dtype=torch.long, device=self.device)
        last[: len(live)] = self.last[index]
        self.last = last
        if self.seen is not None:
            seen = self.seen.new_zeros((slots, self.seen.shape[1]))
            seen[: len(live)] = self.seen[index]
            self.seen = seen
        self.rows = [None] * slots
        for slot, row in enumerate(live):
            row.start = column - (self.column - row.start)
            row.slot = slot
            self.rows[slot] = row
        self.column = column
        self._order = None

    def _compact(self, live: list[Row]) -> None:
        """Close the holes that finished rows left: live rows move down in order, so they are
        one run of slots again (one attention call, not one per run) and the free slots, where
        new rows go, are at the end."""
        moves = [(row, i) for i, row in enumerate(live) if row.slot != i]
        source = torch.tensor([row.slot for row, _ in moves], device=self.device)
        target = torch.tensor([i for _, i in moves], device=self.device)
        first = min(row.start for row, _ in moves)
        self.cache.move(source, target, first, self.column)
        self.last[target] = self.last[source]
        if self.seen is not None:
            self.seen[target] = self.seen[source]
        for row, _ in moves:
            self.rows[row.slot] = None
        for row, i in moves:
            row.slot = i
            self.rows[i] = row

    # -- forwards -----------------------------------------------------------------------------

    def admit(self, rows: Sequence[Row]) -> list[int]:
        """Prefill ``rows`` (all after the same prefix, or none) into free slots; returns each
        one's first new token. Rows with the same prompt are prefilled once."""
        free = (slot for slot, row in enumerate(self.rows) if row is None)
        firsts: dict[tuple[int, ...], Row] = {}
        copies: list[tuple[Row, Row]] = []
        for row in rows:
            row.slot = next(free)
            row.start = self.column - len(row.own)
            self.rows[row.slot] = row
            same = firsts.setdefault(tuple(row.ids), row)
            if same is not row:
                copies.append((row, same))
        self._order = None
        run = list(firsts.values())
        logits = self._prefill(run)
        if copies:  # rows with the same prompt as one just prefilled: the same columns
            source = torch.tensor([same.slot for _, same in copies], device=self.device)
            target = torch.tensor([row.slot for row, _ in copies], device=self.device)
            first = min(row.start for row, _ in copies)
            self.cache.move(source, target, first, self.column)
        where = {id(row): i for i, row in enumerate(run)}
        logits = logits[[where[id(same)] for same in (dict(copies).get(r, r) for r in rows)]]
        for row in rows:
            self._start_row(row, logits.shape[-1])
        return self._pick(logits, rows)

    def step(self) -> list[int]:
        """One new token for every live row."""
        live = self.live
        ids = self.last[self._slots_t].unsqueeze(1)
        positions = (self.column - self._starts_t + self._offsets_t).unsqueeze(1)
        self.cache.write = Write(slots=self._write_slots, column=self.column)
        spans = tuple(planned.at(self.column, self.device) for planned in self._spans)
        logits = self.forward(live, ids, positions, self.cache, spans, None)
        self.column += 1
        return self._pick(logits, live, self._slots_t)

    def _prefill(self, rows: Sequence[Row]) -> torch.Tensor:
        """The rows' own prompt tokens packed into one sequence (no padding): each token sees
        the shared prefix, if any, and the tokens of its own row up to itself. Attention runs
        per block of whole rows, so its cost grows with the block, not the whole sequence."""
        prefix = rows[0].prefix
        assert all(row.prefix is prefix for row in rows), "one prefix per prefill"
        shared = rows[0].shared
        lengths = torch.tensor([len(row.own) for row in rows])
        ids = torch.tensor([t for row in rows for t in row.own])
        owner = torch.repeat_interleave(torch.arange(len(rows)), lengths)
        ends = lengths.cumsum(0)
        index = torch.arange(len(ids))
        within = index - (ends - lengths)[owner]  # position in the row's own part
        device = self.device
        self.cache.write = Write(
            slots=torch.tensor([row.slot for row in rows])[owner].to(device),
            columns=(self.column - lengths[owner] + within).to(device),
            prefix=prefix.kv if prefix is not None else None,
        )
        spans = []
        for a, b in _blocks(lengths.tolist(), PREFILL_BLOCK):
            own = (owner[a:b, None] == owner[None, a:b]) & (index[None, a:b] <= index[a:b, None])
            columns: slice | torch.Tensor = slice(shared + a, shared + b)
            if shared:
                own = torch.cat([torch.ones(b - a, shared, dtype=torch.bool), own], dim=1)
                columns = torch.cat([torch.arange(shared), torch.arange(shared + a, shared + b)])
                columns = columns.to(device)
            spans.append(
                attention.Span(
                    rows=slice(0, 1),
                    slots=slice(0, 1),
                    columns=columns,
                    mask=own[None, None].to(device),
                    queries=slice(a, b),
                )
            )
        return self.forward(
            rows,
            ids[None].to(device),
            (within + shared)[None].to(device),
            self.cache,
            tuple(spans),
            (ends - 1).to(device),
        )

    # -- choosing tokens ----------------------------------------------------------------------

    def _start_row(self, row: Row, vocab: int) -> None:
        params = row.params
        if params.do_sample:
            row.generator = torch.Generator().manual_seed(row.seed)
        if params.no_repeat_ngram_size:
            row.bans = NGramBans(params.no_repeat_ngram_size, list(row.ids))
        if params.stop:
            row.stops = StopWatch(self.tokenizer, params.stop)
        if params.repetition_penalty is not None:
            if self.seen is None:
                self.seen = torch.zeros((self.slots, vocab), dtype=torch.bool, device=self.device)
            self.seen[row.slot] = False
            self.seen[row.slot, torch.tensor(row.ids, device=self.device)] = True

    def _pick(
        self, logits: torch.Tensor, rows: Sequence[Row], slots: torch.Tensor | None = None
    ) -> list[int]:
        if slots is None:
            slots = torch.tensor([row.slot for row in rows], device=self.device)
        scores = logits.float()  # (rows, vocab)
        short = [
            i for i, row in enumerate(rows) if len(row.tokens) < (row.params.min_new_tokens or 0)
        ]
        if short and self.eos:
            scores[torch.tensor(short)[:, None], torch.tensor(self.eos)] = float("-inf")
        if any(row.params.repetition_penalty is not None for row in rows):
            assert self.seen is not None
            penalty = torch.tensor(
                [[row.params.repetition_penalty or 1.0] for row in rows], device=self.device
            )
            scores = penalise(scores, self.seen[slots], penalty)
        for i, row in enumerate(rows):
            if row.bans is not None and (banned := row.bans.banned()):
                scores[i, banned] = float("-inf")
        picked = scores.argmax(-1)
        settings: dict[tuple[float | None, int | None, float | None], list[int]] = {}
        for i, row in enumerate(rows):
            if row.generator is not None:
                p = row.params
                settings.setdefault((p.temperature, p.top_k, p.top_p), []).append(i)
        for sampled in settings.values():  # rows that sample alike, warped together
            index = torch.tensor(sampled, device=self.device)
            warped = warp(scores[index], rows[sampled[0]].params)
            generators = [rows[i].generator for i in sampled]
            picked[index] = draw(warped, generators)  # type: ignore[arg-type]
        self.last[slots] = picked
        if self.seen is not None:
            self.seen[slots, picked] = True
        tokens: list[int] = picked.tolist()  # the step's one wait for the device
        for row, token in zip(rows, tokens, strict=True):
            row.tokens.append(token)
            if row.bans is not None:
                row.bans.add(token)
            if row.stops is not None and row.stops.hit(row.tokens):
                row.stopped = True
        return tokens

    def _plan_decode(self) -> None:
        """Spans of live rows for decode attention: runs of neighbouring slots, cut further
        where their first columns differ much; a mask only where they differ at all."""
        live = self._order or []
        self._slots_t = torch.tensor([row.slot for row in live], dtype=torch.long)
        self._starts_t = torch.tensor([row.start for row in live], dtype=torch.long)
        self._offsets_t = torch.tensor([row.shared for row in live], dtype=torch.long)
        self._spans = []
        i = 0
        slots_np, starts_np = self._slots_t.numpy(), self._starts_t.numpy()
        while i < len(live):
            j = i + 1
            while (
                j < len(live)
                and live[j].slot == live[j - 1].slot + 1
                and live[j].prefix is live[i].prefix
            ):
                j += 1
            if self.own_columns and live[i].prefix is None:
                self._spans.append(_Planned(slice(i, j), own=(slots_np[i:j], starts_np[i:j])))
                i = j
                continue
            firsts = [row.start for row in live[i:j]]
            # Rows after a shared prefix stay one span: each span reads the whole prefix.
            cuts = ((0, j - i, min(firsts)),) if live[i].prefix else attention.plan_spans(firsts)
            for a, b, first in cuts:
                starts = self._starts_t[i + a : i + b]
                mask = None if bool((starts == first).all()) else starts.to(self.device)
                slots = slice(live[i + a].slot, live[i + b - 1].slot + 1)
                self._spans.append(
                    _Planned(slice(i + a, i + b), slots, first, mask, live[i].prefix)
                )
            i = j
        self._slots_t = self._slots_t.to(self.device)
        # Live rows in one run of slots (the usual case after compaction) take their new
        # column as one strided copy rather than an indexed write.
        run = bool(live) and live[-1].slot - live[0].slot == len(live) - 1
        self._write_slots = slice(live[0].slot, live[-1].slot + 1) if run else self._slots_t
        self._starts_t = self._starts_t.to(self.device)
        self._offsets_t = self._offsets_t.to(self.device)


@dataclass(frozen=True)
class _Planned:
    """One part of a decode step's attention, planned when the live rows change: neighbouring
    rows that read the same columns (masked where their starts differ), or rows that read just
    their own (``own``: their slots and starts)."""

    rows: slice
    slots: slice | None = None
    first: int = 0
    starts: torch.Tensor | None = None  # where the rows' columns start, when they differ
    prefix: Prefix | None = None
    own: tuple[np.ndarray, np.ndarray] | None = None

    def at(self, column: int, device: torch.device) -> attention.Span | attention.OwnColumns:
        """This part for the step that writes ``column``."""
        if self.own is not None:
            return attention.OwnColumns(self.rows, *self.own, end=column + 1)
        mask = None
        if self.starts is not None:
            mask = torch.arange(self.first, column + 1, device=device) >= self.starts[:, None]
            mask = mask[:, None, None, :]
        assert self.slots is not None
        return attention.Span(
            rows=self.rows,
            slots=self.slots,
            columns=slice(self.first, column + 1),
            mask=mask,
            prefix=self.prefix.kv if self.prefix is not None else None,
        )


def _blocks(lengths: Sequence[int], size: int) -> list[tuple[int, int]]:
    """Token ranges of consecutive whole rows, each within ``size`` tokens where it can be."""
    blocks: list[tuple[int, int]] = []
    start = end = 0
    for length in lengths:
        if end > start and end + length - start > size:
            blocks.append((start, end))
            start = end
        end += length
    blocks.append((start, end))
    return blocks
