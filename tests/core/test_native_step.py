"""The compiled decode step (``cpu/native_step.cpp``) gives the Python lean step's logits bit for bit."""

from __future__ import annotations

import logging

import pytest
import torch

from hermes_core.engines.local.batch_step import LlamaBatchStep, single_row_logits
from hermes_core.engines.local.cpu import native_step
from hermes_core.engines.local.cpu.threads import on_fresh_thread
from hermes_core.engines.local.engine import _cache_argument_name
from hermes_core.engines.local.kv_cache import new_kv_cache
from hermes_core.engines.local.loading import load_model

PROMPT = [1, 5, 9, 17, 33, 2, 8, 100, 7, 7, 3]
CACHE = _cache_argument_name()


@pytest.fixture(scope="module")
def native():
    module = native_step.extension(wait=True)
    assert module is not None, f"the native step did not build: {native_step.failure()}"
    return module


def _steps(step: LlamaBatchStep, model, prompt: list[int], feed: list[int] | int, use_native: bool):
    """(logits of each step, tokens fed, cache) through ``one_token``, natively or in Python.

    ``feed`` is the tokens to feed (so both sides see the same inputs), or a count to feed greedily.
    """
    slot = step._native
    saved = slot.layers, slot.eligible
    if not use_native:
        slot.layers, slot.eligible = None, False
    try:
        cache, rows, fed = new_kv_cache(model), [], []
        with torch.inference_mode():
            logits = single_row_logits(model, CACHE, prompt, cache)
            for index in range(feed if isinstance(feed, int) else len(feed)):
                token = int(logits.argmax()) if isinstance(feed, int) else feed[index]
                logits = step.one_token(token, cache)
                rows.append(logits)
                fed.append(token)
        return torch.cat(rows), fed, cache
    finally:
        slot.layers, slot.eligible = saved


def _compare(step: LlamaBatchStep, model, prompt: list[int], tokens: int) -> tuple[float, float]:
    """(largest logit difference relative to the logits' spread, share of steps with the same top token)."""
    python_logits, fed, python_cache = _steps(step, model, prompt, tokens, use_native=False)
    native_logits, _, native_cache = _steps(step, model, prompt, fed, use_native=True)
    assert native_cache.get_seq_length() == python_cache.get_seq_length() == len(prompt) + tokens
    spread = python_logits.std(dim=-1, keepdim=True)
    relative = ((native_logits - python_logits).abs() / spread).max().item()
    same_top = (native_logits.argmax(-1) == python_logits.argmax(-1)).float().mean().item()
    return relative, same_top


def _int4_tiny(path):
    loaded = load_model(path, progress=False, quantization="int4")
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():  # random init leaves the norms at 1: make them count
        for module in loaded.model.modules():
            if type(module).__name__ == "LlamaRMSNorm":
                module.weight.copy_(
                    (torch.rand(module.weight.shape, generator=generator) + 0.5).to(module.weight.dtype)
                )
    return loaded


def test_attention_kernel_is_as_accurate_as_torchs(native):
    generator = torch.Generator().manual_seed(0)
    for length in (1, 7, 64, 65, 400, 1600):
        query = torch.randn(1, 3, 3, 64, generator=generator).bfloat16()
        room = length + 256  # GrowingLayer hands out views of a longer buffer
        keys = (2 * torch.randn(1, 3, room, 64, generator=generator)).bfloat16()[..., :length, :]
        values = torch.randn(1, 3, room, 64, generator=generator).bfloat16()[..., :length, :]
        exact = torch.softmax(query.double() @ keys.double().transpose(-1, -2) * 0.125, -1) @ values.double()
        ours = native.decode_attention(query, keys, values, 0.125)
        torchs = torch.nn.functional.scaled_dot_product_attention(query, keys, values, scale=0.125)
        assert ours.dtype == torch.bfloat16 and ours.shape == query.shape
        ours_error = (ours.double() - exact).abs().max().item()
        torchs_error = (torchs.double() - exact).abs().max().item()
        assert ours_error <= torchs_error + 2e-3, (length, ours_error, torchs_error)


def test_prefill_unpacking_gives_the_python_weights_bit_for_bit(native):
    from hermes_core.engines.local.cpu.int4_linear import Int4Group

    generator = torch.Generator().manual_seed(1)
    for rows, columns in ((64, 32), (960, 576), (576, 1536), (128, 4096)):
        weights = [torch.randn(rows // 2, columns, generator=generator) for _ in range(2)]
        group = Int4Group(weights, [None, None], native=False)
        python = group.dense_weight()
        compiled = native.dequantize_int4(group.packed, group.scales_and_zeros, rows, columns, 32)
        assert compiled.dtype == torch.bfloat16 and torch.equal(compiled, python), (rows, columns)
        assert torch.equal(Int4Group(weights, [None, None], native=True).dense_weight(), python)


def test_tiny_int4_model_steps_match_the_python_step(tiny_model_dir, native):
    loaded = _int4_tiny(tiny_model_dir)
    step = LlamaBatchStep.for_model(loaded.model)
    assert step._native.eligible and step._native.get() is not None
    relative, same_top = _compare(step, loaded.model, PROMPT, 300)  # past GrowingLayer's first block
    assert relative < 0.05 and same_top >= 0.97, (relative, same_top)


TEXT = (
    "The lighthouse keeper climbed the stairs every evening at dusk. He wound the clockwork, trimmed the "
    "wick and wrote the weather in his book: wind from the west, a light swell, rain before midnight. Ships "
    "passed far out, their lamps small as stars, and none of them ever knew his name."
)


@pytest.mark.slow
def test_embedded_model_text_is_as_likely_natively_as_in_python(native):
    loaded = on_fresh_thread(load_model, None, progress=False)  # the default: int4
    step = LlamaBatchStep.for_model(loaded.model)
    assert step._native.get() is not None
    text = loaded.tokenizer(TEXT).input_ids
    prompt, feed = text[:8], text[8:]
    python_logits, _, _ = _steps(step, loaded.model, prompt, feed, use_native=False)
    native_logits, _, _ = _steps(step, loaded.model, prompt, feed, use_native=True)
    targets = torch.tensor(feed[1:])  # the logits after feeding token i predict token i + 1

    def mean_nll(logits: torch.Tensor) -> float:
        return torch.nn.functional.cross_entropy(logits[:-1], targets).item()

    python_nll, native_nll = mean_nll(python_logits), mean_nll(native_logits)
    assert abs(native_nll - python_nll) <= 0.01 * python_nll, (native_nll, python_nll)
    same_top = (native_logits.argmax(-1) == python_logits.argmax(-1)).float().mean().item()
    assert same_top >= 0.9, same_top  # the rest are near-ties of a 135M model on free text


def test_models_it_does_not_cover_keep_the_python_step(tiny_model_dir, monkeypatch):
    bf16 = load_model(tiny_model_dir, progress=False, torch_dtype="bfloat16")  # no int4 projections
    assert not LlamaBatchStep.for_model(bf16.model)._native.eligible
    from hermes_core.engines.local.engine import LocalEngine

    switched_off = LocalEngine(
        load_model(tiny_model_dir, progress=False, quantization="int4", native_decode=False)
    )
    assert switched_off._one_token_step() is not None and not switched_off._one_token_step()._native.eligible
    switched_on = LocalEngine(load_model(tiny_model_dir, progress=False, quantization="int4"))
    assert switched_on._one_token_step()._native.eligible
    monkeypatch.setenv(native_step.DISABLE_ENV, "0")
    int4 = load_model(tiny_model_dir, progress=False, quantization="int4")
    slot = LlamaBatchStep.for_model(int4.model)._native
    assert not slot.eligible and slot.get() is None


def test_a_failed_build_is_logged_once_and_decoding_goes_on_in_python(tmp_path, monkeypatch, caplog):
    broken = tmp_path / "native_step.cpp"
    broken.write_text("#include <torch/extension.h>\nthis is not C++;\n")
    monkeypatch.setattr(native_step, "SOURCES", (broken,))
    monkeypatch.setenv("HERMES_CACHE_DIR", str(tmp_path / "cache"))
    for name, value in (("_module", None), ("_failure", None), ("_builder", None)):
        monkeypatch.setattr(native_step, name, value)
    with caplog.at_level(logging.WARNING, logger=native_step.__name__):
        assert native_step.extension(wait=True) is None
        assert native_step.extension(wait=True) is None
    assert native_step.failure()
    warnings = [record for record in caplog.records if "native decode step unavailable" in record.message]
    assert len(warnings) == 1
    assert not native_step.built_path().exists()


def test_prefill_rows_that_unpack_are_fixed_per_process_not_by_build_progress(monkeypatch):
    from hermes_core.engines.local.cpu import int4_linear

    weights = [torch.randn(64, 64)]
    assert (
        int4_linear.Int4Group(weights, [None], native=True).dense_from_rows
        == int4_linear.DENSE_FROM_ROWS_NATIVE
    )
    assert int4_linear.Int4Group(weights, [None], native=False).dense_from_rows == int4_linear.DENSE_FROM_ROWS
    monkeypatch.setenv(native_step.DISABLE_ENV, "0")
    assert int4_linear.Int4Group(weights, [None], native=True).dense_from_rows == int4_linear.DENSE_FROM_ROWS


def test_a_layout_the_unpacking_does_not_read_keeps_the_int4_kernel(native):
    from hermes_core.engines.local.cpu.int4_linear import Int4Group

    weight = torch.randn(96, 64)  # 96 rows: not whole blocks of 64
    group = Int4Group([weight], [None], native=True)
    assert not group._unpackable
    assert torch.equal(group.dense_weight(), Int4Group([weight], [None], native=False).dense_weight())
    x = torch.randn(128, 64).to(torch.bfloat16)  # past the dense threshold
    kernel = torch.ops.aten._weight_int4pack_mm_for_cpu(x, group.packed, 32, group.scales_and_zeros)
    assert torch.equal(group.run_joined(x), kernel)


def test_a_cached_build_that_does_not_load_is_built_again(tmp_path, monkeypatch):
    monkeypatch.setenv("HERMES_CACHE_DIR", str(tmp_path))
    for name, value in (("_module", None), ("_failure", None), ("_builder", None)):
        monkeypatch.setattr(native_step, name, value)
    broken = native_step.built_path()
    broken.parent.mkdir(parents=True)
    broken.write_bytes(b"not a shared object")
    module = native_step.extension(wait=True)
    assert module is not None, native_step.failure()
    assert hasattr(module, "Int4LlamaLayers") and native_step.failure() is None
