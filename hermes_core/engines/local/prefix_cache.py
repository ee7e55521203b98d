"""Reuse of the KV cache across requests that share a token prefix, without changing the output.

Agent loops resend the same long system + tools prompt every turn, and each new turn extends the
previous prompt. The engine prefills every prompt in chunks that start at ChatML turn boundaries
(see ``chunk_starts``), so the KV of a boundary is always computed the same way, whether the
turns before it came from this request or from the cache. Reusing it therefore gives the same
tokens as a cold run in every dtype: low-precision kernels round differently for different
chunk shapes, which is why reusing at arbitrary positions (or reusing generated tokens, which are
computed one at a time) is not exact in bf16.

After a generation the engine stores the KV up to the prompt's last turn boundary; the next
request takes the entry with the longest common prefix and reuses it up to its own latest turn
boundary inside that prefix. Entries are taken out while in use (generation extends them in
place) and stored again afterwards, so no tensor is ever copied. Memory is bounded by an LRU of at
most ``max_entries`` entries and ``max_bytes`` bytes of KV tensors (default ``DEFAULT_MAX_BYTES``, or
``HERMES_PREFIX_CACHE_MB`` MiB); the newest entry is always kept, so an agent loop keeps its reuse.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# Chunk length used when the tokenizer has no single <|im_start|> token to mark turns.
FALLBACK_CHUNK_TOKENS = 256
# Default byte bound: four entries of an 8B Llama 3 at 4k tokens (512 MB of KV each).
DEFAULT_MAX_BYTES = 2048 * 1024 * 1024


def kv_cache_bytes(cache: Any) -> int:
    """Bytes held by a KV cache's key/value tensors (whole buffers, spare room included; shared ones once)."""
    seen: set[int] = set()
    total = 0
    for layer in getattr(cache, "layers", None) or []:
        for tensor in (getattr(layer, "keys", None), getattr(layer, "values", None)):
            if tensor is None or not hasattr(tensor, "untyped_storage"):
                continue
            storage = tensor.untyped_storage()
            if storage.data_ptr() not in seen:
                seen.add(storage.data_ptr())
                total += storage.nbytes()
    return total


@dataclass
class PrefixHit:
    """A cache ready to extend, holding the KV of ``tokens[:length]``."""

    cache: Any
    length: int


def chunk_starts(
    tokens: Sequence[int], boundary_token: int | None, assistant_ids: Sequence[int] = ()
) -> list[int]:
    """Where prefill chunks begin (after 0): the first turn after the system turn, then each assistant turn.

    Those are where the next request of a chat or agent loop diverges or continues, so they are
    worth caching; each split costs a forward pass, so nowhere else. The final turn (the
    ``<|im_start|>assistant`` header generation starts from) goes with the chunk before it: a new
    question with the same tools then needs no extra pass. Turns are found by ``boundary_token``
    (``<|im_start|>``) followed by ``assistant_ids`` (the role's tokens; empty = every turn).
    Without a boundary token, chunks are 256 tokens.
    """
    if boundary_token is None:
        return list(range(FALLBACK_CHUNK_TOKENS, len(tokens), FALLBACK_CHUNK_TOKENS))
    turns = [i for i, token in enumerate(tokens) if token == boundary_token and i > 0]
    role, width = list(assistant_ids), len(assistant_ids)
    starts = [
        i for n, i in enumerate(turns) if n == 0 or not role or list(tokens[i + 1 : i + 1 + width]) == role
    ]
    return starts[:-1] if starts and starts[-1] == turns[-1] else starts


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


def _latest_start_within(starts: Sequence[int], limit: int) -> int:
    """The largest chunk start <= ``limit`` (0 when there is none)."""
    best = 0
    for start in starts:
        if start > limit:
            break
        best = start
    return best


class PrefixCache:
    """LRU of KV caches keyed by the token sequence each one holds (always a run of whole chunks)."""

    def __init__(
        self, max_entries: int = 4, min_reuse_tokens: int = 16, max_bytes: int | None = None
    ) -> None:
        from hermes_core.options import env_megabytes

        if max_entries < 1:
            raise ValueError(
                "prefix cache max_entries must be at least 1 (use prefix_cache=False to disable it)"
            )
        if max_bytes is None:
            max_bytes = env_megabytes("HERMES_PREFIX_CACHE_MB", DEFAULT_MAX_BYTES // (1024 * 1024))
        if max_bytes < 0:
            raise ValueError(f"prefix cache max_bytes must be 0 or more, got {max_bytes}")
        self.max_entries = max_entries
        self.max_bytes = int(max_bytes)
        self.min_reuse_tokens = min_reuse_tokens
        self._entries: OrderedDict[int, tuple[list[int], Any]] = OrderedDict()
        self._sizes: dict[int, int] = {}
        self._next_key = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.reused_tokens = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def memory_bytes(self) -> int:
        """Bytes of KV tensors the stored entries hold."""
        with self._lock:
            return sum(self._sizes.values())

    def take(self, tokens: Sequence[int], starts: Sequence[int]) -> PrefixHit | None:
        """Remove and return the entry sharing the longest prefix with ``tokens``, cropped to a chunk start.

        ``starts`` are the chunk starts of ``tokens`` (sorted); reuse ends at one of them, so the
        rest is prefilled in the same chunks as a cold run, and at least the last chunk is left.
        """
        with self._lock:
            best_key, best_len = None, 0
            for key, (cached_tokens, _) in self._entries.items():
                length = _latest_start_within(starts, _common_prefix_length(cached_tokens, tokens))
                if length > best_len:
                    best_key, best_len = key, length
            if best_key is None or best_len < self.min_reuse_tokens:
                self.misses += 1
                return None
            _, cache = self._entries.pop(best_key)
            self._sizes.pop(best_key, None)
        excess = cache.get_seq_length() - best_len
        if excess > 0:
            cache.crop(-excess)
        self.hits += 1
        self.reused_tokens += best_len
        return PrefixHit(cache=cache, length=best_len)

    def put(self, tokens: Sequence[int], cache: Any, length: int) -> None:
        """Store ``cache`` cropped to ``length``: the KV of ``tokens[:length]``, a run of whole chunks."""
        length = min(length, cache.get_seq_length())
        if length < self.min_reuse_tokens:
            return
        excess = cache.get_seq_length() - length
        if excess > 0:
            cache.crop(-excess)
        held = list(tokens[:length])
        size = kv_cache_bytes(cache)
        with self._lock:
            # An entry that is a prefix of the new one is now redundant.
            for key in [k for k, (t, _) in self._entries.items() if len(t) <= length and held[: len(t)] == t]:
                del self._entries[key]
                self._sizes.pop(key, None)
            self._entries[self._next_key] = (held, cache)
            self._sizes[self._next_key] = size
            self._next_key += 1
            while len(self._entries) > 1 and (
                len(self._entries) > self.max_entries or sum(self._sizes.values()) > self.max_bytes
            ):
                evicted, _ = self._entries.popitem(last=False)
                self._sizes.pop(evicted, None)

    def holds(self, tokens: Sequence[int]) -> bool:
        """Whether an entry already holds the KV of all of ``tokens`` (so storing them again adds nothing)."""
        with self._lock:
            return any(
                len(held) >= len(tokens) and _common_prefix_length(held, tokens) == len(tokens)
                for held, _ in self._entries.values()
            )

    def clear(self) -> None:
        """Drop every entry (frees their memory)."""
        with self._lock:
            self._entries.clear()
            self._sizes.clear()
