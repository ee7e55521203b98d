"""Reuse of the KV cache across requests that share a token prefix.

Agent loops resend the same long system + tools prompt every turn, and each new turn usually
extends the previous prompt plus the model's answer. After every generation the engine stores
the KV cache of everything it computed; the next request takes the entry with the longest
common token prefix, crops it to that prefix and only prefills the rest.

Entries are taken out while in use (generation extends them in place) and stored again
afterwards, so no tensor is ever copied. Memory is bounded by an LRU of ``max_entries``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass
class PrefixHit:
    """A cache ready to pass to ``generate`` holding the KV of ``tokens[:length]``."""

    cache: Any
    length: int


def _common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token lists."""
    limit = min(len(a), len(b))
    if limit == 0:
        return 0
    # Compare in blocks first: prompts share thousands of tokens and Python loops are slow.
    step = 256
    start = 0
    while start < limit:
        end = min(start + step, limit)
        if a[start:end] != b[start:end]:
            break
        start = end
    else:
        return limit
    for i in range(start, min(start + step, limit)):
        if a[i] != b[i]:
            return i
    return min(start + step, limit)


class PrefixCache:
    """LRU of KV caches keyed by the token sequence each one holds."""

    def __init__(self, max_entries: int = 4, min_reuse_tokens: int = 16) -> None:
        if max_entries < 1:
            raise ValueError(
                "prefix cache max_entries must be at least 1 (use prefix_cache=False to disable it)"
            )
        self.max_entries = max_entries
        self.min_reuse_tokens = min_reuse_tokens
        self._entries: OrderedDict[int, tuple[list[int], Any]] = OrderedDict()
        self._next_key = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.reused_tokens = 0

    def __len__(self) -> int:
        return len(self._entries)

    def take(self, tokens: Sequence[int]) -> PrefixHit | None:
        """Remove and return the entry sharing the longest prefix with ``tokens``, cropped to it.

        At least one token of ``tokens`` is always left to prefill, because generation needs the
        logits of the last prompt position.
        """
        with self._lock:
            best_key, best_len = None, 0
            for key, (cached_tokens, _) in self._entries.items():
                length = _common_prefix_length(cached_tokens, tokens)
                if length > best_len:
                    best_key, best_len = key, length
            best_len = min(best_len, len(tokens) - 1)
            if best_key is None or best_len < self.min_reuse_tokens:
                self.misses += 1
                return None
            cached_tokens, cache = self._entries.pop(best_key)
        excess = cache.get_seq_length() - best_len
        if excess > 0:
            cache.crop(-excess)
        self.hits += 1
        self.reused_tokens += best_len
        return PrefixHit(cache=cache, length=best_len)

    def put(self, tokens: Sequence[int], cache: Any) -> None:
        """Store ``cache``, which holds the KV of the first ``cache.get_seq_length()`` of ``tokens``."""
        length = cache.get_seq_length()
        if length < self.min_reuse_tokens:
            return
        held = list(tokens[:length])
        with self._lock:
            # An entry that is a prefix of the new one is now redundant.
            for key in [k for k, (t, _) in self._entries.items() if len(t) <= length and held[: len(t)] == t]:
                del self._entries[key]
            self._entries[self._next_key] = (held, cache)
            self._next_key += 1
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        """Drop every entry (frees their memory)."""
        with self._lock:
            self._entries.clear()
