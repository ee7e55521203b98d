"""Prepacked oneDNN bf16 linears (hermes_core.engines.local.cpu.prepacked_linear): identical numbers, dense copies freed, pairs left alone."""

from __future__ import annotations

import pytest
import torch

from hermes_core.engines.local.cpu import prepacked_linear as _cpu_linear
from hermes_core.engines.local.loading import load_model

PROMPT = torch.tensor([[1, 5, 9, 17, 33, 2, 8, 100, 7, 7, 3]])
needs_prepacking = pytest.mark.skipif(
    not _cpu_linear.prepacking_available(), reason="this torch build has no prepacked oneDNN linear"
)


def _greedy_with_logits(model, new_tokens: int = 10):
    with torch.inference_mode():
        out = model.generate(
            PROMPT,
            attention_mask=torch.ones_like(PROMPT),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
        )
    return out.sequences[0].tolist(), torch.stack(out.logits)


def _linears(model):
    return [m for m in model.modules() if type(m) is torch.nn.Linear]


@needs_prepacking
def test_prepacked_model_computes_the_same_bits(tiny_model_dir):
    dense = load_model(tiny_model_dir, torch_dtype="bfloat16", progress=False, prepack_linear=False)
    packed = load_model(tiny_model_dir, torch_dtype="bfloat16", progress=False)
    assert dense.prepacked_linears == 0
    assert packed.prepacked_linears == len(_linears(packed.model)) == 2 * 7 + 1
    with torch.inference_mode():
        assert torch.equal(dense.model(PROMPT).logits, packed.model(PROMPT).logits)  # many rows per call
    tokens, logits = _greedy_with_logits(dense.model)
    packed_tokens, packed_logits = _greedy_with_logits(packed.model)
    assert tokens == packed_tokens and torch.equal(logits, packed_logits)  # one row per call


@needs_prepacking
def test_dense_copies_are_freed_except_a_tied_output_layer(tiny_model_dir):
    loaded = load_model(tiny_model_dir, torch_dtype="bfloat16", progress=False)
    model = loaded.model
    attention = model.model.layers[0].self_attn
    assert attention.q_proj.weight.numel() == 0 and model.model.layers[1].mlp.down_proj.weight.numel() == 0
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tied: the embedding still needs it
    assert model.lm_head.weight.shape == (model.config.vocab_size, model.config.hidden_size)
    body = sum(p.numel() for name, p in model.named_parameters() if ".layers." in name and p.dim() == 2)
    assert body == 0
    dense = load_model(tiny_model_dir, torch_dtype="bfloat16", progress=False, prepack_linear=False)
    # A packed copy replaces each dense weight; the tied output layer keeps the embedding as well.
    output_layer = model.lm_head.weight.numel() * 2
    assert loaded.weight_bytes() == dense.weight_bytes() + output_layer


@needs_prepacking
def test_a_loaded_pair_is_packed_only_on_request_and_keeps_its_weights(tiny_model_dir):
    mine = load_model(tiny_model_dir, torch_dtype="bfloat16", progress=False, prepack_linear=False)
    before = {name: p.clone() for name, p in mine.model.named_parameters()}
    assert load_model((mine.model, mine.tokenizer), progress=False).prepacked_linears == 0
    opted_in = load_model((mine.model, mine.tokenizer), progress=False, prepack_linear=True)
    assert opted_in.prepacked_linears == 2 * 7 + 1
    after = dict(mine.model.named_parameters())
    assert all(torch.equal(before[name], after[name]) for name in before)


def test_float32_models_and_builds_without_the_op_are_left_alone(tiny_model_dir, monkeypatch):
    fp32 = load_model(tiny_model_dir, torch_dtype="float32", progress=False)
    assert fp32.prepacked_linears == 0
    assert all("forward" not in vars(m) for m in _linears(fp32.model))
    monkeypatch.setattr(_cpu_linear, "prepacking_available", lambda: False)
    bf16 = load_model(tiny_model_dir, torch_dtype="bfloat16", progress=False)
    assert bf16.prepacked_linears == 0
    assert all(m.weight.numel() > 0 for m in _linears(bf16.model))


@needs_prepacking
def test_four_bit_models_pack_only_their_bf16_output_layer(tiny_model_dir):
    pytest.importorskip("bitsandbytes")
    loaded = load_model(tiny_model_dir, quantization="4bit", torch_dtype="bfloat16", progress=False)
    assert loaded.prepacked_linears == 1
    assert "forward" in vars(loaded.model.lm_head)
