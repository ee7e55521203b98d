"""The output layer in int8 (hermes_core.engines.local.cpu.quantized_head), as quantization="int4" loads it."""

from __future__ import annotations

import pytest
import torch

from hermes_core.engines.local.cpu.int4_linear import int4_kernels_available
from hermes_core.engines.local.cpu.quantized_head import (
    RESCORED,
    int8_kernel_available,
    int8_linear_class,
    quantize_output_head,
    quantize_rows_int8,
)
from hermes_core.engines.local.loading import load_model

pytestmark = pytest.mark.skipif(not int8_kernel_available(), reason="this torch has no CPU int8 kernel")


def _weight(rows: int = 512, columns: int = 64, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(rows, columns, generator=generator) * torch.rand(rows, 1, generator=generator)


def test_codes_stay_within_half_a_step_of_each_weight():
    weight = _weight()
    codes, scale = quantize_rows_int8(weight)
    assert codes.dtype == torch.int8 and int(codes.abs().max()) == 127
    error = (codes.float() * scale[:, None] - weight).abs()
    assert bool((error <= scale[:, None] / 2 + 1e-7).all())


def test_the_kernel_multiplies_by_the_dequantised_weight():
    weight = _weight(seed=1)
    head = int8_linear_class()(weight, torch.float32)
    x = torch.randn(3, 1, 64)
    codes, scale = quantize_rows_int8(weight)
    expected = x @ (codes.float() * scale[:, None]).t()
    got = head(x)
    assert got.shape == (3, 1, 512)
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_a_tied_head_gives_the_dense_heads_own_logits_where_they_are_highest():
    weight = _weight(seed=2).to(torch.bfloat16)
    head = int8_linear_class()(weight.float(), torch.bfloat16, weight)
    plain = int8_linear_class()(weight.float(), torch.bfloat16)
    x = torch.randn(4, 64, generator=torch.Generator().manual_seed(3)).to(torch.bfloat16)
    got = head(x)
    int8_only = plain(x)
    for row in range(4):
        dense = torch.nn.functional.linear(x[row : row + 1], weight)[0]
        # The rescored columns are the int8 logits' top 16 (the result's own top 16 may differ from them).
        top = int8_only[row].topk(RESCORED).indices
        assert torch.equal(got[row, top], dense[top])  # bit for bit, as the dense head computes them
        assert int(got[row].argmax()) == int(dense.argmax())
        rest = torch.ones(512, dtype=torch.bool)
        rest[top] = False
        assert torch.equal(got[row, rest], plain(x[row : row + 1])[0, rest])  # the others: int8


def test_only_a_plain_cpu_head_is_replaced(tiny_model_dir):
    loaded = load_model(tiny_model_dir, progress=False, torch_dtype="float32")
    model = loaded.model
    assert not quantize_output_head(model, torch.float16)  # only bf16 and float32 activations
    assert quantize_output_head(model, torch.float32)
    assert type(model.lm_head).__name__ == "Int8Linear"
    assert model.lm_head._dense[0] is model.get_input_embeddings().weight  # tied: rescored from it
    assert not quantize_output_head(model, torch.float32)  # already done


@pytest.mark.skipif(not int4_kernels_available(), reason="this torch has no CPU int4 kernels")
def test_int4_with_int8_head_and_a_batched_step_equals_one_row_steps(tiny_model_dir):
    from hermes_core.engines.local.batch_step import LlamaBatchStep
    from tests.core.batch_check import assert_batched_equals_one_row_steps

    assert (
        type(load_model(tiny_model_dir, progress=False, quantization="int4").model.lm_head).__name__
        == "Linear"
    )
    loaded = load_model(tiny_model_dir, progress=False, quantization="int4", int8_head=True)
    model = loaded.model
    assert type(model.lm_head).__name__ == "Int8Linear" and "int8 head" in loaded.weights_summary()
    assert model.lm_head._dense[0] is model.get_input_embeddings().weight
    assert model.get_input_embeddings().weight.dtype == model.lm_head.scales.dtype == loaded.dtype
    dense = load_model(tiny_model_dir, progress=False, quantization="int4")
    dense.model.lm_head = torch.nn.Linear(64, model.config.vocab_size, bias=False, dtype=loaded.dtype)
    dense.model.lm_head.weight = model.get_input_embeddings().weight
    step = LlamaBatchStep.for_model(model)
    generator = torch.Generator().manual_seed(0)
    prompts = [torch.randint(10, 300, (n,), generator=generator).tolist() for n in (5, 17, 9)]
    assert_batched_equals_one_row_steps(model, step, prompts, [3, 100, 200], steps=4)
    with torch.inference_mode():
        # The greedy token is the dense head's: same hidden state, same argmax.
        hidden = torch.randn(5, 1, 64).to(loaded.dtype)
        assert torch.equal(model.lm_head(hidden).argmax(-1), dense.model.lm_head(hidden).argmax(-1))
