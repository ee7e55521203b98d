"""4-bit linear layers on torch's own CPU int4 kernel, in GGUF Q4_1's grouping (``quantization="int4"``).

Each group of 32 input weights of a row is stored as 4-bit codes with its own scale and minimum,
``w = scale * q + minimum`` (q in 0..15), which is how llama.cpp's Q4_1 blocks are built; a Q4_1
GGUF de-quantised to float comes back to the same codes. The codes are packed once with
``aten._convert_weight_to_int4pack_for_cpu`` and multiplied with ``aten._weight_int4pack_mm_for_cpu``
(bf16 activations), which reads the packed nibbles directly. That kernel computes
``(q - 8) * scale + zero``, so ``zero = minimum + 8 * scale``.

Layers that read one input (q/k/v, gate/up) are packed together and run as one call, as the direct
bitsandbytes path does (``direct_4bit``); the lean decode step takes their joined output from
``run_joined`` just the same.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from hermes_core.engines.local.cpu.direct_4bit import SIBLING_GROUPS, SiblingGroup

GROUP_SIZE = 32
"""Input weights per scale/minimum pair: GGUF Q4_0/Q4_1's block size."""

_LINEAR_NAMES = frozenset(name for group in SIBLING_GROUPS for name in group) | {"o_proj", "down_proj"}


def int4_kernels_available() -> bool:
    """Whether this torch build has the CPU int4 pack and matmul kernels."""
    import torch

    aten = torch.ops.aten
    return hasattr(aten, "_convert_weight_to_int4pack_for_cpu") and hasattr(
        aten, "_weight_int4pack_mm_for_cpu"
    )


def quantize_rows(weight: Any, group_size: int = GROUP_SIZE) -> tuple[Any, Any, Any]:
    """Asymmetric 4-bit codes of ``weight`` ``(N, K)`` per group of ``group_size`` inputs, as Q4_1 builds them.

    Returns ``(codes int32 (N, K), scales (N, K / group_size), minimums (N, K / group_size))`` in float32.
    """
    import torch

    rows, columns = weight.shape
    groups = weight.detach().to(torch.float32).reshape(rows, columns // group_size, group_size)
    low, high = groups.amin(dim=-1), groups.amax(dim=-1)
    scale = (high - low) / 15
    inverse = torch.where(scale > 0, 1 / scale, torch.zeros_like(scale))
    codes = torch.clamp(torch.floor((groups - low[..., None]) * inverse[..., None] + 0.5), 0, 15)
    return codes.to(torch.int32).reshape(rows, columns), scale, low


def dequantize_rows(codes: Any, scale: Any, low: Any) -> Any:
    """The float32 weight that ``quantize_rows``' output stands for (for tests and accuracy studies)."""
    rows, columns = codes.shape
    groups = codes.reshape(rows, scale.shape[1], -1).float()
    return (groups * scale[..., None] + low[..., None]).reshape(rows, columns)


class Int4Group(SiblingGroup):
    """One or more linear layers reading the same input, packed side by side and run as one kernel call.

    Has the interface the lean decode step uses on ``direct_4bit.DirectKernelGroup`` (``direct``,
    ``sizes``, ``run_joined``, ``run_all``); a member called with the input the group last ran on
    gets its slice of that run, so HF's back-to-back q, k, v calls cost one kernel call.
    """

    direct = True

    def __init__(
        self,
        weights: Sequence[Any],
        biases: Sequence[Any | None],
        group_size: int = GROUP_SIZE,
        native: bool = False,
    ) -> None:
        import torch

        self.native = native  # unpack with the compiled kernel once it is built (``dense_weight``)
        # Fixed per process (never on whether the build is done yet), so a prompt takes one path every time.
        self.dense_from_rows = DENSE_FROM_ROWS_NATIVE if native and _native_enabled() else DENSE_FROM_ROWS
        joined = torch.cat([weight.detach() for weight in weights], dim=0)
        codes, scale, low = quantize_rows(joined, group_size)
        self.packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1)
        # (K / group, N, 2): scale and zero (the value at code 8) per group and output feature.
        self.scales_and_zeros = torch.stack([scale.t(), (low + 8 * scale).t()], dim=-1).to(torch.bfloat16)
        self.scales_and_zeros = self.scales_and_zeros.contiguous()
        self.group_size = group_size
        # Prefill chunks run faster as a bf16 matmul on weights unpacked for the call, where this
        # torch's packed layout is the one ``_unpack`` reads (checked here, on these very codes).
        self._unpackable = bool(torch.equal(_unpack(self.packed, *codes.shape).to(torch.int32), codes))
        self._sizes = [int(weight.shape[0]) for weight in weights]
        self.in_features = int(joined.shape[1])
        self.out_features = int(joined.shape[0])
        self.bias = None if biases[0] is None else torch.cat([b.detach() for b in biases]).to(torch.bfloat16)
        self.layers: list[Any] = []
        self._input: Any = None
        self._pending: dict[int, Any] = {}

    @property
    def sizes(self) -> list[int]:
        """Output features of each member, in order."""
        return list(self._sizes)

    def run_joined(self, x: Any) -> Any:
        """Every member's output for ``x`` side by side, ``(*x.shape[:-1], sum of sizes)``, in ``x``'s dtype."""
        import torch

        rows = x.reshape(-1, self.in_features)
        if rows.dtype != torch.bfloat16:
            rows = rows.to(torch.bfloat16)
        if self._unpackable and rows.shape[0] >= self.dense_from_rows:
            out = torch.nn.functional.linear(rows, self.dense_weight())
        else:
            out = torch.ops.aten._weight_int4pack_mm_for_cpu(
                rows.contiguous(), self.packed, self.group_size, self.scales_and_zeros
            )
        if self.bias is not None:
            out += self.bias
        out = out.view(*x.shape[:-1], self.out_features)
        return out if out.dtype == x.dtype else out.to(x.dtype)

    def dense_weight(self) -> Any:
        """The weight ``(N, K)`` in bf16 that the kernel multiplies by: ``(q - 8) * scale + zero`` per group.

        With ``native`` and the compiled module built, one pass of ``dequantize_int4`` (several times faster,
        the same bits: tests/core/test_native_step.py); else these tensor operations.
        """
        import torch

        if self.native and self._unpackable and self.group_size == GROUP_SIZE:
            from hermes_core.engines.local.cpu.native_step import extension

            compiled = extension()
            if compiled is not None:
                return compiled.dequantize_int4(
                    self.packed, self.scales_and_zeros, self.out_features, self.in_features, self.group_size
                )

        rows, columns = self.out_features, self.in_features
        codes = _unpack(self.packed, rows, columns).view(rows, -1, self.group_size).to(torch.float32) - 8
        scale = self.scales_and_zeros[..., 0].t().unsqueeze(-1).to(torch.float32)
        zero = self.scales_and_zeros[..., 1].t().unsqueeze(-1).to(torch.float32)
        return torch.addcmul(zero, codes, scale).to(torch.bfloat16).reshape(rows, columns)

    def run_all(self, x: Any) -> list[Any]:
        """Each member's output for ``x`` (views of one joined output for a single row)."""
        return self.split(self.run_joined(x))

    def nbytes(self) -> int:
        """Bytes of the packed codes, scales, zeros and bias."""
        bias = 0 if self.bias is None else self.bias.numel() * self.bias.element_size()
        return int(self.packed.numel() + self.scales_and_zeros.numel() * 2 + bias)


DENSE_FROM_ROWS = 384
"""From this many rows (a long prefill chunk) a call unpacks the weights and runs a bf16 matmul: the
int4 kernel's cost grows with the rows, about 1.8x a bf16 matmul's at 1,600 (benchmarks/bench_int4.py)."""
DENSE_FROM_ROWS_NATIVE = 96
"""The same where the compiled unpacking is used (``native``): it takes a third to a ninth of the time,
which moves the break-even to about 96 rows on the embedded model's shapes (bench_int4.py --prefill)."""


def _native_enabled() -> bool:
    from hermes_core.engines.local.cpu.native_step import enabled

    return enabled()


_PACKED_ROWS = 64
"""Output rows per block of torch's CPU int4 packing: block b holds rows 64b..64b+63 as (K, 32) bytes,
row 64b + j in the low nibbles and row 64b + 32 + j in the high ones."""


def _unpack(packed: Any, rows: int, columns: int) -> Any:
    """The codes ``(rows, columns)`` (uint8) of ``packed`` in the layout above; all 255 where it cannot apply."""
    import torch

    if rows % _PACKED_ROWS or tuple(packed.shape) != (rows, columns // 2):
        return torch.full((rows, columns), 255, dtype=torch.uint8)
    blocks = packed.view(rows // _PACKED_ROWS, columns, _PACKED_ROWS // 2)
    halves = torch.cat([blocks & 15, blocks >> 4], dim=-1)  # (blocks, K, 64)
    return halves.permute(0, 2, 1).reshape(rows, columns)


def _module_class() -> type:
    import torch

    class Int4Linear(torch.nn.Module):
        """A linear layer whose weight lives packed in an ``Int4Group`` (member ``index`` of it)."""

        def __init__(self, group: Int4Group, index: int) -> None:
            super().__init__()
            self.in_features = group.in_features
            self.out_features = group.sizes[index]
            self.index = index
            self._direct_kernel_group = group
            if index == 0:  # counted once in the model's memory footprint
                self.register_buffer("packed_weight", group.packed, persistent=False)
                self.register_buffer("scales_and_zeros", group.scales_and_zeros, persistent=False)

        def forward(self, x: Any) -> Any:
            return self._direct_kernel_group.run(x, self.index)

        def extra_repr(self) -> str:
            return f"in_features={self.in_features}, out_features={self.out_features}, int4 g{GROUP_SIZE}"

    return Int4Linear


@functools.cache
def int4_linear_class() -> type:
    """The ``Int4Linear`` module class (built on first use, so importing this module needs no torch)."""
    return _module_class()


def quantize_linears_int4(
    model: Any,
    group_size: int = GROUP_SIZE,
    progress: Callable[[str], None] | None = None,
    native: bool = False,
) -> int:
    """Replace the decoder layers' projections of ``model`` with int4 layers; returns how many.

    Handles the ``q/k/v/o_proj`` and ``gate/up/down_proj`` ``nn.Linear`` layers whose input size
    divides by ``group_size`` (Llama, Mistral, Qwen and their kin); embeddings and the output head
    stay as they are. Siblings with one input are packed together. ``native``: the groups unpack their
    weights for prefill with the compiled kernel once it is built (``Int4Group.dense_weight``).
    """
    import torch

    linear_class = int4_linear_class()
    replaced = 0
    parents = [module for module in model.modules() if any(True for _ in module.children())]
    for parent in parents:
        children = dict(parent.named_children())
        candidates = {
            name: child
            for name, child in children.items()
            if name in _LINEAR_NAMES
            and type(child) is torch.nn.Linear
            and child.weight.device.type == "cpu"
            and child.in_features % group_size == 0
        }
        if not candidates:
            continue
        sets: list[list[str]] = []
        taken: set[str] = set()
        for siblings in SIBLING_GROUPS:
            if all(name in candidates for name in siblings):
                members = [candidates[name] for name in siblings]
                if len({m.in_features for m in members}) == 1 and len({m.bias is None for m in members}) == 1:
                    sets.append(list(siblings))
                    taken.update(siblings)
        sets.extend([name] for name in candidates if name not in taken)
        for names in sets:
            members = [candidates[name] for name in names]
            group = Int4Group([m.weight for m in members], [m.bias for m in members], group_size, native)
            for index, name in enumerate(names):
                module = linear_class(group, index)
                group.layers.append(module)
                setattr(parent, name, module)
                replaced += 1
        if progress is not None:
            progress(f"int4: {replaced} layers")
    return replaced


def int4_bytes(model: Any) -> int:
    """Bytes the int4 groups of ``model`` hold (already in its buffers; for reporting)."""
    groups = {
        id(g): g for m in model.modules() if (g := getattr(m, "_direct_kernel_group", None)) is not None
    }
    return sum(g.nbytes() for g in groups.values() if isinstance(g, Int4Group))
