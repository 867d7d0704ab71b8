"""A KV cache with spare room along the sequence axis, so a decode step writes in place.

transformers' DynamicCache concatenates each step's keys and values onto the whole cache:
an O(length) copy per layer per step. `GrowableCache` keeps each layer in a buffer with
`reserve` positions of room beyond what the prefill filled (the decode budget); `update`
writes into that room and hands attention views of the filled part. It reallocates only
when the room runs out (doubling, so growth stays amortized O(1)) or when an inherited
DynamicLayer operation (`batch_select_indices`, `reorder_cache`, ...) replaced the keys with
a new tensor; `crop` just shortens the view.
"""

from __future__ import annotations

from functools import partial

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


class GrowableLayer(DynamicLayer):
    """`keys`/`values` are views [batch, kv_heads, filled, head_dim] of buffers [batch, kv_heads, capacity, head_dim]."""

    def __init__(self, reserve: int = 0):
        super().__init__()
        self.reserve = reserve
        self.key_buffer: torch.Tensor | None = None
        self.value_buffer: torch.Tensor | None = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        start = self.get_seq_length()
        end = start + key_states.shape[-2]
        if not self._in_buffer(end):
            self._reallocate(key_states, value_states, start, end)
        self.key_buffer[:, :, start:end] = key_states
        self.value_buffer[:, :, start:end] = value_states
        self.keys, self.values = self.key_buffer[:, :, :end], self.value_buffer[:, :, :end]
        return self.keys, self.values

    def _in_buffer(self, end: int) -> bool:
        """Whether `keys` still is the front of the buffer and positions up to `end` fit."""
        buf = self.key_buffer
        return (buf is not None and end <= buf.shape[2] and self.keys.shape[0] == buf.shape[0]
                and self.keys.data_ptr() == buf.data_ptr() and self.values.data_ptr() == self.value_buffer.data_ptr())

    def _reallocate(self, key_states: torch.Tensor, value_states: torch.Tensor, start: int, end: int) -> None:
        old = 0 if self.key_buffer is None else self.key_buffer.shape[2]
        capacity = old if end <= old else max(end + self.reserve, 2 * old)
        b, heads, _, dim = key_states.shape
        key_buffer = key_states.new_empty((b, heads, capacity, dim))
        value_buffer = value_states.new_empty((b, heads, capacity, value_states.shape[3]))
        if start:
            key_buffer[:, :, :start] = self.keys
            value_buffer[:, :, :start] = self.values
        self.key_buffer, self.value_buffer = key_buffer, value_buffer


class GrowableCache(DynamicCache):
    """A DynamicCache of GrowableLayers with room for `reserve` more positions than the first update writes."""

    def __init__(self, reserve: int = 0):
        super().__init__()
        self.layer_class_to_replicate = partial(GrowableLayer, reserve)
