"""The compiled prefill attention (``cpu/prefill_attention.cpp``): as accurate as torch's kernel, same bits on
any thread count, and used only for the causal prompt pieces it computes."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from hermes_core.engines.local.cpu import native_step, prefill_attention
from hermes_core.engines.local.loading import load_model


@pytest.fixture(scope="module")
def native():
    module = native_step.extension(wait=True)
    assert module is not None, f"the compiled module did not build: {native_step.failure()}"
    if not module.prefill_attention_available():
        pytest.skip("this CPU has no AVX-512 BF16, or has AMX: prefill attention stays with torch's kernel")
    return module


def _causal(queries: int, keys: int) -> torch.Tensor:
    """Query i sees keys j <= keys - queries + i (a piece after cached keys)."""
    return torch.arange(keys)[None, :] <= (keys - queries + torch.arange(queries))[:, None]


def _reference(query, key, value, scale):
    """float64 causal attention, (batch, queries, heads, dim)."""
    group = query.shape[1] // key.shape[1]
    keys = key.double().repeat_interleave(group, 1)
    values = value.double().repeat_interleave(group, 1)
    scores = (query.double() @ keys.transpose(-1, -2)) * scale
    scores = scores.masked_fill(~_causal(query.shape[2], key.shape[2]), float("-inf"))
    return (torch.softmax(scores, -1) @ values).transpose(1, 2)


def _inputs(batch, heads, kv_heads, queries, keys, dim, capacity=None, seed=0):
    """bf16 query and keys/values; keys/values as views of a longer buffer (a growing KV cache) if ``capacity``."""
    generator = torch.Generator().manual_seed(seed)
    query = torch.randn(batch, heads, queries, dim, generator=generator).to(torch.bfloat16)
    rows = capacity or keys
    # Keys grow in size along the sequence, so the largest scores sit in later key chunks (online rescaling).
    growth = torch.linspace(0.5, 3.0, rows)[None, None, :, None]
    key = (torch.randn(batch, kv_heads, rows, dim, generator=generator) * growth).to(torch.bfloat16)
    value = torch.randn(batch, kv_heads, rows, dim, generator=generator).to(torch.bfloat16)
    return query, key[:, :, :keys], value[:, :, :keys]


SHAPES = [  # batch, heads, kv heads, queries, keys, head size
    (1, 9, 3, 512, 1600, 64),  # the embedded model's piece after a cached tools prompt
    (1, 9, 3, 300, 300, 64),  # a first piece: queries == keys, several key chunks
    (1, 9, 3, 5, 5, 64),
    (2, 32, 8, 37, 100, 64),  # two batch rows, a query block that is not full
    (1, 32, 8, 70, 300, 128),
    (1, 8, 2, 33, 600, 128),
    (1, 4, 4, 2, 17, 64),  # no grouping
]


@pytest.mark.parametrize("shape", SHAPES, ids=[str(shape) for shape in SHAPES])
def test_as_accurate_as_torchs_kernel(native, shape):
    batch, heads, kv_heads, queries, keys, dim = shape
    query, key, value = _inputs(*shape, capacity=keys + 40)
    scale = dim**-0.5
    exact = _reference(query, key, value, scale)
    ours = native.prefill_attention(query, key, value, scale)
    assert ours.shape == (batch, queries, heads, dim) and ours.dtype == torch.bfloat16
    torchs = torch.nn.functional.scaled_dot_product_attention(
        query,
        key.repeat_interleave(heads // kv_heads, 1),
        value.repeat_interleave(heads // kv_heads, 1),
        attn_mask=_causal(queries, keys),
        scale=scale,
    ).transpose(1, 2)
    our_error, torch_error = (ours.double() - exact).abs(), (torchs.double() - exact).abs()
    assert our_error.max() <= torch_error.max() + 2e-3
    assert our_error.mean() <= torch_error.mean() * 1.2 + 1e-5


def test_the_same_bits_on_one_thread_and_on_two(native):
    query, key, value = _inputs(1, 9, 3, 200, 700, 64)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = native.prefill_attention(query, key, value, 0.125)
        torch.set_num_threads(2)
        two = native.prefill_attention(query, key, value, 0.125)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, two)


def test_a_piece_gives_the_rows_of_the_whole_prompt_computed_at_once(native):
    """What a prefix-cache hit relies on: the last piece's rows do not depend on how earlier keys were fed."""
    query, key, value = _inputs(1, 9, 3, 400, 400, 64)
    whole = native.prefill_attention(query, key, value, 0.125)
    piece = native.prefill_attention(query[:, :, 250:], key, value, 0.125)
    assert torch.equal(whole[:, 250:], piece)


def test_the_mask_check_accepts_only_the_causal_mask_after_cached_keys(native):
    causal = _causal(7, 20)[None, None]
    assert native.is_causal_after_cache(causal)
    assert native.is_causal_after_cache(_causal(20, 20)[None, None].expand(2, 1, 20, 20))
    padded = causal.repeat(2, 1, 1, 1)
    padded[1, 0, :, 0] = False  # left padding in the second batch row
    assert not native.is_causal_after_cache(padded)
    top_left = torch.ones(7, 20, dtype=torch.bool).tril()[None, None]  # is_causal's alignment
    assert not native.is_causal_after_cache(top_left)
    widened = causal.clone()
    widened[0, 0, 0, 14] = True  # one future key visible
    assert not native.is_causal_after_cache(widened)
    assert not native.is_causal_after_cache(torch.zeros(1, 1, 7, 20).masked_fill(~causal, float("-inf")))
    assert not native.is_causal_after_cache(causal.expand(1, 3, 7, 20))


def test_applies_only_to_marked_causal_bf16_pieces_it_supports(native):
    marked = SimpleNamespace(is_causal=True, **{prefill_attention.MARK: True})
    query, key, value = _inputs(1, 4, 2, 6, 6, 64)
    applies = prefill_attention.applies
    assert applies(marked, query, key, value, None, {}, 0.0)
    assert applies(marked, query[:, :, 2:], key, value, _causal(4, 6)[None, None], {}, 0.0)
    assert not applies(marked, query[:, :, 2:], key, value, None, {}, 0.0)  # no mask, fewer queries than keys
    assert not applies(SimpleNamespace(is_causal=True), query, key, value, None, {}, 0.0)  # not marked
    assert not applies(marked, query[:, :, :1], key[:, :, :1], value[:, :, :1], None, {}, 0.0)  # one token
    assert not applies(marked, query.float(), key.float(), value.float(), None, {}, 0.0)
    small = [tensor[..., :32].contiguous() for tensor in (query, key, value)]
    assert not applies(marked, *small, None, {}, 0.0)  # head size 32
    assert not applies(marked, query, key, value, None, {"is_causal": False}, 0.0)
    assert not applies(marked, query, key, value, None, {}, 0.1)  # dropout
    assert not applies(marked, query, key, value, None, {"softcap": 30.0}, 0.0)
    wider = _causal(6, 10)[None, None]  # a static cache's mask: more key slots than keys given
    assert native.is_causal_after_cache(wider) and not applies(marked, query, key, value, wider, {}, 0.0)


def test_loads_mark_bf16_grouped_attention_unless_native_is_off(tiny_model_dir):
    bf16 = load_model(tiny_model_dir, torch_dtype="bfloat16", progress=False)
    assert bf16.native_prefill_layers == 2
    off = load_model(tiny_model_dir, torch_dtype="bfloat16", progress=False, native_decode=False)
    assert off.native_prefill_layers == 0
    assert load_model(tiny_model_dir, torch_dtype="float32", progress=False).native_prefill_layers == 0


@pytest.mark.slow
def test_the_embedded_models_prefill_runs_on_it_as_close_to_float32_as_torchs_kernel(native, monkeypatch):
    bf16 = load_model(None, torch_dtype="bfloat16", progress=False)
    float32 = load_model(None, torch_dtype="float32", progress=False)
    assert bf16.native_prefill_layers == 30
    calls = []
    kernel = prefill_attention.prefill_attention

    def counted(*args):
        calls.append(args[0].shape[2])
        return kernel(*args)

    monkeypatch.setattr(prefill_attention, "prefill_attention", counted)
    for text in (
        "Tell me about the weather in Paris and London. " * 30,
        "def f(x):\n    return x * 2\n" * 50,
    ):
        ids = bf16.tokenizer(text).input_ids
        calls.clear()
        exact, ours = _log_probs(float32, ids), _log_probs(bf16, ids)
        assert calls == [len(ids)] * 30
        _set_marks(bf16.model, False)
        try:
            torchs = _log_probs(bf16, ids)
        finally:
            _set_marks(bf16.model, True)
        assert len(calls) == 30
        ours_off, torchs_off = _divergence(exact, ours), _divergence(exact, torchs)
        assert ours_off <= 1.5 * torchs_off + 1e-4, (ours_off, torchs_off)


def _log_probs(loaded, ids):
    """Next-token log-probabilities after a cold prefill of ``ids``, as the engine computes them."""
    from hermes_core.engines.local.engine import LocalEngine
    from hermes_core.engines.local.kv_cache import new_kv_cache

    logits = LocalEngine(loaded, prefix_cache=False)._row_logits(ids, new_kv_cache(loaded.model))
    return torch.log_softmax(logits[0].float(), -1)


def _divergence(exact, approximate) -> float:
    """KL(exact || approximate) of two log-probability vectors."""
    return float((exact.exp() * (exact - approximate)).sum())


def _set_marks(model, value: bool) -> None:
    for module in model.modules():
        if hasattr(module, prefill_attention.MARK):
            setattr(module, prefill_attention.MARK, value)


def _softmax_attention(query, keys, values, visible, scale):
    """float64 attention of query (1, heads, n, dim) over keys/values (1, kv, m, dim) where ``visible`` (n, m)."""
    group = query.shape[1] // keys.shape[1]
    keys, values = (tensor.double().repeat_interleave(group, 1) for tensor in (keys, values))
    scores = (query.double() @ keys.transpose(-1, -2)) * scale
    return (torch.softmax(scores.masked_fill(~visible, float("-inf")), -1) @ values).transpose(1, 2)


def test_shared_prefix_attention_on_the_kernel_is_as_accurate_as_without(native, monkeypatch):
    """Batched steps over a shared prefix merge partial attentions by log-sum-exp; the kernel's parts merge as well."""
    from hermes_core.engines.local.shared_prefix import SharedPrefix, cascade_attention, pieces_attention

    calls = []
    kernel = prefill_attention.attention_with_lse
    monkeypatch.setattr(
        prefill_attention,
        "attention_with_lse",
        lambda *args, **kwargs: calls.append(1) or kernel(*args, **kwargs),
    )
    generator = torch.Generator().manual_seed(3)
    heads, kv_heads, dim, scale = 9, 3, 64, 0.125

    def bf16(*shape):
        return torch.randn(*shape, generator=generator).to(torch.bfloat16)

    prefix_key, prefix_value = bf16(1, kv_heads, 300, dim) * 2, bf16(1, kv_heads, 300, dim)
    # One-token steps of four rows (cascade_attention).
    query = bf16(4, heads, 1, dim)
    suffixes = [(bf16(1, kv_heads, n, dim) * 2, bf16(1, kv_heads, n, dim)) for n in (1, 7, 20, 65)]
    errors = {}
    for compiled in (True, False):
        merged = cascade_attention(query, prefix_key, prefix_value, suffixes, scale, compiled=compiled)
        worst = 0.0
        for row, (key, value) in enumerate(suffixes):
            keys, values = torch.cat([prefix_key, key], 2), torch.cat([prefix_value, value], 2)
            exact = _softmax_attention(
                query[row : row + 1], keys, values, torch.ones(1, keys.shape[2], dtype=torch.bool), scale
            )
            worst = max(worst, float((merged[row : row + 1].double() - exact).abs().max()))
        errors[compiled] = worst
    assert calls and errors[True] <= errors[False] + 2e-3, errors
    # Prompt pieces of three rows over the prefix (pieces_attention).
    calls.clear()
    prefix = SharedPrefix(list(range(300)), [prefix_key], [prefix_value])
    pieces = [(0, 5), (3, 1), (6, 40)]  # own tokens cached before the piece, tokens in it
    queries = [bf16(1, heads, count, dim) for _, count in pieces]
    caches = [
        (bf16(1, kv_heads, seen + count, dim) * 2, bf16(1, kv_heads, seen + count, dim))
        for seen, count in pieces
    ]
    errors = {}
    for compiled in (True, False):
        outputs = pieces_attention(queries, caches, prefix, 0, scale, compiled=compiled)
        worst = 0.0
        for query, (key, value), output in zip(queries, caches, outputs, strict=True):
            count, length = query.shape[2], key.shape[2]
            own = torch.arange(length) <= (length - count + torch.arange(count)).unsqueeze(-1)
            visible = torch.cat([torch.ones(count, 300, dtype=torch.bool), own], dim=1)
            keys, values = torch.cat([prefix_key, key], 2), torch.cat([prefix_value, value], 2)
            worst = max(
                worst,
                float(
                    (output.double() - _softmax_attention(query, keys, values, visible, scale)).abs().max()
                ),
            )
        errors[compiled] = worst
    assert calls and errors[True] <= errors[False] + 2e-3, errors
