"""The decode-time pieces under the engine: the slot cache and attention over it."""

from __future__ import annotations

import numpy as np
import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from worker import attention
from worker.kvslots import SlotCache, Write


def test_decode_writes_one_column_per_row_in_its_slot() -> None:
    cache = SlotCache(1, slots=4, capacity=6, device=torch.device("cpu"))
    k, v = torch.randn(2, 2, 1, 3), torch.randn(2, 2, 1, 3)
    cache.write = Write(slots=torch.tensor([3, 1]), column=4)
    keys, values = cache.update(k, v, 0)
    assert keys.shape == (4, 2, 6, 3)
    assert torch.equal(keys[3, :, 4], k[0, :, 0]) and torch.equal(values[1, :, 4], v[1, :, 0])
    assert keys[[0, 2]].abs().sum() == 0 and keys[:, :, :4].abs().sum() == 0


def test_packed_prefill_writes_each_token_to_its_row_and_column() -> None:
    cache = SlotCache(1, slots=3, capacity=5, device=torch.device("cpu"))
    k, v = torch.randn(1, 2, 3, 4), torch.randn(1, 2, 3, 4)  # rows of 2 and 1 tokens, packed
    cache.write = Write(slots=torch.tensor([2, 2, 0]), columns=torch.tensor([3, 4, 4]))
    keys, _ = cache.update(k, v, 0)
    assert keys is k  # attention reads the packed keys themselves
    assert torch.equal(cache.keys[0][2, :, 3:5], k[0, :, :2])  # type: ignore[index]
    assert torch.equal(cache.keys[0][0, :, 4], k[0, :, 2])  # type: ignore[index]
    prefix = [(torch.randn(2, 7, 4), torch.randn(2, 7, 4))]
    cache.write = Write(slots=torch.tensor([1]), columns=torch.tensor([2]), prefix=prefix)
    keys, values = cache.update(k[:, :, :1], v[:, :, :1], 0)
    assert keys.shape == (1, 2, 8, 4) and torch.equal(values[0, :, :7], prefix[0][1])


def test_moving_rows_keeps_their_columns() -> None:
    cache = SlotCache(2, slots=4, capacity=6, device=torch.device("cpu"))
    k, v = torch.randn(4, 1, 1, 2), torch.randn(4, 1, 1, 2)
    for column in range(6):
        cache.write = Write(slots=torch.arange(4), column=column)
        for layer in range(2):
            cache.update(k + column, v - column, layer)
    before = [t.clone() for t in cache.keys if t is not None]
    cache.move(torch.tensor([2, 3]), torch.tensor([0, 1]), 1, 6)  # overlapping: read first
    for layer, old in enumerate(before):
        assert torch.equal(cache.keys[layer][:2, :, 1:], old[2:, :, 1:])  # type: ignore[index]
    moved = cache.moved([(3, 2, 6), (0, 4, 6)], slots=2, capacity=8, column=5)
    assert torch.equal(moved.keys[1][0, :, 1:5], before[1][3, :, 2:6])  # type: ignore[index]
    assert torch.equal(moved.values[0][1, :, 3:5], cache.values[0][0, :, 4:6])  # type: ignore[index]
    assert moved.keys[0][:, :, 5:].abs().sum() == 0  # type: ignore[index]
    kept = [t.clone() for t in cache.keys if t is not None]
    cache.shift([(1, 3, 6), (3, 1, 6)], column=5)  # in place, columns moving left
    assert torch.equal(cache.keys[0][0, :, 2:5], kept[0][1, :, 3:6])  # type: ignore[index]
    assert torch.equal(cache.keys[1][1, :, 0:5], kept[1][3, :, 1:6])  # type: ignore[index]


def test_spans_cover_every_row_once_and_start_at_their_first_real_column() -> None:
    first_real = [900, 900, 880, 600, 590, 20, 0]
    spans = attention.plan_spans(first_real)
    assert spans[0][0] == 0 and spans[-1][1] == len(first_real)
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))
    for start, end, column in spans:
        assert column == min(first_real[start:end])
    assert len(spans) > 1  # rows that start 900 columns apart are not read as one
    assert attention.plan_spans([5, 5, 5]) == ((0, 3, 5),)


class _Module(torch.nn.Module):
    num_key_value_groups = 3
    is_causal = True
    layer_idx = 0


def test_span_attention_equals_plain_sdpa_on_the_rows_columns() -> None:
    torch.manual_seed(0)
    rows, width = 6, 20
    first_real = [15, 14, 14, 8, 3, 0]
    query = torch.randn(rows, 6, 1, 16)
    key, value = torch.randn(rows + 2, 2, width, 16), torch.randn(rows + 2, 2, width, 16)
    mask = torch.arange(width).unsqueeze(0) >= torch.tensor(first_real).unsqueeze(1)
    plain, _ = sdpa_attention_forward(_Module(), query, key[1:7], value[1:7], mask[:, None, None])
    spans = tuple(
        attention.Span(
            rows=slice(a, b),
            slots=slice(a + 1, b + 1),  # the rows live in slots 1..6
            columns=slice(column, width),
            mask=mask[a:b, None, None, column:],
        )
        for a, b, column in ((0, 3, 14), (3, 4, 8), (4, 6, 0))
    )
    with attention.planned(spans):
        spanned, _ = attention.slot_sdpa(_Module(), query, key, value, None)
    torch.testing.assert_close(spanned, plain, rtol=1e-5, atol=1e-6)
    # Outside planned it is plain SDPA.
    alone, _ = attention.slot_sdpa(_Module(), query, key[1:7], value[1:7], mask[:, None, None])
    assert torch.equal(alone, plain)


def test_own_columns_attention_equals_sdpa_over_each_rows_own_columns() -> None:
    torch.manual_seed(2)
    slots, width = 7, 20
    query = torch.randn(5, 6, 1, 16)  # 6 heads over 2 key/value heads
    key, value = torch.randn(slots, 2, width, 16), torch.randn(slots, 2, width, 16)
    in_slots, starts = [6, 0, 3, 2, 5], [4, 19, 0, 11, 7]
    own = attention.OwnColumns(
        rows=slice(1, 5),  # row 0 goes through a span, to check the parts' order
        slots=np.array(in_slots[1:], dtype=np.int64),
        starts=np.array(starts[1:], dtype=np.int64),
        end=width,
    )
    span = attention.Span(rows=slice(0, 1), slots=slice(6, 7), columns=slice(4, width), mask=None)
    with attention.planned((span, own)):
        out, _ = attention.slot_sdpa(_Module(), query, key, value, None)
    for row, (slot, start) in enumerate(zip(in_slots, starts, strict=True)):
        columns = slice(start, width)
        plain, _ = sdpa_attention_forward(
            _Module(),
            query[row : row + 1],
            key[slot : slot + 1, :, columns],
            value[slot : slot + 1, :, columns],
            None,
        )
        torch.testing.assert_close(out[row : row + 1], plain, rtol=1e-5, atol=1e-6)
    # a row's result does not depend on the other rows of the call
    alone = attention.OwnColumns(slice(0, 1), own.slots[2:3], own.starts[2:3], end=width)
    with attention.planned((alone,)):
        single, _ = attention.slot_sdpa(_Module(), query[3:4], key, value, None)
    assert torch.equal(single, out[3:4])


def test_attention_after_a_shared_prefix_equals_attention_over_both() -> None:
    torch.manual_seed(1)
    rows, own, shared = 4, 9, 12
    query = torch.randn(rows, 6, 1, 16)
    prefix = [(torch.randn(2, shared, 16), torch.randn(2, shared, 16))]
    key, value = torch.randn(rows, 2, own, 16), torch.randn(rows, 2, own, 16)
    starts = torch.tensor([0, 3, 5, 2])
    mask = (torch.arange(own)[None] >= starts[:, None])[:, None, None]
    full_key = torch.cat([prefix[0][0].expand(rows, -1, -1, -1), key], dim=2)
    full_value = torch.cat([prefix[0][1].expand(rows, -1, -1, -1), value], dim=2)
    full_mask = torch.cat([torch.ones(rows, 1, 1, shared, dtype=torch.bool), mask], dim=-1)
    plain, _ = sdpa_attention_forward(_Module(), query, full_key, full_value, full_mask)
    span = attention.Span(
        rows=slice(0, rows), slots=slice(0, rows), columns=slice(0, own), mask=mask, prefix=prefix
    )
    with attention.planned((span,)):
        after, _ = attention.slot_sdpa(_Module(), query, key, value, None)
    torch.testing.assert_close(after, plain, rtol=1e-5, atol=1e-6)
