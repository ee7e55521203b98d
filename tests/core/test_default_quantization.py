"""What load_model quantizes with when none is named: int4 for a model that arrives in 4 bits, on a CPU
that runs it, and nothing otherwise (hermes_core.engines.local.quantization.default_quantization)."""

from __future__ import annotations

import pytest

from hermes_core.engines.local import quantization as _quantization
from hermes_core.engines.local.cpu.int4_linear import int4_kernels_available
from hermes_core.engines.local.loading import load_model
from hermes_core.errors import ModelLoadError, UnsupportedOptionError
from tests.core.tiny_gguf import write_tiny_gguf

pytestmark = pytest.mark.skipif(not int4_kernels_available(), reason="this torch has no CPU int4 kernels")


@pytest.fixture(scope="module")
def q4_gguf(tiny_model_dir, tmp_path_factory):
    """The tiny model as a GGUF whose decoder projections are Q4_1, like the embedded model's."""
    return write_tiny_gguf(
        tiny_model_dir, tmp_path_factory.mktemp("q4") / "tiny-q4_1.gguf", layer_type="Q4_1"
    )


@pytest.fixture(scope="module")
def f32_gguf(tiny_model_dir, tmp_path_factory):
    return write_tiny_gguf(tiny_model_dir, tmp_path_factory.mktemp("f32") / "tiny-f32.gguf")


@pytest.fixture
def bf16_cpu(monkeypatch, tmp_path):
    monkeypatch.setenv("HERMES_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(_quantization, "cuda_available", lambda: False)
    monkeypatch.setattr(_quantization, "cpu_has_native_bf16", lambda: True)


def test_the_gguf_header_tells_four_bit_files_from_others(q4_gguf, f32_gguf, tmp_path):
    assert _quantization.gguf_is_four_bit(q4_gguf)
    assert not _quantization.gguf_is_four_bit(f32_gguf)
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(q4_gguf.read_bytes()[:200])  # a truncated header is no reason to fail here
    assert not _quantization.gguf_is_four_bit(broken)


def test_a_four_bit_gguf_loads_as_int4_when_nothing_is_named(q4_gguf, bf16_cpu):
    loaded = load_model(q4_gguf, progress=False)
    assert loaded.quantization == "int4"
    assert type(loaded.model.model.layers[0].mlp.down_proj).__name__ == "Int4Linear"
    assert "int4" in loaded.weights_summary()


@pytest.mark.parametrize(
    "options", [{"quantization": "none"}, {"quantization": " None "}, {"torch_dtype": "bfloat16"}]
)
def test_naming_none_or_a_dtype_loads_unquantized(q4_gguf, bf16_cpu, options):
    loaded = load_model(q4_gguf, progress=False, **options)
    assert loaded.quantization is None
    assert type(loaded.model.lm_head).__name__ == "Linear"


def test_full_precision_sources_and_other_cpus_stay_unquantized(
    q4_gguf, f32_gguf, tiny_model_dir, bf16_cpu, monkeypatch
):
    assert load_model(f32_gguf, progress=False).quantization is None
    assert load_model(tiny_model_dir, progress=False).quantization is None
    monkeypatch.setattr(_quantization, "cpu_has_native_bf16", lambda: False)
    assert load_model(q4_gguf, progress=False).quantization is None
    monkeypatch.setattr(_quantization, "cpu_has_native_bf16", lambda: True)
    monkeypatch.setattr(_quantization, "_int4_available", lambda: False)  # an older torch
    assert load_model(q4_gguf, progress=False).quantization is None


def test_the_choice_itself():
    choose = _quantization.default_quantization
    assert choose("embedded", "cuda", None, False) is None
    assert choose("embedded", "cpu", "float32", False) is None
    assert choose("directory", "cpu", None, True) is None
    assert choose("gguf", "cpu", None, False) is None


def test_none_is_an_option_and_impossible_choices_fail_before_loading(monkeypatch):
    assert _quantization.resolve_quantization("none", "cpu") is None
    assert _quantization.resolve_quantization("none", "cuda") is None
    with pytest.raises(UnsupportedOptionError, match="'none'"):
        _quantization.resolve_quantization("nothing", "cpu")
    monkeypatch.setattr(_quantization, "_int4_available", lambda: False)
    with pytest.raises(ModelLoadError, match=r"torch >= 2\.6"):
        load_model("/nonexistent/model.gguf", quantization="int4", progress=False)
