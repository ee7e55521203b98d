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


def _greedy(step: LlamaBatchStep, model, prompt: list[int], tokens: int, use_native: bool):
    """(logits of each step, the cache) of a greedy run through ``one_token``, natively or in Python."""
    slot = step._native
    saved = slot.layers, slot.eligible
    if not use_native:
        slot.layers, slot.eligible = None, False
    try:
        cache, rows = new_kv_cache(model), []
        with torch.inference_mode():
            logits = single_row_logits(model, CACHE, prompt, cache)
            for _ in range(tokens):
                logits = step.one_token(int(logits.argmax()), cache)
                rows.append(logits)
        return torch.cat(rows), cache
    finally:
        slot.layers, slot.eligible = saved


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


def test_tiny_int4_model_logits_and_cache_are_the_python_steps_bit_for_bit(tiny_model_dir, native):
    loaded = _int4_tiny(tiny_model_dir)
    step = LlamaBatchStep.for_model(loaded.model)
    assert step._native.eligible and step._native.get() is not None
    python_logits, python_cache = _greedy(step, loaded.model, PROMPT, 300, use_native=False)
    native_logits, native_cache = _greedy(step, loaded.model, PROMPT, 300, use_native=True)
    assert torch.equal(python_logits, native_logits)
    assert native_cache.get_seq_length() == len(PROMPT) + 300  # grew past GrowingLayer's first block
    for ours, theirs in zip(native_cache.layers, python_cache.layers, strict=True):
        assert torch.equal(ours.keys, theirs.keys) and torch.equal(ours.values, theirs.values)


@pytest.mark.slow
def test_embedded_model_greedy_decode_is_unchanged(native):
    loaded = on_fresh_thread(load_model, None, progress=False)  # the default: int4
    step = LlamaBatchStep.for_model(loaded.model)
    assert step._native.get() is not None
    prompt = loaded.tokenizer(
        "<|im_start|>user\nTell me a story.<|im_end|>\n<|im_start|>assistant\n"
    ).input_ids
    python_logits, _ = _greedy(step, loaded.model, prompt, 48, use_native=False)
    native_logits, _ = _greedy(step, loaded.model, prompt, 48, use_native=True)
    assert torch.equal(python_logits, native_logits)


def test_models_it_does_not_cover_keep_the_python_step(tiny_model_dir, monkeypatch):
    bf16 = load_model(tiny_model_dir, progress=False, torch_dtype="bfloat16")  # no int4 projections
    assert not LlamaBatchStep.for_model(bf16.model)._native.eligible
    monkeypatch.setenv(native_step.DISABLE_ENV, "0")
    int4 = load_model(tiny_model_dir, progress=False, quantization="int4")
    slot = LlamaBatchStep.for_model(int4.model)._native
    assert not slot.eligible and slot.get() is None


def test_a_failed_build_is_logged_once_and_decoding_goes_on_in_python(tmp_path, monkeypatch, caplog):
    broken = tmp_path / "native_step.cpp"
    broken.write_text("#include <torch/extension.h>\nthis is not C++;\n")
    monkeypatch.setattr(native_step, "SOURCE", broken)
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
