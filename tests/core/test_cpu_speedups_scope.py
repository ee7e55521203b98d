"""Where the CPU decode speed-ups apply: CPU models, a pair passed in (in place, unless switched off), no other device.

No GPU is lent here, so a model on the ``meta`` device stands in for one: what is checked is the
device test each speed-up makes before it touches a model, which is the same for any non-CPU device.
"""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM

from hermes_core.engines.local.cpu.folded_attention import ATTENTION_NAME, use_grouped_decode_attention
from hermes_core.engines.local.cpu.lean_decode import use_lean_decode_layers
from hermes_core.engines.local.cpu.prepacked_linear import prepack_cpu_linears, prepacking_available
from hermes_core.engines.local.loading import load_model


def _bf16_model(path, device: str):
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16, attn_implementation="sdpa")
    return model.to(device)


def test_speedups_apply_on_cpu(tiny_model_dir):
    model = _bf16_model(tiny_model_dir, "cpu")
    assert use_lean_decode_layers(model) == len(model.model.layers)
    assert use_grouped_decode_attention(model)
    if prepacking_available():
        assert prepack_cpu_linears(model, release_dense=False) > 0


def test_speedups_leave_a_model_on_another_device_alone(tiny_model_dir):
    model = _bf16_model(tiny_model_dir, "meta")
    assert use_lean_decode_layers(model) == 0
    assert not use_grouped_decode_attention(model)
    assert model.config._attn_implementation == "sdpa"
    assert prepack_cpu_linears(model, release_dense=True) == 0
    assert not any("forward" in vars(module) for module in model.modules())


def test_a_pair_passed_in_is_sped_up_in_place_unless_switched_off(tiny_model_dir):
    model = _bf16_model(tiny_model_dir, "cpu")
    tokenizer = load_model(tiny_model_dir, progress=False).tokenizer
    off = {"direct_4bit_kernel": False, "grouped_decode_attention": False, "lean_decode": False}
    untouched = load_model((model, tokenizer), progress=False, **off)
    assert untouched.lean_decode_layers == 0 and not untouched.grouped_decode_attention
    assert model.config._attn_implementation == "sdpa"
    assert not any("forward" in vars(module) for module in model.modules())
    sped_up = load_model((model, tokenizer), progress=False)
    assert sped_up.lean_decode_layers == len(model.model.layers)
    assert model.config._attn_implementation == ATTENTION_NAME
