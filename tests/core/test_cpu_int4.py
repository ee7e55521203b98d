"""quantization="int4": Q4_1-style groups on torch's CPU int4 kernel (hermes_core.engines.local.cpu.int4_linear)."""

from __future__ import annotations

import pytest
import torch

from hermes_core.engines.local.cpu.int4_linear import (
    GROUP_SIZE,
    Int4Group,
    dequantize_rows,
    int4_kernels_available,
    quantize_rows,
)
from hermes_core.engines.local.loading import load_model
from hermes_core.engines.local.quantization import bnb_config, resolve_quantization
from hermes_core.errors import UnsupportedOptionError

pytestmark = pytest.mark.skipif(not int4_kernels_available(), reason="this torch has no CPU int4 kernels")


def _q4_1_weight(rows: int, columns: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A float32 weight made of Q4_1 blocks (scale * code + minimum, codes 0 and 15 in every block), and its codes."""
    generator = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 16, (rows, columns // GROUP_SIZE, GROUP_SIZE), generator=generator)
    codes[..., 0], codes[..., 1] = 0, 15  # llama.cpp's Q4_1 maps each block's min and max to 0 and 15
    scale = (torch.rand(rows, columns // GROUP_SIZE, generator=generator) * 0.02 + 0.001).half().float()
    low = (torch.randn(rows, columns // GROUP_SIZE, generator=generator) * 0.05).half().float()
    weight = codes.float() * scale[..., None] + low[..., None]
    return weight.reshape(rows, columns), codes.reshape(rows, columns).to(torch.int32)


def test_a_dequantised_q4_1_weight_comes_back_as_its_own_codes():
    weight, codes = _q4_1_weight(96, 128)
    found, scale, low = quantize_rows(weight)
    assert torch.equal(found, codes)
    assert torch.allclose(dequantize_rows(found, scale, low), weight, atol=1e-6)


def test_the_kernel_multiplies_by_the_dequantised_weight():
    weight, _ = _q4_1_weight(160, 256, seed=1)
    group = Int4Group([weight], [None])
    x = torch.randn(3, 256).to(torch.bfloat16)
    expected = x.float() @ weight.t()
    got = group.run_joined(x).float()
    assert got.shape == (3, 160)
    # bf16 activations and bf16 scale/zero: within bf16 rounding of the float result.
    assert (got - expected).abs().max() <= 0.02 * expected.abs().max()


def test_siblings_packed_together_give_each_members_own_product():
    weights = [_q4_1_weight(n, 64, seed=n)[0] for n in (64, 32, 32)]
    biases = [torch.randn(n) for n in (64, 32, 32)]
    joined = Int4Group(weights, biases)
    x = torch.randn(1, 64).to(torch.bfloat16)
    parts = joined.run_all(x)
    for index, (weight, bias) in enumerate(zip(weights, biases, strict=True)):
        alone = Int4Group([weight], [bias]).run_joined(x)
        assert torch.equal(parts[index], alone)


def test_int4_needs_no_bitsandbytes_and_is_cpu_only(monkeypatch):
    from hermes_core.engines.local import quantization

    monkeypatch.setattr(quantization, "bitsandbytes_available", lambda: False)
    assert resolve_quantization("INT4", "cpu") == "int4"
    assert bnb_config("int4", "cpu") is None
    with pytest.raises(UnsupportedOptionError, match='quantization="4bit" there'):
        resolve_quantization("int4", "cuda")


def test_loading_with_int4_packs_every_projection(tiny_model_dir):
    loaded = load_model(tiny_model_dir, progress=False, quantization="int4")
    layer = loaded.model.model.layers[0]
    names = ("q_proj", "k_proj", "v_proj", "o_proj")
    assert all(type(getattr(layer.self_attn, name)).__name__ == "Int4Linear" for name in names)
    assert type(layer.mlp.down_proj).__name__ == "Int4Linear"
    assert type(loaded.model.lm_head).__name__ != "Int4Linear"  # the output head stays as it was
    assert loaded.quantization == "int4" and "int4" in loaded.weights_summary()
    step = layer.forward.__self__  # the lean decode step takes q/k/v and gate/up from one call each
    assert step.qkv_group is layer.self_attn.q_proj._direct_kernel_group
    assert step.gate_up_group is layer.mlp.gate_proj._direct_kernel_group
    dense = load_model(tiny_model_dir, progress=False, torch_dtype="bfloat16")
    assert loaded.weight_bytes() < dense.weight_bytes()


def test_int4_generation_streams_what_it_generates(tiny_model_dir):
    from hermes_core import Message, load_engine

    engine = load_engine(tiny_model_dir, progress=False, quantization="int4", prefix_cache=False)
    messages = [Message("user", "What is the weather in Paris?")]
    whole = engine.generate(messages, max_new_tokens=24, constrained=False)
    events = list(engine.stream(messages, max_new_tokens=24, constrained=False))
    assert events[-1].result.raw_text == whole.raw_text
    assert whole.usage.completion_tokens > 0


def test_auto_picks_int4_on_a_bf16_cpu_and_nf4_without_torchs_int4_kernels(monkeypatch):
    from hermes_core.engines.local import quantization

    monkeypatch.setattr(quantization, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(quantization, "bitsandbytes_available", lambda: True)
    assert resolve_quantization("auto", "cpu") == "int4"
    monkeypatch.setattr(quantization, "_int4_available", lambda: False)
    assert resolve_quantization("auto", "cpu") == "4bit"


def test_long_prefill_chunks_unpack_the_weights_the_kernel_multiplies_by():
    from hermes_core.engines.local.cpu import int4_linear

    weight, codes = _q4_1_weight(192, 128, seed=3)
    group = Int4Group([weight], [None])
    assert group._unpackable  # this torch packs in the layout _unpack reads
    assert torch.equal(int4_linear._unpack(group.packed, 192, 128).to(torch.int32), codes)
    x = torch.randn(int4_linear.DENSE_FROM_ROWS, 128).to(torch.bfloat16)
    kernel = torch.ops.aten._weight_int4pack_mm_for_cpu(x, group.packed, GROUP_SIZE, group.scales_and_zeros)
    dense = group.run_joined(x)  # enough rows for the unpacked bf16 matmul
    assert (dense.float() - kernel.float()).abs().max() <= 0.01 * kernel.float().abs().max()
