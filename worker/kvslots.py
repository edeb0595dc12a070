"""The KV cache of a decode batch: one slot per row, all in buffers allocated up front.

Every layer keeps keys and values as ``(slots, kv_heads, capacity, head_dim)``. A row owns one
slot; its tokens sit right-aligned at the batch's current column (so every row writes its next
token into the same column). A shared prompt prefix is not in the slots: it is kept once, and
attention reads it for every row that starts with it. Rows join and leave without copying the
cache: a finished row's slot is reused by the next admitted row; only a relayout (``moved``)
copies the live columns of the rows that stay.

Prefill writes and moves address the buffers as rows of ``head_dim`` values (one row per slot,
head and column): one ``index_copy_`` per layer. ``bench/kvcache.py`` on a warm cache (2
threads, 128 slots x 344 columns) measured a move of 26 rows x 226 columns at 1.8-1.9 ms against
2.2-2.4 ms for indexing ``(slots, :, columns)``, and a 900-token prefill write the same either
way (0.3 ms). A decode step's write of one column per row stays an indexed write. The first
write of a fresh page costs far more than any of these: filling one fresh 34 MB layer buffer
took 17 ms, against 1 ms once its pages are mapped.

Positions are explicit (``position_ids``), never read from a column index, so a row's columns
can move. The buffers start as zeros: attention masks columns out, and a masked column must
still hold a finite number (0 x NaN is NaN). On the CPU those zeros are fresh pages from the
operating system, mapped as they are first written, so a cache costs what its rows use rather
than a write of every slot and column at each allocation.
"""

from __future__ import annotations

import math
import mmap
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import Cache, DynamicLayer


@dataclass
class Write:
    """Where the new keys and values of the forward being run go."""

    slots: torch.Tensor | slice  # decode: each row's slot (rows,); prefill: each token's (tokens,)
    column: int | None = None  # decode: every row's one new token goes to this column
    columns: torch.Tensor | None = None  # prefill: (tokens,) each token's column
    # prefill: a shared prefix's keys and values per layer, (kv_heads, length, head_dim), that
    # the packed prompts attend to ahead of their own tokens
    prefix: Sequence[tuple[torch.Tensor, torch.Tensor]] | None = None
    rows: torch.Tensor | None = None  # prefill: the flat rows written, from the first layer


def _flat(slots: torch.Tensor, columns: torch.Tensor, kv_heads: int, capacity: int) -> torch.Tensor:
    """Flat row numbers of ``(slot, head, column)`` in a ``(slots, kv_heads, capacity, dim)``
    buffer, head-major: ``(kv_heads, n)`` for ``n`` (slot, column) pairs, flattened."""
    heads = torch.arange(kv_heads, device=slots.device)[:, None]
    return ((slots[None] * kv_heads + heads) * capacity + columns[None]).reshape(-1)


class SlotCache(Cache):
    def __init__(self, layers: int, slots: int, capacity: int, device: torch.device) -> None:
        super().__init__(layers=[DynamicLayer() for _ in range(layers)])
        self.slots = slots
        self.capacity = capacity  # columns per slot
        self.device = device
        self.keys: list[torch.Tensor | None] = [None] * layers
        self.values: list[torch.Tensor | None] = [None] * layers
        self.write: Write | None = None

    def update(  # type: ignore[override]
        self,
        # decode: (rows, kv_heads, 1, head_dim); prefill: (1, kv_heads, tokens, head_dim)
        key_states: torch.Tensor,
        value_states: torch.Tensor,
        layer_idx: int,
        *args: object,
        **kwargs: object,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        keys, values = self._buffers(layer_idx, key_states)
        w = self.write
        assert w is not None, "the engine names where a forward writes"
        if w.column is not None:
            keys[w.slots, :, w.column] = key_states[:, :, 0]
            values[w.slots, :, w.column] = value_states[:, :, 0]
            return keys, values
        # Prompts packed into one sequence: each token to its row's slot and column.
        assert w.columns is not None and isinstance(w.slots, torch.Tensor)
        kv_heads, dim = keys.shape[1], keys.shape[3]
        if w.rows is None:
            w.rows = _flat(w.slots, w.columns, kv_heads, self.capacity)
        keys.view(-1, dim).index_copy_(0, w.rows, key_states[0].reshape(-1, dim))
        values.view(-1, dim).index_copy_(0, w.rows, value_states[0].reshape(-1, dim))
        if w.prefix is None:
            return key_states, value_states
        k, v = w.prefix[layer_idx]
        return torch.cat([k[None], key_states], dim=2), torch.cat([v[None], value_states], dim=2)

    def _buffers(self, layer: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        keys, values = self.keys[layer], self.values[layer]
        if keys is None or values is None:
            shape = (self.slots, like.shape[1], self.capacity, like.shape[3])
            keys = zeros(shape, like.dtype, like.device)
            values = zeros(shape, like.dtype, like.device)
            self.keys[layer], self.values[layer] = keys, values
        return keys, values

    def move(self, source: torch.Tensor, target: torch.Tensor, start: int, end: int) -> None:
        """Slots ``target`` get slots ``source``'s columns [start, end) (read before written,
        so the two may overlap)."""
        layers = self._layers()
        if not layers:
            return
        _, kv_heads, capacity, dim = layers[0][0].shape
        columns = torch.arange(start, end, device=source.device)
        count = len(columns)
        rows_from = _flat(
            source.repeat_interleave(count), columns.repeat(len(source)), kv_heads, capacity
        )
        rows_to = _flat(
            target.repeat_interleave(count), columns.repeat(len(target)), kv_heads, capacity
        )
        for keys, values in layers:
            for buffer in (keys, values):
                flat = buffer.view(-1, dim)
                flat.index_copy_(0, rows_to, flat.index_select(0, rows_from))

    def shift(self, rows: Sequence[tuple[int, int, int]], column: int) -> None:
        """In place: for each ``(slot, start, end)`` in ``rows`` (by slot), those columns into
        slot ``i`` (the row's index), right-aligned at ``column``. Rows only move to lower or
        equal slots, so each is read before anything is written over it."""
        for keys, values in self._layers():
            for target, (slot, start, end) in enumerate(rows):
                first = column - (end - start)
                keys[target, :, first:column] = keys[slot, :, start:end].clone()
                values[target, :, first:column] = values[slot, :, start:end].clone()

    def moved(
        self, rows: Sequence[tuple[int, int, int]], slots: int, capacity: int, column: int
    ) -> SlotCache:
        """A new cache of ``slots`` x ``capacity`` holding, for each ``(slot, start, end)`` in
        ``rows``, those columns in slot ``i`` (the row's index), right-aligned at ``column``."""
        fresh = SlotCache(len(self.keys), slots, capacity, self.device)
        for index, (keys, values) in enumerate(self._layers()):
            new_keys, new_values = fresh._buffers(index, keys)
            for target, (slot, start, end) in enumerate(rows):
                new_keys[target, :, column - (end - start) : column] = keys[slot, :, start:end]
                new_values[target, :, column - (end - start) : column] = values[slot, :, start:end]
        return fresh

    def _layers(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [
            (k, v)
            for k, v in zip(self.keys, self.values, strict=True)
            if k is not None and v is not None
        ]


def zeros(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A zero tensor; on the CPU, anonymous memory the operating system maps page by page as it
    is written (reading a page never written costs no write), not a fill of the whole buffer."""
    if device.type != "cpu":
        return torch.zeros(shape, dtype=dtype, device=device)
    count = math.prod(shape)
    memory = mmap.mmap(-1, max(1, count * dtype.itemsize))  # the tensor keeps it alive
    return torch.frombuffer(memory, dtype=dtype, count=count).view(shape)
