"""Load options: quantization, dtype and target device, turned into transformers kwargs.

Kept apart from ``loading`` so the choice logic ("auto" = what?) is small, testable and easy to change.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from hermes_core.errors import ModelLoadError, UnsupportedOptionError

QUANTIZATION_OPTIONS: tuple[str | None, ...] = ("4bit", "8bit", None, "auto")

# What quantization="auto" picks on a CPU. Measured decode speed for SmolLM2-135M on CPU here:
# fp32 31 tok/s, bf16 28, NF4 (bf16 compute) 40, int8 18. Change this one constant to switch.
CPU_AUTO_QUANTIZATION: str | None = None
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
    """Validate ``quantization`` and resolve "auto" for ``device``; returns "4bit", "8bit" or None."""
    if isinstance(quantization, str):
        quantization = quantization.strip().lower()
    if quantization not in QUANTIZATION_OPTIONS:
        valid = ", ".join(repr(option) for option in QUANTIZATION_OPTIONS)
        raise UnsupportedOptionError(f"unknown quantization {quantization!r}; use one of {valid}.")
    if quantization == "auto":
        quantization = CUDA_AUTO_QUANTIZATION if device == "cuda" else CPU_AUTO_QUANTIZATION
    if quantization is not None and not bitsandbytes_available():
        raise ModelLoadError(
            f"quantization={quantization!r} needs bitsandbytes, which is not installed; "
            f"install it with `{BITSANDBYTES_INSTALL}` or pass quantization=None."
        )
    return quantization


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


def compute_dtype(device: str) -> Any:
    """The 4-bit compute dtype for ``device``: bf16 on CPU and bf16-capable GPUs, else fp16."""
    import torch

    if device == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def bnb_config(quantization: str | None, device: str) -> Any:
    """The ``BitsAndBytesConfig`` for a resolved quantization, or None when not quantizing."""
    if quantization is None:
        return None
    from transformers import BitsAndBytesConfig

    if quantization == "4bit":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype(device),
        )
    return BitsAndBytesConfig(load_in_8bit=True)
