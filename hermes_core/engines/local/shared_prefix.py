"""One copy of a prompt prefix's KV for every batched row that starts with it, and attention over it.

Requests over the same tools prompt share its turn chunks (the prefix cache hands out whole chunks,
so their KV is the same tensors a cold run computes). ``SharedPrefix`` holds that KV once, immutable;
each row keeps only its own suffix (the rest of its prompt and what it generated). A decode step then
attends in two parts (``cascade_attention``): every sharing row's queries against the prefix in one
call, so the prefix is read once per step for all rows, and each row's queries against its own suffix.
The two partial softmaxes are merged exactly by their log-sum-exps: with ``m = max(l_p, l_s)``,
``out = (o_p e^(l_p - m) + o_s e^(l_s - m)) / (e^(l_p - m) + e^(l_s - m))``, which is softmax over the
union of the keys; only the rounding differs from one attention call over prefix + suffix.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class SharedPrefix:
    """The KV of ``tokens`` (a run of whole prompt chunks), per layer ``(1, kv_heads, length, head_dim)``.

    Never written in place: caches made from it (``as_cache``) copy it before they append.
    """

    def __init__(self, tokens: Sequence[int], keys: list[Any], values: list[Any]) -> None:
        self.tokens = list(tokens)
        self.keys = keys
        self.values = values

    @property
    def length(self) -> int:
        return len(self.tokens)

    @classmethod
    def from_cache(cls, cache: Any, tokens: Sequence[int]) -> SharedPrefix:
        """The first ``len(tokens)`` positions of ``cache``: its own tensors if they are immutable, else a copy."""
        length = len(tokens)
        keys, values = [], []
        for layer in cache.layers:
            frozen = getattr(layer, "_key_buffer", True) is None  # made by as_cache, never appended to
            key, value = layer.keys[..., :length, :], layer.values[..., :length, :]
            keys.append(key if frozen else key.clone())
            values.append(value if frozen else value.clone())
        return cls(tokens, keys, values)

    def as_cache(self, model: Any) -> Any:
        """An in-place KV cache holding this prefix by reference; its first append copies it (copy on write)."""
        from hermes_core.engines.local.kv_cache import new_kv_cache

        cache = new_kv_cache(model)
        for layer, key, value in zip(cache.layers, self.keys, self.values, strict=True):
            layer.lazy_initialization(key, value)
            layer.keys, layer.values = key, value
        return cache

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))


def suffix_cache(cache: Any, start: int, model: Any) -> Any:
    """A new in-place KV cache holding a copy of ``cache``'s positions from ``start`` on."""
    from hermes_core.engines.local.kv_cache import new_kv_cache

    suffix = new_kv_cache(model)
    for index, layer in enumerate(cache.layers):
        suffix.update(layer.keys[..., start:, :], layer.values[..., start:, :], index)
    return suffix


def shares_chunks(
    prompt: Sequence[int],
    starts: Sequence[int],
    theirs: Sequence[int],
    their_starts: Sequence[int],
    length: int,
) -> bool:
    """Whether ``prompt[:length]`` equals ``theirs[:length]`` and both were chunked alike up to ``length``.

    Then the KV of those positions is the same in both caches, in every dtype (see prefix_cache.py).
    """
    if length <= 0 or length not in starts or length not in their_starts:
        return False
    if len(prompt) < length or len(theirs) < length or list(prompt[:length]) != list(theirs[:length]):
        return False
    return [s for s in starts if s <= length] == [s for s in their_starts if s <= length]


def _attend_with_lse(
    query: Any, key: Any, value: Any, scaling: float, mask: Any = None, compiled: bool = False
) -> tuple[Any, Any]:
    """Attention of ``query`` ``(1, kv, q, d)`` over ``key``/``value`` ``(1, kv, n, d)``: output and float32 log-sum-exp.

    ``mask`` (boolean ``(q, n)``, True = may attend) is optional. ``compiled``: without a mask, on the
    compiled kernel where it applies (``cpu/prefill_attention.py``; models marked at load).
    """
    import torch

    if compiled and mask is None:
        from hermes_core.engines.local.cpu.prefill_attention import attention_with_lse

        computed = attention_with_lse(query, key, value, scaling, causal=False)
        if computed is not None:
            return computed

    if mask is not None:
        scores = torch.matmul(query.float(), key.float().transpose(-1, -2)) * scaling
        scores = scores.masked_fill(~mask, float("-inf"))
        lse = torch.logsumexp(scores, dim=-1)
        output = torch.matmul(torch.softmax(scores, dim=-1), value.float()).to(query.dtype)
        return output, lse
    if query.device.type == "cpu":
        output, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            query, key, value, 0.0, False, attn_mask=None, scale=scaling
        )[:2]
        return output, lse
    scores = torch.matmul(query.float(), key.float().transpose(-1, -2)) * scaling
    lse = torch.logsumexp(scores, dim=-1)
    output = torch.matmul(torch.softmax(scores, dim=-1), value.float()).to(query.dtype)
    return output, lse


def cascade_attention(
    query: Any,
    prefix_key: Any,
    prefix_value: Any,
    suffixes: Sequence[tuple[Any, Any]],
    scaling: float,
    compiled: bool = False,
) -> Any:
    """One-token attention of ``k`` rows over a shared prefix plus each row's own suffix: ``(k, 1, heads, dim)``.

    ``query`` is ``(k, heads, 1, dim)``; ``suffixes`` are each row's ``(key, value)``, ``(1, kv, n_i, dim)``.
    Query heads are folded into the rows of their key/value head (GQA), so the prefix is one attention
    call for all ``k`` rows; the partial results are merged in float32 by their log-sum-exps.
    ``compiled``: the parts on the compiled kernel where it applies (``_attend_with_lse``).
    """
    import torch

    rows, heads, _, dim = query.shape
    kv_heads = prefix_key.shape[1]
    group = heads // kv_heads
    # (k, heads, 1, d) -> (k, kv, g, d): each row's query heads under their KV head.
    folded = query.reshape(rows, kv_heads, group, dim)
    # All rows' queries for a KV head side by side: (1, kv, k * g, d).
    together = folded.transpose(0, 1).reshape(1, kv_heads, rows * group, dim)
    prefix_out, prefix_lse = _attend_with_lse(together, prefix_key, prefix_value, scaling, compiled=compiled)
    prefix_out = prefix_out.reshape(kv_heads, rows, group, -1).transpose(0, 1)  # (k, kv, g, d)
    prefix_lse = prefix_lse.reshape(kv_heads, rows, group).transpose(0, 1)
    own_out, own_lse = [], []
    for row, (key, value) in enumerate(suffixes):
        out, lse = _attend_with_lse(folded[row : row + 1], key, value, scaling, compiled=compiled)
        own_out.append(out)
        own_lse.append(lse)
    suffix_out, suffix_lse = torch.cat(own_out), torch.cat(own_lse)  # (k, kv, g, d), (k, kv, g)
    merged = merge_by_lse(prefix_out, prefix_lse, suffix_out, suffix_lse)
    return merged.to(query.dtype).reshape(rows, 1, heads, -1)


def merge_by_lse(first: Any, first_lse: Any, second: Any, second_lse: Any) -> Any:
    """Softmax attention over the union of two key sets from each set's output and log-sum-exp (float32).

    The first part's weight is ``e^l1 / (e^l1 + e^l2) = sigmoid(l1 - l2)``, so the merge is one
    interpolation: ``o2 + (o1 - o2) * sigmoid(l1 - l2)``, the same value as the max-shifted form.
    """
    import torch

    weight = torch.sigmoid(first_lse - second_lse).unsqueeze(-1)
    return torch.lerp(second.float(), first.float(), weight)


def piece_attention(
    query: Any,
    key: Any,
    value: Any,
    prefix: SharedPrefix | None,
    layer: int,
    scaling: float,
    compiled: bool = False,
) -> Any:
    """Causal attention of a row's new tokens ``(1, heads, n, dim)`` over its cache (and prefix): ``(1, n, heads, dim)``.

    ``key``/``value`` ``(1, kv, m, dim)`` end with the ``n`` new tokens; token ``j`` sees the cache up
    to itself and the whole prefix. Heads folded under their KV head; parts merged by log-sum-exp.
    """
    return pieces_attention([query], [(key, value)], prefix, layer, scaling, compiled)[0]


def pieces_attention(
    queries: Sequence[Any],
    caches: Sequence[tuple[Any, Any]],
    prefix: SharedPrefix | None,
    layer: int,
    scaling: float,
    compiled: bool = False,
) -> list[Any]:
    """``piece_attention`` for several rows over one shared prefix (or none), the prefix read in one call.

    Every row's folded queries go against the prefix together (one attention call over all their
    tokens instead of one per row: a quarter less time for 8 rows of 25 tokens over 1,600 here);
    each row's own part stays its own causal call. ``compiled``: the parts on the compiled kernel where
    it applies (``cpu/prefill_attention.py``).
    """
    import torch

    folded_parts, own_parts = [], []
    for query, (key, value) in zip(queries, caches, strict=True):
        _, heads, count, dim = query.shape
        kv_heads = key.shape[1]
        group = heads // kv_heads
        folded = query.reshape(1, kv_heads, group * count, dim)  # (g, n) rows under each KV head
        folded_parts.append(folded)
        if compiled and (own := _own_part_compiled(query, key, value, scaling)) is not None:
            own_parts.append(own)
            continue
        seen = key.shape[-2] - count
        visible = torch.arange(key.shape[-2], device=query.device) <= (
            seen + torch.arange(count, device=query.device)
        ).unsqueeze(-1)
        mask = None if count == 1 else visible.repeat(group, 1)
        own_parts.append(_attend_with_lse(folded, key, value, scaling, mask))
    if prefix is not None:
        together = folded_parts[0] if len(folded_parts) == 1 else torch.cat(folded_parts, dim=2)
        prefix_out, prefix_lse = _attend_with_lse(
            together, prefix.keys[layer], prefix.values[layer], scaling, compiled=compiled
        )
        sizes = [folded.shape[2] for folded in folded_parts]
        prefix_outs, prefix_lses = prefix_out.split(sizes, dim=2), prefix_lse.split(sizes, dim=2)
    outputs = []
    for index, (query, (own_out, own_lse)) in enumerate(zip(queries, own_parts, strict=True)):
        _, heads, count, _ = query.shape
        merged = own_out
        if prefix is not None:
            merged = merge_by_lse(prefix_outs[index], prefix_lses[index], own_out, own_lse).to(query.dtype)
        outputs.append(merged.reshape(1, heads, count, -1).transpose(1, 2))
    return outputs


def _own_part_compiled(query: Any, key: Any, value: Any, scaling: float) -> tuple[Any, Any] | None:
    """A row's causal attention over its own cache on the compiled kernel, folded as ``pieces_attention``
    folds it: output ``(1, kv, g * n, d)`` and log-sum-exp ``(1, kv, g * n)``; None where it does not apply."""
    from hermes_core.engines.local.cpu.prefill_attention import attention_with_lse

    computed = attention_with_lse(query, key, value, scaling, causal=True)
    if computed is None:
        return None
    output, lse = computed
    kv_heads, rows = key.shape[1], query.shape[1] * query.shape[2] // key.shape[1]
    return output.reshape(1, kv_heads, rows, -1), lse.reshape(1, kv_heads, rows)
