"""The decode-time pieces under the engine: the preallocated cache and spanned attention."""

from __future__ import annotations

import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from worker import attention
from worker.kvcache import PreallocatedLayer, stack_left_padded


def test_preallocated_layer_grows_in_place_and_selects_rows() -> None:
    keys, values = torch.randn(3, 2, 5, 4), torch.randn(3, 2, 5, 4)
    layer = PreallocatedLayer(keys, values, capacity=7)
    step_k, step_v = torch.randn(3, 2, 1, 4), torch.randn(3, 2, 1, 4)
    out_k, out_v = layer.update(step_k, step_v)
    assert torch.equal(out_k, torch.cat([keys, step_k], dim=2))
    assert torch.equal(out_v, torch.cat([values, step_v], dim=2))
    assert layer.get_seq_length() == 6
    buffer = layer._keys
    layer.update(step_k, step_v)
    assert layer._keys is buffer  # within capacity: written in place, no new buffer
    layer.update(step_k, step_v)  # past capacity: grows
    assert layer.get_seq_length() == 8
    assert torch.equal(layer.keys[:, :, :5], keys)
    layer.batch_select_indices(torch.tensor([2, 0]))
    assert torch.equal(layer.keys[:, :, :5], keys[[2, 0]])
    layer.batch_repeat_interleave(2)
    assert layer.keys.shape[0] == 4
    assert torch.equal(layer.values[1, :, :5], values[2])


def test_stack_left_padded_pads_each_chunk_on_the_left() -> None:
    a, b = torch.ones(2, 1, 3, 2), torch.full((1, 1, 5, 2), 2.0)
    stacked = stack_left_padded([a, b], 6)
    assert stacked.shape == (3, 1, 6, 2)
    assert stacked[:2, :, :3].abs().sum() == 0 and torch.equal(stacked[:2, :, 3:], a)
    assert stacked[2, :, 0].abs().sum() == 0 and torch.equal(stacked[2:, :, 1:], b)


def test_spans_cover_every_row_once_and_start_at_their_first_real_column() -> None:
    first_real = [90, 90, 88, 60, 59, 2, 0]
    spans = attention.plan_spans(first_real)
    assert spans[0][0] == 0 and spans[-1][1] == len(first_real)
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))
    for start, end, column in spans:
        assert column == min(first_real[start:end])
    assert len(spans) > 1  # rows that start 90 columns apart are not read as one
    assert attention.plan_spans([5, 5, 5]) == ((0, 3, 5),)


class _Module(torch.nn.Module):
    num_key_value_groups = 3
    is_causal = True


def test_spanned_attention_equals_plain_sdpa_on_a_padded_batch() -> None:
    torch.manual_seed(0)
    rows, width = 6, 20
    first_real = [15, 14, 14, 8, 3, 0]
    query = torch.randn(rows, 6, 1, 16)
    key, value = torch.randn(rows, 2, width, 16), torch.randn(rows, 2, width, 16)
    mask = torch.arange(width).unsqueeze(0) >= torch.tensor(first_real).unsqueeze(1)
    mask = mask[:, None, None, :]
    plain, _ = sdpa_attention_forward(_Module(), query, key, value, mask)
    spans = ((0, 3, 14), (3, 4, 8), (4, 6, 0))
    with attention.row_spans(spans):
        spanned, _ = attention.spanned_sdpa(_Module(), query, key, value, mask)
    torch.testing.assert_close(spanned, plain, rtol=1e-5, atol=1e-6)
    # Outside row_spans (and for prefill, several query positions) it is plain SDPA.
    alone, _ = attention.spanned_sdpa(_Module(), query, key, value, mask)
    assert torch.equal(alone, plain)
