"""A KV cache for one decode batch, built from prompts prefilled in separate chunks.

transformers' ``DynamicLayer`` grows by concatenation, copying the whole cache at every decode
step; with many rows and long prompts that copy costs as much as the step's arithmetic. The
layers here hold their keys and values in buffers sized for the whole generation up front and
write each new position in place.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import DynamicLayer


class PreallocatedLayer(DynamicLayer):
    """A ``DynamicLayer`` whose keys and values are views into buffers with room to grow."""

    is_croppable = False  # cropping serves assisted decoding, which genq does not use

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, capacity: int) -> None:
        super().__init__()
        self.lazy_initialization(keys, values)
        shape = (*keys.shape[:2], capacity, keys.shape[3])
        self._keys = keys.new_empty(shape)
        self._values = values.new_empty(shape)
        self._length = keys.shape[2]
        self._keys[:, :, : self._length] = keys
        self._values[:, :, : self._length] = values
        self._expose()

    def _expose(self) -> None:
        self.keys = self._keys[:, :, : self._length]
        self.values = self._values[:, :, : self._length]

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: object, **kwargs: object
    ) -> tuple[torch.Tensor, torch.Tensor]:
        end = self._length + key_states.shape[2]
        if end > self._keys.shape[2]:  # more than planned: grow (once, by what is missing)
            self._keys = _grow(self._keys, end)
            self._values = _grow(self._values, end)
        self._keys[:, :, self._length : end] = key_states
        self._values[:, :, self._length : end] = value_states
        self._length = end
        self._expose()
        assert self.keys is not None and self.values is not None
        return self.keys, self.values

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._keys = self._keys[indices]
        self._values = self._values[indices]
        self._expose()

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._keys = self._keys.repeat_interleave(repeats, dim=0)
        self._values = self._values.repeat_interleave(repeats, dim=0)
        self._expose()


def _grow(buffer: torch.Tensor, length: int) -> torch.Tensor:
    grown = buffer.new_empty((*buffer.shape[:2], length, buffer.shape[3]))
    grown[:, :, : buffer.shape[2]] = buffer
    return grown


def stack_left_padded(parts: Sequence[torch.Tensor], width: int) -> torch.Tensor:
    """Cache tensors (batch, heads, length, dim) of several chunks as one batch, each padded on
    the left to ``width`` positions (the attention mask keeps the padding out)."""
    padded = [torch.nn.functional.pad(t, (0, 0, width - t.shape[2], 0)) for t in parts]
    return torch.cat(padded)
