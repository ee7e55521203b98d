"""The in-place KV cache (hermes_core.engines.local.kv_cache): same numbers as transformers' DynamicCache, no per-step copy."""

from __future__ import annotations

import copy
import threading

import pytest
import torch
from transformers import DynamicCache

from hermes_core import Message, load_engine
from hermes_core.engines.local import kv_cache as _kv_cache
from hermes_core.engines.local.engine import _cache_argument_name
from hermes_core.engines.local.kv_cache import growing_layer_class, new_kv_cache
from hermes_core.engines.local.loading import load_model

CACHE = _cache_argument_name()  # "cache" in transformers >= 5.2x, "past_key_values" before
PROMPT = torch.tensor([[1, 5, 9, 17, 33, 2, 8, 100, 7, 7, 3, 40, 41, 42]])


@pytest.fixture(params=["float32", "bfloat16"])
def model(request, tiny_model_dir):
    return load_model(tiny_model_dir, torch_dtype=request.param, progress=False).model


def _run(model, cache, steps: int = 20) -> torch.Tensor:
    """Logits of a chunked prefill (two chunks) then ``steps`` greedy one-token steps."""
    rows = []
    with torch.inference_mode():
        model(PROMPT[:, :6], **{CACHE: cache}, use_cache=True)
        logits = model(PROMPT[:, 6:], **{CACHE: cache}, use_cache=True).logits[:, -1]
        rows.append(logits)
        for _ in range(steps):
            token = logits.argmax(-1, keepdim=True)
            logits = model(token, **{CACHE: cache}, use_cache=True).logits[:, -1]
            rows.append(logits)
    return torch.cat(rows)


def test_growing_cache_gives_dynamic_cache_logits_bit_for_bit(model, monkeypatch):
    monkeypatch.setattr(_kv_cache, "GROWTH_BLOCK_TOKENS", 4)  # regrow several times within the run
    growing = new_kv_cache(model)
    assert all(type(layer) is growing_layer_class() for layer in growing.layers)
    reference = _run(model, DynamicCache(config=model.config))
    assert torch.equal(_run(model, growing), reference)
    assert growing.get_seq_length() == PROMPT.shape[1] + 20


def test_appending_writes_in_place_with_bounded_spare_room(model, monkeypatch):
    monkeypatch.setattr(_kv_cache, "GROWTH_BLOCK_TOKENS", 8)
    cache = new_kv_cache(model)
    _run(model, cache, steps=3)
    layer = cache.layers[0]
    buffer, length = layer._key_buffer, cache.get_seq_length()
    assert layer.keys.data_ptr() == buffer.data_ptr() and layer.keys.shape[-2] == length
    capacity = buffer.shape[-2]
    assert length < capacity <= length + 2 * 8 + length // 4  # room for more, but not unbounded
    _run_steps(model, cache, capacity - length)
    assert cache.layers[0]._key_buffer is buffer  # filled to capacity without reallocating
    _run_steps(model, cache, 1)
    assert cache.layers[0]._key_buffer is not buffer and cache.get_seq_length() == capacity + 1


def _run_steps(model, cache, steps: int) -> None:
    with torch.inference_mode():
        for token in range(steps):
            model(torch.tensor([[10 + token]]), **{CACHE: cache}, use_cache=True)


def test_crop_then_append_overwrites_the_dropped_tail(model):
    """What the prefix cache does: crop an entry to a chunk start, then extend it with another prompt."""
    growing, dynamic = new_kv_cache(model), DynamicCache(config=model.config)
    for cache in (growing, dynamic):
        _run(model, cache, steps=6)
        cache.crop(-8)
    assert growing.get_seq_length() == dynamic.get_seq_length()
    assert torch.equal(_run(model, growing, steps=4), _run(model, dynamic, steps=4))


def test_reordered_and_copied_caches_keep_working(model):
    growing, dynamic = new_kv_cache(model), DynamicCache(config=model.config)
    for cache in (growing, dynamic):
        _run(model, cache, steps=2)
        cache.batch_repeat_interleave(2)  # replaces keys/values with new tensors (beam search does this)
    tokens = torch.tensor([[3], [4]])
    with torch.inference_mode():
        a = model(tokens, **{CACHE: growing}, use_cache=True).logits
        b = model(tokens, **{CACHE: dynamic}, use_cache=True).logits
    assert torch.equal(a, b)
    clone = copy.deepcopy(growing)
    with torch.inference_mode():
        c = model(tokens, **{CACHE: clone}, use_cache=True).logits
        d = model(tokens, **{CACHE: dynamic}, use_cache=True).logits
    assert torch.equal(c, d)
    assert growing.get_seq_length() == clone.get_seq_length() - 1  # the copy grew, not the original


def test_engine_prefills_and_stores_growing_caches(tiny_model_dir):
    engine = load_engine(str(tiny_model_dir), max_new_tokens=4, progress=False)
    system = Message("system", "You are a function calling AI model. Answer briefly and precisely.")
    engine.generate([system, Message("user", "Hi there")], constrained=False)
    (_, stored), *_ = engine.prefix_cache._entries.values()
    assert all(type(layer) is growing_layer_class() for layer in stored.layers)
    one_chunk = load_engine(str(tiny_model_dir), max_new_tokens=4, prefix_cache=False, progress=False)
    cache, reused = one_chunk.engine._prefill([1, 2, 3], [], threading.Event())
    assert reused == 0 and cache.get_seq_length() == 0  # a one-chunk prompt still decodes in a growing cache
    assert all(type(layer) is growing_layer_class() for layer in cache.layers)
