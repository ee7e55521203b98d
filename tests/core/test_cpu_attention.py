"""Folded-head decode attention (hermes_core.engines.local.cpu.folded_attention): where it applies, and that it computes attention."""

from __future__ import annotations

import pytest
import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from hermes_core import Message, load_engine
from hermes_core.engines.local.cpu.folded_attention import ATTENTION_NAME, grouped_decode_attention
from hermes_core.engines.local.loading import load_model


class _Attention(torch.nn.Module):
    """What transformers' attention function reads from the module: the GQA group size."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.num_key_value_groups = groups
        self.is_causal = True


def _qkv(dtype, length: int, q_len: int = 1, heads: int = 9, kv_heads: int = 3, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    shape = (1, heads, q_len, 64), (1, kv_heads, length, 64)
    q = torch.randn(shape[0], generator=generator).to(dtype)
    k = (torch.randn(shape[1], generator=generator) * 2).to(dtype)
    v = torch.randn(shape[1], generator=generator).to(dtype)
    return q, k, v


def _reference(q, k, v) -> torch.Tensor:
    """Attention of one query token in float64, laid out as transformers returns it: (batch, 1, heads, dim)."""
    groups = q.shape[1] // k.shape[1]
    k64, v64 = (t.double().repeat_interleave(groups, dim=1) for t in (k, v))
    weights = torch.softmax(q.double() @ k64.transpose(-1, -2) * 0.125, dim=-1)
    return (weights @ v64).transpose(1, 2)


@pytest.mark.parametrize("length", [1, 7, 300, 1600])
def test_one_token_step_matches_exact_attention_as_closely_as_transformers_sdpa(length):
    q, k, v = _qkv(torch.bfloat16, length)
    module = _Attention(groups=3)
    ours, _ = grouped_decode_attention(module, q, k, v, None, scaling=0.125)
    theirs, _ = sdpa_attention_forward(module, q, k, v, None, scaling=0.125)
    assert ours.shape == theirs.shape == (1, 1, 9, 64) and ours.is_contiguous()
    exact = _reference(q, k, v)
    our_error = (ours.double() - exact).abs().mean().item()
    their_error = (theirs.double() - exact).abs().mean().item()
    assert our_error <= their_error * 1.05 + 1e-6
    assert torch.allclose(ours.float(), theirs.float(), atol=2e-2)


def test_one_token_step_takes_the_folded_layout(monkeypatch):
    seen = []
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(query, key, value, **kwargs):
        seen.append((tuple(query.shape), kwargs.get("enable_gqa", False)))
        return real(query, key, value, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    q, k, v = _qkv(torch.bfloat16, 40)
    grouped_decode_attention(_Attention(groups=3), q, k, v, None, scaling=0.125)
    assert seen == [((1, 3, 3, 64), False)]  # query heads folded into their key/value head's rows


@pytest.mark.parametrize(
    "dtype, q_len, mask",
    [
        (torch.float32, 1, False),  # fp32: torch's GQA kernel is fast and exact there
        (torch.bfloat16, 5, False),  # prefill chunks: unchanged, so warm == cold in the prefix cache
        (torch.bfloat16, 1, True),  # masks (padding): transformers' own path
    ],
)
def test_everything_else_is_transformers_sdpa_bit_for_bit(dtype, q_len, mask):
    q, k, v = _qkv(dtype, 32, q_len=q_len)
    attention_mask = torch.ones(1, 1, q_len, 32, dtype=torch.bool) if mask else None
    attention_mask = attention_mask.tril(32 - q_len) if mask else None
    module = _Attention(groups=3)
    ours, _ = grouped_decode_attention(module, q, k, v, attention_mask, scaling=0.125)
    theirs, _ = sdpa_attention_forward(module, q, k, v, attention_mask, scaling=0.125)
    assert torch.equal(ours, theirs)


def test_applied_to_bf16_gqa_models_on_cpu_only(tiny_model_dir):
    bf16 = load_model(tiny_model_dir, torch_dtype="bfloat16", progress=False)
    assert bf16.grouped_decode_attention and bf16.model.config._attn_implementation == ATTENTION_NAME
    fp32 = load_model(tiny_model_dir, torch_dtype="float32", progress=False)
    assert not fp32.grouped_decode_attention and fp32.model.config._attn_implementation == "sdpa"
    off = load_model(tiny_model_dir, torch_dtype="bfloat16", progress=False, grouped_decode_attention=False)
    assert not off.grouped_decode_attention and off.model.config._attn_implementation == "sdpa"


def test_decode_steps_with_folded_attention_follow_sdpa(tiny_model_dir):
    """Same weights, both attention functions, the same tokens fed step by step: logits agree to bf16 rounding."""
    from hermes_core.engines.local.engine import _cache_argument_name
    from hermes_core.engines.local.kv_cache import new_kv_cache

    folded = load_model(tiny_model_dir, torch_dtype="bfloat16", progress=False).model
    plain = load_model(
        tiny_model_dir, torch_dtype="bfloat16", progress=False, grouped_decode_attention=False
    ).model
    prompt = torch.tensor([[1, 5, 9, 17, 33, 2, 8, 100, 7, 7, 3]])
    steps = torch.tensor([[40], [41], [42], [7], [9], [100], [3], [5]])
    logits = []
    for model in (folded, plain):
        cache, rows = new_kv_cache(model), []
        with torch.inference_mode():
            model(prompt, **{_cache_argument_name(): cache}, use_cache=True)
            for token in steps:
                rows.append(
                    model(token[None], **{_cache_argument_name(): cache}, use_cache=True).logits[0, -1]
                )
        logits.append(torch.stack(rows).float())
    assert logits[0].shape == (len(steps), folded.config.vocab_size)
    assert torch.allclose(logits[0], logits[1], atol=3e-2, rtol=2e-2)
    assert not torch.equal(logits[0], torch.zeros_like(logits[0]))


def test_engine_generates_with_folded_attention(tiny_model_dir):
    engine = load_engine(str(tiny_model_dir), torch_dtype="bfloat16", max_new_tokens=6, progress=False)
    assert engine.loaded.grouped_decode_attention
    result = engine.generate([Message("user", "Hi")], constrained=False, temperature=1.0, seed=3)
    assert result.usage.completion_tokens > 0
