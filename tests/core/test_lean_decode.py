"""The lean one-token step of Llama decoder layers (hermes_core.engines.local.cpu.lean_decode): transformers' numbers, bit for bit."""

from __future__ import annotations

import pytest
import torch

from hermes_core.engines.local.cpu.lean_decode import LeanDecodeLayer, use_lean_decode_layers
from hermes_core.engines.local.engine import _cache_argument_name
from hermes_core.engines.local.kv_cache import new_kv_cache
from hermes_core.engines.local.loading import load_model
from tests.tiny_model import build_tiny_qwen2

PROMPT = torch.tensor([[1, 5, 9, 17, 33, 2, 8, 100, 7, 7, 3]])
STEPS = [40, 41, 42, 7, 9, 100, 3, 5, 60, 61]
CACHE = _cache_argument_name()
LOADS = {
    "fp32": {"torch_dtype": "float32"},
    "bf16": {"torch_dtype": "bfloat16"},
    "nf4-bf16": {"torch_dtype": "bfloat16", "quantization": "4bit"},
    "int4": {"quantization": "int4"},
}


def _load(path, name: str, lean: bool):
    """The tiny model loaded as ``name``, its RMSNorm weights made non-trivial (random init leaves them 1)."""
    if LOADS[name].get("quantization") == "4bit":
        pytest.importorskip("bitsandbytes")
    loaded = load_model(path, progress=False, lean_decode=lean, **LOADS[name])
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for module in loaded.model.modules():
            if type(module).__name__ == "LlamaRMSNorm":
                noise = torch.rand(module.weight.shape, generator=generator) + 0.5
                module.weight.copy_(noise.to(module.weight.dtype))
    return loaded


def _step_logits(model) -> torch.Tensor:
    """Logits of a prefill then one-token steps fed fixed tokens (so both sides see the same inputs)."""
    cache, rows = new_kv_cache(model), []
    with torch.inference_mode():
        rows.append(model(PROMPT, **{CACHE: cache}, use_cache=True).logits[0, -1])
        for token in STEPS:
            rows.append(model(torch.tensor([[token]]), **{CACHE: cache}, use_cache=True).logits[0, -1])
    return torch.stack(rows)


@pytest.mark.parametrize("name", list(LOADS))
def test_lean_steps_give_transformers_logits_bit_for_bit(tiny_model_dir, name):
    stock, lean = _load(tiny_model_dir, name, lean=False), _load(tiny_model_dir, name, lean=True)
    assert stock.lean_decode_layers == 0 and lean.lean_decode_layers == 2
    assert torch.equal(_step_logits(stock.model), _step_logits(lean.model))
    if lean.direct_4bit_layers:  # the fused q/k/v and gate/up kernel calls were the ones taken
        step = lean.model.model.layers[0].forward.__self__
        assert step.qkv_group.direct and step.gate_up_group.direct


@pytest.mark.parametrize("name", ["bf16", "nf4-bf16"])
def test_greedy_generation_is_unchanged(tiny_model_dir, name):
    outputs = []
    for lean in (False, True):
        model = _load(tiny_model_dir, name, lean).model
        with torch.inference_mode():
            out = model.generate(
                PROMPT,
                attention_mask=torch.ones_like(PROMPT),
                max_new_tokens=12,
                min_new_tokens=12,
                do_sample=False,
                **{CACHE: new_kv_cache(model)},
            )
        outputs.append(out[0].tolist())
    assert outputs[0] == outputs[1]


def test_lean_path_runs_for_one_token_steps_and_hands_everything_else_back(tiny_model_dir, monkeypatch):
    model = _load(tiny_model_dir, "bf16", lean=True).model
    calls = {"lean": 0, "original": 0}
    for layer in model.model.layers:
        step: LeanDecodeLayer = layer.forward.__self__
        original = step.original

        def counted(*args, _original=original, **kwargs):
            calls["original"] += 1
            return _original(*args, **kwargs)

        step.original = counted
    real_attend = LeanDecodeLayer._attend

    def attend(self, *args, **kwargs):
        calls["lean"] += 1
        return real_attend(self, *args, **kwargs)

    monkeypatch.setattr(LeanDecodeLayer, "_attend", attend)
    _step_logits(model)
    layers = len(model.model.layers)
    assert calls == {"lean": layers * len(STEPS), "original": layers}  # the prefill went to transformers


def test_other_architectures_and_hooked_layers_are_left_alone(tiny_model_dir, tmp_path):
    build_tiny_qwen2(tmp_path, tiny_model_dir)
    assert load_model(tmp_path, torch_dtype="bfloat16", progress=False).lean_decode_layers == 0

    hooked = _load(tiny_model_dir, "bf16", lean=False).model
    hooked.model.layers[0].mlp.register_forward_hook(lambda *args: None)
    assert use_lean_decode_layers(hooked) == 1  # the other layer, which has no hook
    assert "forward" not in vars(hooked.model.layers[0])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_sign_folded_rotation_is_apply_rotary_pos_emb_bit_for_bit(dtype):
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    from hermes_core.engines.local.cpu.lean_decode import RotaryTables, _rotate

    generator = torch.Generator().manual_seed(3)
    query = torch.randn(2, 6, 1, 16, generator=generator).to(dtype)
    key = torch.randn(2, 2, 1, 16, generator=generator).to(dtype)
    cos, sin = (torch.randn(2, 1, 16, generator=generator).to(dtype) for _ in range(2))
    tables = RotaryTables()
    expected = apply_rotary_pos_emb(query, key, cos, sin)
    for _ in range(2):  # the second call reuses the tables made for this (cos, sin)
        signed = tables.for_step(cos, sin, 16)
        assert torch.equal(_rotate(query, *signed), expected[0])
        assert torch.equal(_rotate(key, *signed), expected[1])
    assert tables.for_step(cos, sin, 16) is signed
    fresh_sin = sin.clone()
    assert tables.for_step(cos, fresh_sin, 16) is not signed  # a new step's tensors: new tables
    assert tables.for_step(cos[..., :8], sin[..., :8], 16) is None  # partial rotary: transformers' own path


@pytest.mark.parametrize("name", ["fp32", "nf4-bf16"])
def test_batched_steps_give_transformers_logits_bit_for_bit(tiny_model_dir, name):
    prompt = torch.cat([PROMPT, PROMPT.flip(1)])  # two rows, no padding: the one-token steps carry no mask
    steps = torch.tensor([STEPS, STEPS[::-1]]).T

    def logits(model) -> torch.Tensor:
        cache, rows = new_kv_cache(model), []
        with torch.inference_mode():
            rows.append(model(prompt, **{CACHE: cache}, use_cache=True).logits[:, -1])
            for step in steps:
                rows.append(model(step[:, None], **{CACHE: cache}, use_cache=True).logits[:, -1])
        return torch.stack(rows)

    stock, lean = _load(tiny_model_dir, name, lean=False), _load(tiny_model_dir, name, lean=True)
    assert torch.equal(logits(stock.model), logits(lean.model))


@pytest.mark.parametrize("name", list(LOADS))
def test_one_token_step_gives_the_models_logits_bit_for_bit(tiny_model_dir, name):
    from hermes_core.engines.local.batch_step import LlamaBatchStep

    loaded = _load(tiny_model_dir, name, lean=True)
    step = LlamaBatchStep.for_model(loaded.model, native=False)  # the compiled step: test_native_step.py
    expected = _step_logits(loaded.model)
    cache, rows = new_kv_cache(loaded.model), []
    with torch.inference_mode():
        rows.append(loaded.model(PROMPT, **{CACHE: cache}, use_cache=True).logits[0, -1])
        for token in STEPS:
            rows.append(step.one_token(token, cache)[0])
    assert cache.get_seq_length() == PROMPT.shape[1] + len(STEPS)
    assert torch.equal(torch.stack(rows).float(), expected.float())


def test_a_lone_request_decodes_through_one_token_only_with_lean_layers(tiny_model_dir):
    from hermes_core.engines.local.engine import LocalEngine

    on = LocalEngine(_load(tiny_model_dir, "bf16", lean=True))
    off = LocalEngine(_load(tiny_model_dir, "bf16", lean=False))
    assert on._one_token_step() is not None
    assert off._one_token_step() is None  # lean_decode=False keeps transformers' own forward
