"""A KV cache that appends a token in place instead of copying the whole cache at every step.

transformers' ``DynamicLayer`` grows by ``torch.cat``: each decode step copies every layer's keys and
values to append one token (37 MB a token for the embedded model at 1,600 tokens, 512 MB for an 8B
Llama 3 at 4k). ``GrowingLayer`` keeps them in a buffer with spare room (grown in blocks) and hands
out views of its filled part, which attention reads exactly as it reads a contiguous tensor (same
values, same kernels: tests/core/test_kv_cache.py checks the output bit for bit). On the 135M model
the saving is within the noise of benchmarks/bench_decode.py; it grows with the KV cache.

The cache stays a ``DynamicCache``, so ``generate``, ``crop`` and the prefix cache work unchanged.
"""

from __future__ import annotations

import functools
from typing import Any

# Room is added in whole blocks of this many tokens, plus a quarter of the current length, so a long
# generation reallocates a handful of times and the spare room stays a bounded fraction of the cache.
GROWTH_BLOCK_TOKENS = 256


def new_kv_cache(model: Any) -> Any:
    """An empty ``DynamicCache`` for ``model`` whose full-attention layers append in place.

    Layers of other kinds (sliding-window, linear attention) keep transformers' own implementation.
    """
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    growing = growing_layer_class()
    cache = DynamicCache(config=model.config)
    cache.layers = [growing() if type(layer) is DynamicLayer else layer for layer in cache.layers]
    if cache.layer_class_to_replicate is DynamicLayer:  # layers made lazily, one per model layer
        cache.layer_class_to_replicate = growing
    return cache


@functools.cache
def growing_layer_class() -> type:
    """The ``GrowingLayer`` class (built on first use: it subclasses a transformers type, imported lazily)."""
    from transformers.cache_utils import DynamicLayer

    class _GrowingLayer(DynamicLayer):
        """A ``DynamicLayer`` whose ``keys``/``values`` are views of buffers with spare room at the end."""

        def lazy_initialization(self, key_states: Any, value_states: Any) -> None:
            super().lazy_initialization(key_states, value_states)
            self._key_buffer: Any = None
            self._value_buffer: Any = None

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            length = self.get_seq_length()
            end = length + key_states.shape[-2]
            if not self._appendable(key_states, end):
                self._grow(key_states, value_states, length, end)
            self._key_buffer[..., length:end, :].copy_(key_states)
            self._value_buffer[..., length:end, :].copy_(value_states)
            self.keys = self._key_buffer[..., :end, :]
            self.values = self._value_buffer[..., :end, :]
            return self.keys, self.values

        def reserve(self, end: int) -> tuple[Any, Any]:
            """The key and value buffers, grown if needed so that tokens up to ``end`` append in place.

            For a caller that writes the new tokens itself (``cpu/native_step.py``), then sets
            ``keys``/``values`` to the buffers' first ``end`` positions as ``update`` does.
            """
            if not self._appendable(self.keys, end):
                self._grow(self.keys, self.values, self.get_seq_length(), end)
            return self._key_buffer, self._value_buffer

        def _appendable(self, key_states: Any, end: int) -> bool:
            """Whether ``keys`` is still the start of our buffer (not replaced by a reorder) with room to ``end``."""
            buffer = getattr(self, "_key_buffer", None)
            if buffer is None or end > buffer.shape[-2]:
                return False
            keys = self.keys
            if keys is None or keys.numel() == 0:
                return buffer.shape[:-2] == key_states.shape[:-2] and buffer.dtype == key_states.dtype
            return (
                keys.data_ptr() == buffer.data_ptr()
                and keys.stride() == buffer.stride()
                and self.values.data_ptr() == self._value_buffer.data_ptr()
            )

        def _grow(self, key_states: Any, value_states: Any, length: int, end: int) -> None:
            """New buffers with room past ``end``, holding the first ``length`` cached tokens."""
            import torch

            room = end + max(GROWTH_BLOCK_TOKENS, end // 4)
            capacity = -(-room // GROWTH_BLOCK_TOKENS) * GROWTH_BLOCK_TOKENS
            buffers = []
            for old, new in ((self.keys, key_states), (self.values, value_states)):
                shape = (*new.shape[:-2], capacity, new.shape[-1])
                buffer = torch.empty(shape, dtype=new.dtype, device=new.device)
                if length:
                    buffer[..., :length, :].copy_(old)
                buffers.append(buffer)
            self._key_buffer, self._value_buffer = buffers

        def reset(self) -> None:
            super().reset()
            self._key_buffer = self._value_buffer = None

    _GrowingLayer.__name__ = _GrowingLayer.__qualname__ = "GrowingLayer"
    return _GrowingLayer
