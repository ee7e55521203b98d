"""Load options: quantization, dtype and target device, turned into transformers kwargs.

Kept apart from ``loading`` so the choice logic ("auto" = what?) is small, testable and easy to change.
"""

from __future__ import annotations

import importlib.util
import logging
import struct
from typing import Any

from hermes_core.errors import ModelLoadError, UnsupportedOptionError

QUANTIZATION_OPTIONS: tuple[str | None, ...] = ("4bit", "8bit", "int4", "none", None, "auto")
"""``None`` is "not named": ``load_model`` then picks ``default_quantization``; ``"none"`` never quantizes."""

# What quantization="auto" picks on a CPU with native bf16 and on one without it, where bf16 is
# emulated (not measured). On the first, int4 (torch's kernel, Q4_1-style groups) decodes the embedded
# model faster than NF4 and stays as close to its float32 weights as bf16 does, where NF4 does not
# (docs/performance-engine.md#int4-against-nf4-and-bf16); NF4 is the fall-back without torch's int4 kernels.
CPU_AUTO_QUANTIZATION: str | None = "int4"
CPU_AUTO_QUANTIZATION_WITHOUT_INT4: str | None = "4bit"
CPU_AUTO_QUANTIZATION_WITHOUT_BF16: str | None = None
# What quantization="auto" picks on CUDA: NF4 is the usual memory/quality trade-off there.
CUDA_AUTO_QUANTIZATION: str | None = "4bit"

_DTYPE_NAMES = {
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
}
DTYPE_OPTIONS = ("auto", "float32", "bfloat16", "float16")

BITSANDBYTES_INSTALL = "pip install bitsandbytes"


def bitsandbytes_available() -> bool:
    """Whether bitsandbytes can be imported (a seam so tests can simulate it missing)."""
    return importlib.util.find_spec("bitsandbytes") is not None


def cuda_available() -> bool:
    """Whether a CUDA device is usable (a seam so tests can simulate a GPU for the choice logic)."""
    import torch

    return bool(torch.cuda.is_available())


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX); elsewhere bf16 is emulated, slowly."""
    import torch

    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def target_device(device_map: Any) -> str:
    """The device type the weights will live on ("cuda" or "cpu"), from ``device_map`` and hardware."""
    if device_map is None or device_map == "auto":
        return "cuda" if cuda_available() else "cpu"
    values = list(device_map.values()) if isinstance(device_map, dict) else [device_map]
    for value in values:
        text = str(value)
        if text.startswith("cuda") or (isinstance(value, int) and not isinstance(value, bool)):
            return "cuda"
    return "cpu"


def default_device_map(device_map: Any) -> Any:
    """``device_map`` to pass to transformers: the caller's, else "auto" with CUDA, else none (CPU)."""
    if device_map is not None:
        return device_map
    return "auto" if cuda_available() else None


def resolve_quantization(quantization: str | None, device: str) -> str | None:
    """Validate ``quantization`` and resolve "auto" for ``device``; returns "4bit", "8bit", "int4" or None."""
    from hermes_core.options import check_quantization

    check_quantization(quantization)
    if isinstance(quantization, str):
        quantization = quantization.strip().lower()
    if quantization == "none":
        return None
    if quantization == "auto":
        if device == "cuda":
            quantization = CUDA_AUTO_QUANTIZATION
        else:
            quantization = (
                CPU_AUTO_QUANTIZATION if cpu_has_native_bf16() else CPU_AUTO_QUANTIZATION_WITHOUT_BF16
            )
            if quantization == "int4" and not _int4_available():
                quantization = CPU_AUTO_QUANTIZATION_WITHOUT_INT4
    if quantization == "int4":
        return _check_int4(device)
    if quantization is not None and not bitsandbytes_available():
        raise ModelLoadError(
            f"quantization={quantization!r} needs bitsandbytes, which is not installed; "
            f"install it with `{BITSANDBYTES_INSTALL}` or pass quantization=None."
        )
    return quantization


FOUR_BIT_GGUF_TYPES = frozenset({2, 3, 12})  # Q4_0, Q4_1, Q4_K (ggml type ids)
"""GGUF tensor types whose weights are 4-bit codes in groups of 32 with a scale (and a minimum): what
``"int4"`` finds again nearly or exactly (Q4_1 exactly, see ``cpu/int4_linear.py``)."""


def default_quantization(source: str, device: str, torch_dtype: Any, four_bit_file: bool) -> str | None:
    """What ``load_model`` quantizes with when no ``quantization`` is named: "int4" or None.

    "int4" for a model that arrives in 4 bits (the embedded Q4_1 GGUF, or ``four_bit_file``: a GGUF
    whose decoder weights are Q4_0/Q4_1/Q4_K), on a CPU with native bf16 and torch's int4 kernels,
    with no ``torch_dtype`` named: there it decodes ~1.7x faster than bf16 and stays as close to the
    file's weights as bf16 does (docs/performance-engine.md). Anything else (a full-precision
    checkpoint, a named dtype, CUDA, other CPUs) loads unquantized, as before.
    """
    if device != "cpu" or torch_dtype is not None:
        return None
    if not (source == "embedded" or (source == "gguf" and four_bit_file)):
        return None
    return "int4" if cpu_has_native_bf16() and _int4_available() else None


def gguf_is_four_bit(path: Any) -> bool:
    """Whether most of the decoder weights (``blk.*``) of the GGUF at ``path`` are 4-bit group codes."""
    try:
        types = [kind for name, kind in _gguf_tensor_types(path) if name.startswith("blk.")]
    except (OSError, ValueError, struct.error):  # unreadable here: the load itself reports it
        return False
    return bool(types) and sum(kind in FOUR_BIT_GGUF_TYPES for kind in types) * 2 > len(types)


# Byte sizes of GGUF metadata value types (8 = string and 9 = array are read apart).
_GGUF_SCALARS = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def _gguf_tensor_types(path: Any) -> list[tuple[str, int]]:
    """(name, ggml type id) of each tensor of a GGUF v2/v3 file, read from its header only.

    Not ``gguf.GGUFReader``: it decodes every metadata field into Python objects, 1.7 s for the
    embedded model's 49k-entry vocabulary on every load, where skipping them here takes ~40 ms.
    """
    with open(path, "rb") as handle:
        data = handle.read(16 << 20)  # the header (metadata, tensor infos) comes first
    if data[:4] != b"GGUF":
        raise ValueError("not a GGUF file")
    tensors, entries = struct.unpack_from("<QQ", data, 8)
    at = 24

    def string(at: int) -> tuple[str, int]:
        (length,) = struct.unpack_from("<Q", data, at)
        return data[at + 8 : at + 8 + length].decode("utf-8", "replace"), at + 8 + length

    def skip(kind: int, at: int) -> int:
        if kind in _GGUF_SCALARS:
            return at + _GGUF_SCALARS[kind]
        if kind == 8:
            return string(at)[1]
        if kind == 9:
            item, count = struct.unpack_from("<IQ", data, at)
            at += 12
            if item in _GGUF_SCALARS:
                return at + count * _GGUF_SCALARS[item]
            for _ in range(count):
                at = skip(item, at)
            return at
        raise ValueError(f"unknown GGUF value type {kind}")

    for _ in range(entries):
        _, at = string(at)
        (kind,) = struct.unpack_from("<I", data, at)
        at = skip(kind, at + 4)
    found = []
    for _ in range(tensors):
        name, at = string(at)
        (dims,) = struct.unpack_from("<I", data, at)
        (kind,) = struct.unpack_from("<I", data, at + 4 + 8 * dims)
        found.append((name, kind))
        at += 4 + 8 * dims + 12
    return found


def _int4_available() -> bool:
    """Whether torch's CPU int4 kernels exist (a seam so tests can simulate an older torch)."""
    from hermes_core.engines.local.cpu.int4_linear import int4_kernels_available

    return int4_kernels_available()


def _check_int4(device: str) -> str:
    """ "int4" (torch's CPU int4 kernel, ``cpu/int4_linear.py``) if it can run on ``device``, else a clear error."""
    if device != "cpu":
        raise UnsupportedOptionError(
            f'quantization="int4" runs on torch\'s CPU int4 kernel, but the weights go to {device}; '
            'use quantization="4bit" there (or device_map="cpu").'
        )
    if not _int4_available():
        raise ModelLoadError(
            'quantization="int4" needs torch\'s CPU int4 kernels (torch >= 2.6); upgrade torch or use "4bit".'
        )
    return "int4"


def int4_load_dtype(source: str, dtype: Any, torch_dtype: Any) -> Any:
    """The dtype to load weights in before they are quantized to int4.

    A GGUF (the embedded model too) is de-quantised to float32 on conversion: loading it in float32
    lets its Q4_1 blocks come back as the same 4-bit codes, where bf16 would round them first.
    """
    import torch

    if source in ("embedded", "gguf") and torch_dtype is None:
        return torch.float32
    return dtype


def resolve_dtype(torch_dtype: Any) -> Any:
    """Normalise ``torch_dtype`` ("auto", a dtype name or a torch.dtype) for transformers' ``dtype=``."""
    import torch

    if torch_dtype is None or isinstance(torch_dtype, torch.dtype):
        return torch_dtype
    if isinstance(torch_dtype, str):
        name = torch_dtype.strip().lower().removeprefix("torch.")
        if name == "auto":
            return "auto"
        if name in _DTYPE_NAMES:
            return getattr(torch, _DTYPE_NAMES[name])
    valid = ", ".join(repr(option) for option in DTYPE_OPTIONS)
    raise UnsupportedOptionError(f"unknown torch_dtype {torch_dtype!r}; use one of {valid} or a torch.dtype.")


def default_dtype(torch_dtype: Any, device: str) -> Any:
    """``torch_dtype`` normalised; when not given, bf16 on a CPU with native bf16, else the library default.

    On such CPUs bf16 prefills ~1.8x and decodes ~1.6x faster than fp32 and halves the weights
    (docs/performance-engine.md); the rest of a 4-bit model is then bf16 too. On CUDA ``None`` lets
    transformers keep the checkpoint's dtype; on other CPUs it loads float32.
    """
    dtype = resolve_dtype(torch_dtype)
    if dtype is None and device == "cpu" and cpu_has_native_bf16():
        import torch

        return torch.bfloat16
    return dtype


def compute_dtype(device: str) -> Any:
    """The 4-bit compute dtype for ``device``: bf16 on CPU and bf16-capable GPUs, else fp16."""
    import torch

    if device == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def bnb_config(quantization: str | None, device: str) -> Any:
    """The ``BitsAndBytesConfig`` for a resolved quantization, or None (not quantizing, or "int4")."""
    if quantization is None or quantization == "int4":
        return None
    from transformers import BitsAndBytesConfig

    if quantization == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype(device),
        )
    _log_int8_cast_warning_once()
    return BitsAndBytesConfig(load_in_8bit=True)


class _OnceFilter(logging.Filter):
    """Lets a message through the first time only (bitsandbytes repeats one on every int8 matmul)."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix
        self.seen = False

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith(self.prefix):
            return True
        first, self.seen = not self.seen, True
        return first


def _log_int8_cast_warning_once() -> None:
    """Keep bitsandbytes' "MatMul8bitLt: inputs will be cast" warning to one line, not one per matmul."""
    logger = logging.getLogger("bitsandbytes.autograd._functions")
    if not any(isinstance(f, _OnceFilter) for f in logger.filters):
        logger.addFilter(_OnceFilter("MatMul8bitLt: inputs will be cast"))
