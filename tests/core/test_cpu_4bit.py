"""The direct CPU 4-bit path (hermes_core.engines.local.cpu.direct_4bit): same numbers as bitsandbytes' own forward, less overhead.

Where the CPU lacks AVX512-BF16, bitsandbytes has no packed kernel, the direct path must stay off,
and the equality checks below still compare the two loads (then both are bitsandbytes' path).
"""

from __future__ import annotations

import pytest
import torch

from hermes_core.engines.local.cpu.direct_4bit import direct_cpu_4bit
from hermes_core.engines.local.loading import load_model
from tests.tiny_model import build_tiny_qwen2

bnb = pytest.importorskip("bitsandbytes")
from bitsandbytes.functional import has_avx512bf16  # noqa: E402

PACKED_KERNEL = bool(has_avx512bf16())
PROMPT = [[1, 5, 9, 17, 33, 2, 8, 100, 7, 7, 3]]


def _load(path, direct: bool, torch_dtype: str = "bfloat16"):
    return load_model(
        path, quantization="4bit", torch_dtype=torch_dtype, progress=False, direct_4bit_kernel=direct
    )


def _greedy(loaded, new_tokens: int = 12) -> list[int]:
    ids = torch.tensor(PROMPT)
    with torch.inference_mode():
        out = loaded.model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
        )
    return out[0, ids.shape[1] :].tolist()


def _logits(loaded) -> torch.Tensor:
    with torch.inference_mode():
        return loaded.model(torch.tensor(PROMPT)).logits


@pytest.mark.parametrize("torch_dtype", ["bfloat16", "float32"])
def test_direct_kernel_gives_bitsandbytes_results_bit_for_bit(tiny_model_dir, torch_dtype):
    own = _load(tiny_model_dir, direct=False, torch_dtype=torch_dtype)
    direct = _load(tiny_model_dir, direct=True, torch_dtype=torch_dtype)
    assert own.direct_4bit_layers == 0
    assert direct.direct_4bit_layers == (2 * 7 if PACKED_KERNEL else 0)
    assert torch.equal(_logits(own), _logits(direct))  # prefill: many rows per call
    assert _greedy(own) == _greedy(direct)  # decode: one row per call, through the KV cache


def test_direct_kernel_fuses_siblings_into_views_without_copying_weights(tiny_model_dir):
    loaded = _load(tiny_model_dir, direct=True)
    _logits(loaded)  # the first call packs and fuses
    attention = loaded.model.model.layers[0].self_attn
    q, k, v = (attention.q_proj.weight, attention.k_proj.weight, attention.v_proj.weight)
    if not PACKED_KERNEL:
        assert "forward" not in vars(attention.q_proj)
        return
    assert q.untyped_storage().data_ptr() == k.untyped_storage().data_ptr() == v.untyped_storage().data_ptr()
    assert k.data_ptr() == q.data_ptr() + q.numel() * q.element_size()
    storages = {
        p.untyped_storage().data_ptr()
        for m in loaded.model.modules()
        if isinstance(m, bnb.nn.Linear4bit)
        for p in [m.weight]
    }
    assert len(storages) == 2 * 4  # per layer: q/k/v, o, gate/up, down
    packed = sum(m.weight.numel() for m in loaded.model.modules() if isinstance(m, bnb.nn.Linear4bit))
    unique = sum(
        s.nbytes()
        for s in {
            id(m.weight.untyped_storage()): m.weight.untyped_storage()
            for m in loaded.model.modules()
            if isinstance(m, bnb.nn.Linear4bit)
        }.values()
    )
    assert unique == packed  # uint8 packed weights: the fused buffers hold exactly the layers' bytes


def test_a_group_member_called_alone_still_gets_its_own_output(tiny_model_dir):
    own = _load(tiny_model_dir, direct=False)
    direct = _load(tiny_model_dir, direct=True)
    _logits(own), _logits(direct)
    torch.manual_seed(0)
    x = torch.randn(1, 3, 64, dtype=torch.bfloat16)
    with torch.inference_mode():
        for name in ("k_proj", "v_proj", "q_proj"):  # out of the usual order, each with a fresh input
            expected = getattr(own.model.model.layers[1].self_attn, name)(x.clone())
            got = getattr(direct.model.model.layers[1].self_attn, name)(x.clone())
            assert torch.equal(expected, got), name
        up = direct.model.model.layers[1].mlp.up_proj
        assert torch.equal(own.model.model.layers[1].mlp.up_proj(x), up(x))
        assert up(x).is_contiguous() and up(x).shape == (1, 3, 128)


def test_routing_twice_leaves_routed_layers_alone(tiny_model_dir):
    loaded = _load(tiny_model_dir, direct=True)
    reference = _greedy(loaded)
    assert direct_cpu_4bit(loaded.model) == 0
    assert _greedy(loaded) == reference


def test_off_switch_keeps_bitsandbytes_forward(tiny_model_dir):
    loaded = _load(tiny_model_dir, direct=False)
    assert loaded.direct_4bit_layers == 0
    assert loaded.weights_summary() == "4bit NF4, rest bfloat16"
    assert all("forward" not in vars(m) for m in loaded.model.modules() if isinstance(m, bnb.nn.Linear4bit))


def test_direct_kernel_applies_to_an_already_loaded_pair(tiny_model_dir):
    own = _load(tiny_model_dir, direct=False)
    loaded = load_model((own.model, own.tokenizer), progress=False)
    assert loaded.direct_4bit_layers == (2 * 7 if PACKED_KERNEL else 0)


def test_projections_with_bias_match_bit_for_bit(tiny_model_dir, tmp_path):
    """Qwen2 has q/k/v biases: the fused call adds them exactly as bitsandbytes does."""
    build_tiny_qwen2(tmp_path, tiny_model_dir, bias_std=0.5)
    own, direct = _load(tmp_path, direct=False), _load(tmp_path, direct=True)
    assert direct.direct_4bit_layers == (2 * 7 if PACKED_KERNEL else 0)
    assert torch.equal(_logits(own), _logits(direct))
    assert _greedy(own) == _greedy(direct)
