"""The lean one-token step of int4 Llama layers as one compiled call (``native_step.cpp``).

At the embedded model's size a decode step was a third Python: about a hundred small ATen calls per
layer, each with its Python around it. ``native_step.cpp`` makes the same ATen calls in the same order
from C++, except attention, which is its own: split-softmax over blocks of keys on torch's thread pool
(torch's CPU kernel splits a one-token step only by head), as accurate and rounded differently
(tests/core/test_native_step.py). The module also unpacks int4 weights for prefill
(``int4_linear.Int4Group.dense_weight``), bit for bit as the tensor operations do, and carries the bf16
prefill attention kernel of ``prefill_attention.cpp`` (see ``prefill_attention.py``).

It is compiled with torch's C++ extension builder (ninja and a C++ compiler) once per machine, torch
version and source, in the background from the start of a CPU model load, and cached under the library's
cache directory (``$HERMES_CACHE_DIR`` or the user cache dir). A model's first decode step waits for it,
so its decoding never changes path midway; wherever it cannot be built (no compiler: logged once),
decoding runs the Python lean step. Used only for the
stock Llama layers the lean step handles, with every projection in int4 (``quantization="int4"``, the
default for a 4-bit GGUF on CPU), folded GQA attention and SiLU. ``HERMES_NATIVE_DECODE=0`` turns it off.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# The module's sources: the decode step (and int4 unpacking) and the prefill attention kernel.
SOURCES = (Path(__file__).with_name("native_step.cpp"), Path(__file__).with_name("prefill_attention.cpp"))
DISABLE_ENV = "HERMES_NATIVE_DECODE"
# Built for the CPU it runs on; reassociation lets the attention kernel's sums vectorize (its rounding
# is its own anyway: see decode_attention in the source); -fopenmp compiles at::parallel_for's regions,
# whose GOMP symbols resolve to the libgomp torch has loaded (no second OpenMP runtime is linked).
COMPILER_FLAGS = (
    "-O3",
    "-march=native",
    "-fno-math-errno",
    "-fassociative-math",
    "-fno-signed-zeros",
    "-fno-trapping-math",
    "-fopenmp",
)
_SUBDIR = "native"

_lock = threading.Lock()
_module: Any = None
_failure: str | None = None
_builder: threading.Thread | None = None


def enabled() -> bool:
    """Whether the native step may be used (``HERMES_NATIVE_DECODE`` is not ``0``)."""
    return os.environ.get(DISABLE_ENV, "1").strip().lower() not in {"0", "false", "no", "off"}


def extension_name() -> str:
    """The module's name: its source, torch's version, the CPU's flags and the compiler flags, hashed."""
    import torch

    identity = b"|".join(
        [
            *(source.read_bytes() for source in SOURCES),
            torch.__version__.encode(),
            _cpu_flags().encode(),
            " ".join(COMPILER_FLAGS).encode(),
        ]
    )
    digest = hashlib.sha256(identity).hexdigest()[:12]
    return f"hermes_native_step_{digest}"


def _cpu_flags() -> str:
    """The CPU's instruction-set flags: the module is built for this CPU (``-march=native``)."""
    import platform

    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith(("flags", "Features")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine() + platform.processor()


def built_path() -> Path:
    """Where the built module is cached."""
    from hermes_core.engines.local.gguf_cache import cache_base

    return cache_base() / _SUBDIR / f"{extension_name()}.so"


def extension(wait: bool = False) -> Any:
    """The compiled module, or None: while it builds in the background (``wait=False``), or where it cannot."""
    global _builder
    if not enabled():
        return None
    with _lock:
        if _module is not None or _failure is not None:
            return _module
        if _builder is None:
            _builder = threading.Thread(target=_build_and_load, name="hermes-native-build", daemon=True)
            _builder.start()
        builder = _builder
    if wait:
        builder.join()
    return _module


def failure() -> str | None:
    """Why the module is not available (None while building or once built)."""
    return _failure


def _build_and_load() -> None:
    global _module, _failure
    try:
        module = _load_cached()
    except (
        Exception
    ) as exc:  # an unusable cached build (a torch upgrade under the same version, a truncated file)
        logger.info("rebuilding the native decode step: the cached build does not load (%s)", exc)
        module = None
    try:
        module = module or _build()
    except Exception as exc:  # no compiler, no ninja, a failed build: decode stays in Python
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        with _lock:
            _failure = reason
        logger.warning("native decode step unavailable (%s); decoding with the Python step", reason)
        return
    with _lock:
        _module = module


def _load_cached() -> Any:
    path = built_path()
    return _import(path) if path.is_file() else None


def _build() -> Any:
    """Build in a fresh directory, then move the module into the cache in one step (safe across processes)."""
    import torch.utils.cpp_extension as cpp_extension

    _ninja_on_path()
    name = extension_name()
    target = built_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="build-", dir=target.parent) as build_dir:
        module = cpp_extension.load(
            name=name,
            sources=[str(source) for source in SOURCES],
            extra_cflags=list(COMPILER_FLAGS),
            build_directory=build_dir,
            is_python_module=True,
            verbose=False,
        )
        built = Path(build_dir) / f"{name}.so"
        if built.is_file():  # absent when torch hands back a build this process already loaded
            staged = target.with_suffix(f".{os.getpid()}.tmp")
            shutil.copyfile(built, staged)
            os.replace(staged, target)
    return module


def _ninja_on_path() -> None:
    """torch's builder runs ``ninja`` from PATH; an unactivated virtualenv has the ``ninja`` package's one off it."""
    if shutil.which("ninja") is not None:
        return
    try:
        import ninja
    except ImportError:
        return  # the build fails with torch's own "Ninja is required" message
    os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")


def _import(path: Path) -> Any:
    import torch  # noqa: F401  (libtorch's symbols must be loaded first)

    name = path.stem
    loader = importlib.machinery.ExtensionFileLoader(name, str(path))
    spec = importlib.util.spec_from_file_location(name, str(path), loader=loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


class NativeLayers:
    """Every decoder layer of a lean Llama step as one ``Int4LlamaLayers.forward`` call."""

    def __init__(self, native: Any, lean_layers: list[Any]) -> None:
        first = lean_layers[0].layer.self_attn
        self.layers = native.Int4LlamaLayers(
            int(first.head_dim), int(first.config.num_key_value_heads), float(first.scaling)
        )
        for lean in lean_layers:
            layer = lean.layer
            attention, mlp = layer.self_attn, layer.mlp
            qkv, gate_up = lean.qkv_group, lean.gate_up_group
            o, down = _group(attention.o_proj), _group(mlp.down_proj)
            q_size, k_size, v_size = qkv.sizes
            gate_size, up_size = gate_up.sizes
            self.layers.add_layer(
                layer.input_layernorm.weight,
                float(layer.input_layernorm.variance_epsilon),
                layer.post_attention_layernorm.weight,
                float(layer.post_attention_layernorm.variance_epsilon),
                qkv.packed,
                qkv.scales_and_zeros,
                qkv.bias,
                q_size,
                k_size,
                v_size,
                o.packed,
                o.scales_and_zeros,
                o.bias,
                o.in_features,
                gate_up.packed,
                gate_up.scales_and_zeros,
                gate_size,
                up_size,
                down.packed,
                down.scales_and_zeros,
                down.in_features,
                qkv.in_features,
                qkv.group_size,
            )

    def run(self, hidden: Any, cos: Any, signed_sin: Any, cache: Any) -> Any:
        """The hidden state after every layer; ``cache``'s layers get this token appended in place."""
        layers = cache.layers
        length = layers[0].get_seq_length()
        buffers = [layer.reserve(length + 1) for layer in layers]
        hidden, keys, values = self.layers.forward(
            hidden,
            cos,
            signed_sin,
            [keys for keys, _ in buffers],
            [values for _, values in buffers],
            length,
        )
        for layer, layer_keys, layer_values in zip(layers, keys, values, strict=True):
            layer.keys, layer.values = layer_keys, layer_values
        return hidden


class NativeSlot:
    """The ``NativeLayers`` of one model's lean layers once the compiled module is ready (None before, or never)."""

    def __init__(self, lean_layers: list[Any], model: Any) -> None:
        self.lean_layers = lean_layers
        self.eligible = (
            enabled() and bool(lean_layers) and all(_qualifies(lean, model) for lean in lean_layers)
        )
        self.layers: NativeLayers | None = None

    def get(self) -> NativeLayers | None:
        """The native layers, or None where they cannot be had.

        The first call waits for the module (built once per machine, about 20 s, usually under way since
        the load; a cached build loads in milliseconds), so a model decodes the same way from its first
        token to its last rather than switching when a background build lands.
        """
        if self.layers is None and self.eligible:
            native = extension(wait=True)
            if native is not None:
                self.layers = NativeLayers(native, self.lean_layers)
            else:
                self.eligible = False
        return self.layers


def can_run(cache: Any, layer_count: int) -> bool:
    """Whether ``cache`` is the engine's in-place cache (``kv_cache.GrowingLayer``s, one per layer, all the same length)."""
    from hermes_core.engines.local.kv_cache import growing_layer_class

    growing = growing_layer_class()
    layers = getattr(cache, "layers", None)
    if layers is None or len(layers) != layer_count:
        return False
    if not all(type(layer) is growing and layer.is_initialized for layer in layers):
        return False
    length = layers[0].get_seq_length()
    return length > 0 and all(layer.get_seq_length() == length for layer in layers)


def _group(linear: Any) -> Any:
    return getattr(linear, "_direct_kernel_group", None)


def _qualifies(lean: Any, model: Any) -> bool:
    """Int4 projections everywhere, folded GQA attention, SiLU, bf16 on CPU: what ``native_step.cpp`` does."""
    import torch
    from transformers.activations import SiLUActivation

    from hermes_core.engines.local.cpu.folded_attention import ATTENTION_NAME
    from hermes_core.engines.local.cpu.int4_linear import Int4Group

    layer = lean.layer
    attention, mlp = layer.self_attn, layer.mlp
    groups = [lean.qkv_group, lean.gate_up_group, _group(attention.o_proj), _group(mlp.down_proj)]
    if not all(type(group) is Int4Group for group in groups):
        return False
    o, down = groups[2], groups[3]
    return (
        model.dtype == torch.bfloat16
        and len(lean.qkv_group.sizes) == 3
        and len(lean.gate_up_group.sizes) == 2
        and len(o.sizes) == 1
        and len(down.sizes) == 1
        and lean.gate_up_group.bias is None
        and down.bias is None
        and type(mlp.act_fn) is SiLUActivation
        and attention.config._attn_implementation == ATTENTION_NAME
        and getattr(attention, "num_key_value_groups", 1) > 1
        and attention.head_dim % 2 == 0
        and lean.qkv_group.sizes[0] % attention.head_dim == 0
        and lean.qkv_group.sizes[1] % attention.head_dim == 0
    )
