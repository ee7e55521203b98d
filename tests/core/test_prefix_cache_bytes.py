"""The prefix cache is bounded by the bytes of KV it holds as well as by its number of entries."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache, LlamaConfig

from hermes_core import UnsupportedOptionError
from hermes_core.engines.local.prefix_cache import DEFAULT_MAX_BYTES, PrefixCache, kv_cache_bytes


def _cache_of(length: int) -> DynamicCache:
    """Two layers, two heads of width 4, float32: 2 layers x (keys + values) x 2 x length x 4 x 4 bytes."""
    config = LlamaConfig(num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2, hidden_size=8)
    cache = DynamicCache(config=config)
    for layer in range(2):
        k = torch.ones(1, 2, length, 4)
        cache.update(k, k.clone(), layer)
    return cache


def test_kv_cache_bytes_counts_keys_and_values_once():
    assert kv_cache_bytes(_cache_of(10)) == 2 * 2 * (2 * 10 * 4 * 4)
    assert kv_cache_bytes(DynamicCache()) == 0


def test_growing_kv_cache_counts_its_whole_buffer(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from hermes_core.engines.local.engine import _cache_argument_name
    from hermes_core.engines.local.kv_cache import new_kv_cache

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    cache = new_kv_cache(model)
    with torch.inference_mode():
        model(input_ids=torch.tensor([[1, 2, 3]]), use_cache=True, **{_cache_argument_name(): cache})
    seen = kv_cache_bytes(cache)
    filled = sum(layer.keys.nbytes + layer.values.nbytes for layer in cache.layers)
    assert seen > filled  # the spare room of the in-place buffers is memory too


def test_entries_beyond_the_byte_bound_are_evicted_oldest_first():
    entry = kv_cache_bytes(_cache_of(40))
    cache = PrefixCache(max_entries=10, min_reuse_tokens=2, max_bytes=int(entry * 2.5))
    for first in (100, 200, 300, 400):
        cache.put([first, *range(39)], _cache_of(40), 40)
    assert len(cache) == 2 and cache.memory_bytes == 2 * entry <= cache.max_bytes
    assert cache.take([100, *range(39), 7], starts=[20, 40]) is None  # the oldest went first
    hit = cache.take([400, *range(39), 7], starts=[20, 40])
    assert hit is not None and hit.length == 40
    assert cache.memory_bytes == entry  # taken out while in use


def test_the_newest_entry_is_kept_even_above_the_bound():
    cache = PrefixCache(max_entries=4, min_reuse_tokens=2, max_bytes=1)
    cache.put(list(range(40)), _cache_of(40), 40)
    cache.put([9, *range(39)], _cache_of(40), 40)
    assert len(cache) == 1
    assert cache.take([9, *range(39), 5], starts=[40]) is not None


def test_byte_bound_comes_from_the_environment_by_default(monkeypatch):
    monkeypatch.delenv("HERMES_PREFIX_CACHE_MB", raising=False)
    assert PrefixCache().max_bytes == DEFAULT_MAX_BYTES
    monkeypatch.setenv("HERMES_PREFIX_CACHE_MB", "256")
    assert PrefixCache().max_bytes == 256 * 1024 * 1024
    monkeypatch.setenv("HERMES_PREFIX_CACHE_MB", "-1")
    with pytest.raises(UnsupportedOptionError, match="HERMES_PREFIX_CACHE_MB must be a size in MiB"):
        PrefixCache()
