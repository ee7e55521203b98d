"""Prefix cache bookkeeping with real transformers DynamicCache objects."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache, LlamaConfig

from hermes_core.engines.local.prefix_cache import PrefixCache, _common_prefix_length, chunk_starts


def _cache_of(length: int) -> DynamicCache:
    config = LlamaConfig(num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2, hidden_size=8)
    cache = DynamicCache(config=config)
    for layer in range(2):
        k = torch.arange(length, dtype=torch.float32).view(1, 1, length, 1).expand(1, 2, length, 4).clone()
        cache.update(k, k.clone(), layer)
    return cache


@pytest.mark.parametrize(
    ("a", "b", "n"),
    [
        ([], [1], 0),
        ([1, 2, 3], [1, 2, 3], 3),
        ([1, 2, 3], [1, 2], 2),
        ([1, 9], [1, 2], 1),
        (list(range(1000)), [*range(700), -1], 700),
        (list(range(600)), list(range(600)), 600),
    ],
)
def test_common_prefix_length(a, b, n):
    assert _common_prefix_length(a, b) == n


def test_chunk_starts_mark_each_turn_or_fall_back_to_a_grid():
    assert chunk_starts([7, 1, 2, 7, 3, 7, 4, 7, 5], boundary_token=7) == [3, 5]  # not the final turn
    assert chunk_starts([1, 2, 3], boundary_token=7) == []
    assert chunk_starts(list(range(600)), boundary_token=None) == [256, 512]


def test_chunk_starts_with_a_role_keep_the_first_turn_and_assistant_turns():
    system, user, assistant, tool = 1, 2, 3, 4
    tokens = [7, system, 0, 7, user, 0, 7, assistant, 0, 7, tool, 0, 7, user, 0, 7, assistant]
    assert chunk_starts(tokens, boundary_token=7, assistant_ids=[assistant]) == [3, 6]  # 15 is final
    assert chunk_starts([*tokens, 5, 7, user], boundary_token=7, assistant_ids=[assistant]) == [3, 6, 15]
    assert chunk_starts(tokens, boundary_token=7, assistant_ids=[assistant, 9]) == [3]  # role not found


def test_take_reuses_up_to_the_latest_chunk_start_inside_the_common_prefix():
    cache = PrefixCache(max_entries=4, min_reuse_tokens=2)
    cache.put(list(range(40)), _cache_of(40), 40)
    cache.put([100, *range(30)], _cache_of(31), 31)
    prompt = [*range(25), 7, 7]
    hit = cache.take(prompt, starts=[10, 20, 26])  # shares 25 tokens; 26 is past the shared part
    assert hit is not None and hit.length == 20
    assert hit.cache.get_seq_length() == 20
    assert len(cache) == 1  # taken out while in use
    hit2 = cache.take([100, *range(30), 5], starts=[12, 31])
    assert hit2.length == 31


def test_take_misses_when_no_chunk_start_lies_in_the_shared_prefix():
    cache = PrefixCache(max_entries=4, min_reuse_tokens=2)
    cache.put(list(range(40)), _cache_of(40), 40)
    assert cache.take([*range(30), -1], starts=[]) is None
    assert cache.take([*range(30), -1], starts=[35]) is None
    assert len(cache) == 1


def test_put_keeps_only_the_given_length():
    cache = PrefixCache(max_entries=4, min_reuse_tokens=2)
    kv = _cache_of(40)
    cache.put(list(range(40)), kv, 24)
    assert kv.get_seq_length() == 24
    hit = cache.take(list(range(50)), starts=[24, 30, 45])
    assert hit.length == 24  # nothing past what was stored


def test_miss_below_threshold_and_lru_bound():
    cache = PrefixCache(max_entries=2, min_reuse_tokens=10)
    assert cache.take(list(range(50)), starts=[20]) is None
    for start in (1000, 2000, 3000):
        cache.put(list(range(start, start + 20)), _cache_of(20), 20)
    assert len(cache) == 2
    assert cache.take([*range(1000, 1020), 1], starts=[20]) is None  # evicted, oldest first
    assert cache.take([*range(3000, 3005), 1], starts=[5]) is None  # 5 tokens < 10


def test_put_replaces_entries_it_extends():
    cache = PrefixCache(max_entries=4, min_reuse_tokens=2)
    cache.put(list(range(10)), _cache_of(10), 10)
    cache.put(list(range(20)), _cache_of(20), 20)
    assert len(cache) == 1


def test_invalid_size():
    with pytest.raises(ValueError, match="prefix_cache=False"):
        PrefixCache(max_entries=0)
