"""A leaner CPU forward for bitsandbytes 4-bit layers: the same kernel on the same packed weights.

On a CPU with AVX512-BF16, bitsandbytes multiplies by 4-bit weights with its own C kernel, but each call
first spends about 12 µs in Python (state fix-ups, casts, ``torch.library`` dispatch, a tensor compare).
A decode step of a 30-layer model makes 210 such calls, so that overhead is a fifth of the step. Here
each layer calls the kernel directly, and layers that read the same input (q/k/v, gate/up) run as one
call over their concatenated weights. The kernel computes each output feature on its own, so the
results are bit-identical to bitsandbytes' path (tests/core/test_cpu_4bit.py checks it).

Each layer's first call still goes through bitsandbytes, which packs the weights for the CPU kernel
and fixes the compute dtype from the real input; anything unexpected after that (weights not packed,
no kernel in this bitsandbytes build) leaves the layers on bitsandbytes' own path.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable, Sequence
from typing import Any

logger = logging.getLogger(__name__)

# Sibling projections that HF's Llama/Mistral/Qwen code calls back to back on one input tensor.
SIBLING_GROUPS: tuple[tuple[str, ...], ...] = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))
# bitsandbytes' CPU packing interleaves weight rows in blocks of this many, so fused row counts must divide by it.
_PACKED_ROW_BLOCK = 32
_KERNEL_NAMES = {"nf4": "gemv_4bit_inference_cpu_nf4_bf16", "fp4": "gemv_4bit_inference_cpu_fp4_bf16"}


def direct_cpu_4bit(model: Any) -> int:
    """Route ``model``'s CPU 4-bit layers to bitsandbytes' kernel directly; returns how many layers will use it.

    Does nothing (returns 0) without bitsandbytes, off CPU, or where bitsandbytes would not use its
    packed AVX512-BF16 kernel either.
    """
    layers = _candidate_layers(model)
    if not layers:
        return 0
    by_name = dict(layers)
    grouped: set[str] = set()
    groups: list[list[Any]] = []
    for name, _ in layers:
        parent, _, leaf = name.rpartition(".")
        for siblings in SIBLING_GROUPS:
            if leaf != siblings[0]:
                continue
            names = [f"{parent}.{sibling}" if parent else sibling for sibling in siblings]
            members = [by_name.get(member) for member in names]
            if all(member is not None for member in members) and _fusable(members):
                groups.append(members)
                grouped.update(names)
    groups.extend([layer] for name, layer in layers if name not in grouped)
    for members in groups:
        group = DirectKernelGroup(members)
        for index, layer in enumerate(members):
            layer.forward = group.forward_for(index)
            layer._direct_kernel_group = group
    return len(layers)


def kernel_group_of(layers: Sequence[Any]) -> DirectKernelGroup | None:
    """The group that runs exactly ``layers`` (in this order) as one kernel call, if there is one."""
    group = getattr(layers[0], "_direct_kernel_group", None) if layers else None
    if group is None or len(group.layers) != len(layers):
        return None
    return group if all(a is b for a, b in zip(group.layers, layers, strict=True)) else None


def _candidate_layers(model: Any) -> list[tuple[str, Any]]:
    """(name, layer) of the bitsandbytes 4-bit layers that bitsandbytes itself would run on its CPU kernel."""
    try:
        from bitsandbytes.nn import Linear4bit
    except ImportError:
        return []
    layers = []
    for name, module in model.named_modules():
        if not isinstance(module, Linear4bit) or module.weight.device.type != "cpu":
            continue
        if "forward" in vars(module):  # already routed (or wrapped by someone else): leave it alone
            continue
        quant_state = getattr(module.weight, "quant_state", None)
        if quant_state is None or _kernel_for(quant_state) is None:
            continue
        if getattr(module, "support_avx512bf16_for_cpu", False):
            layers.append((name, module))
    return layers


def _kernel_for(quant_state: Any) -> Callable[..., Any] | None:
    """Our own handle on bitsandbytes' CPU bf16 kernel for this quantization type, if this build has it.

    A fresh function pointer (not the one bitsandbytes calls) so declaring its argument types, which
    makes each call cheaper, changes nothing for bitsandbytes.
    """
    try:
        from bitsandbytes.cextension import lib
    except ImportError:
        return None
    name = _KERNEL_NAMES.get(getattr(quant_state, "quant_type", None))
    # The CDLL itself: bitsandbytes' wrapper hands out a raising stub for missing symbols.
    native = getattr(lib, "_lib", None)
    if not name or native is None or getattr(native, name, None) is None:
        return None
    kernel = native._FuncPtr((name, native))
    # (M, N, K, A, B, absmax, out, blocksize, A row stride, out row stride), as bitsandbytes' CPU op passes them.
    kernel.argtypes = [ctypes.c_int64] * 3 + [ctypes.c_void_p] * 4 + [ctypes.c_int64] * 3
    kernel.restype = None
    return kernel


def _fusable(layers: Sequence[Any]) -> bool:
    """Whether these layers can share one kernel call: same input size, block size, type and bias presence."""
    states = [layer.weight.quant_state for layer in layers]
    first = states[0]
    return (
        all(state.shape[1] == first.shape[1] for state in states)
        and all(state.blocksize == first.blocksize for state in states)
        and all(state.quant_type == first.quant_type for state in states)
        and all(state.shape[0] % _PACKED_ROW_BLOCK == 0 for state in states)
        and len({layer.bias is None for layer in layers}) == 1
    )


class SiblingGroup:
    """Layers reading one input, run as one call: hands each member its part of the joined output.

    A member called with the tensor the group last ran on gets its slice of that run; any other input
    runs the whole group (``run_all``). HF's attention and MLP call q, k, v (gate, up) back to back on
    one tensor, so each step makes one call per group. Subclasses set ``_sizes`` and ``run_all``.
    """

    _sizes: list[int]
    _input: Any = None
    _pending: dict[int, Any]

    def run_all(self, x: Any) -> list[Any]:
        raise NotImplementedError

    def run(self, x: Any, index: int) -> Any:
        """Member ``index``'s output for ``x``."""
        if self._input is x and index in self._pending:
            output = self._pending.pop(index)
            if not self._pending:
                self._input = None
            return output
        outputs = self.run_all(x)
        self._input = x if len(outputs) > 1 else None
        self._pending = {i: output for i, output in enumerate(outputs) if i != index}
        return outputs[index]

    def split(self, joined: Any) -> list[Any]:
        """Each member's part of ``joined``: views for one row (a decode step), contiguous copies otherwise."""
        if len(self._sizes) == 1:
            return [joined]
        parts = joined.split(self._sizes, dim=-1)
        if joined.numel() == joined.shape[-1]:  # one row: the slices are views, no copy
            return list(parts)
        return [part.contiguous() for part in parts]


class DirectKernelGroup(SiblingGroup):
    """One or more 4-bit layers reading the same input, run as one kernel call over their concatenated weights."""

    def __init__(self, layers: Sequence[Any]) -> None:
        self.layers = list(layers)
        self.direct: bool | None = None  # None until the first call has let bitsandbytes pack the weights
        self._input: Any = None
        self._pending: dict[int, Any] = {}

    def forward_for(self, index: int) -> Callable[[Any], Any]:
        """The ``forward`` for member ``index``."""

        def forward(x: Any) -> Any:
            return self.run(x, index)

        return forward

    def run_all(self, x: Any) -> list[Any]:
        """Every member's output for ``x``, from one kernel call once the weights are packed."""
        if self.direct is None:
            return self._first_run(x)
        if not self.direct:
            return [type(layer).forward(layer, x) for layer in self.layers]
        return self._kernel_run(x)

    def _first_run(self, x: Any) -> list[Any]:
        """bitsandbytes' own forward, which packs the weights and fixes the compute dtype; then fuse them."""
        outputs = [type(layer).forward(layer, x) for layer in self.layers]
        states = [layer.weight.quant_state for layer in self.layers]
        compute = {layer.compute_dtype for layer in self.layers}
        packed = all(getattr(state, "packing_format_for_cpu", False) for state in states)
        self.direct = packed and len(compute) == 1
        if not self.direct:
            logger.debug("4-bit layers not packed for the CPU kernel; keeping bitsandbytes' own forward")
            return outputs
        self._fuse()
        return outputs

    def _fuse(self) -> None:
        """Concatenate the members' packed weights (members keep views, so memory is not doubled) and scales."""
        import torch

        states = [layer.weight.quant_state for layer in self.layers]
        self._kernel = _kernel_for(states[0])
        self._sizes = [state.shape[0] for state in states]
        self._in_features = states[0].shape[1]
        self._blocksize = states[0].blocksize
        self._compute_dtype = self.layers[0].compute_dtype
        weights = [layer.weight.data for layer in self.layers]
        if len(self.layers) == 1:
            self._weight, self._absmax = weights[0], states[0].absmax
        else:
            self._weight = torch.cat(weights, dim=0)
            self._absmax = torch.cat([state.absmax for state in states], dim=1).contiguous()
            start = 0
            for layer, state, size in zip(self.layers, states, self._sizes, strict=True):
                layer.weight.data = self._weight[start : start + size]
                state.absmax = self._absmax[:, start : start + size]
                start += size
        self._out_features = sum(self._sizes)
        self._weight_ptr = self._weight.data_ptr()
        self._absmax_ptr = self._absmax.data_ptr()
        biases = [layer.bias for layer in self.layers]
        self._bias = None if biases[0] is None else torch.cat([bias.data for bias in biases])
        if self._bias is not None and self._compute_dtype is not None:
            self._bias = self._bias.to(self._compute_dtype)

    def run_joined(self, x: Any) -> Any:
        """Every member's output for ``x`` side by side in one tensor ``(*x.shape[:-1], sum of sizes)``.

        Only once the weights are packed (``direct`` is true): one kernel call, no split.
        """
        import torch

        operand = self._compute_dtype or x.dtype  # bitsandbytes leaves x as it is without a compute dtype
        rows = x.reshape(-1, self._in_features)
        if rows.dtype != operand:
            rows = rows.to(operand)
        if rows.dtype != torch.bfloat16:
            rows = rows.to(torch.bfloat16)
        rows = rows.contiguous()
        out = torch.empty((rows.shape[0], self._out_features), dtype=torch.bfloat16)
        self._kernel(
            rows.shape[0],
            self._out_features,
            self._in_features,
            rows.data_ptr(),
            self._weight_ptr,
            self._absmax_ptr,
            out.data_ptr(),
            self._blocksize,
            rows.stride(0),
            out.stride(0),
        )
        if operand != torch.bfloat16:
            out = out.to(operand)
        if self._bias is not None:
            out += self._bias.to(operand)
        out = out.view(*x.shape[:-1], self._out_features)
        return out if out.dtype == x.dtype else out.to(x.dtype)

    @property
    def sizes(self) -> list[int]:
        """Output features of each member, in order (known once the weights are packed)."""
        return list(self._sizes)

    def _kernel_run(self, x: Any) -> list[Any]:
        """The members' outputs for ``x``, cast exactly as bitsandbytes' Linear4bit and gemv_4bit do."""
        return self.split(self.run_joined(x))
