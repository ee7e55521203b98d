"""The output layer (LM head) in 8 bits on CPU: one int8 code per weight and a scale per output row.

The output layer is the largest matrix a decode step reads: 49,152 x 576 for SmolLM2 (tied to the
embedding), 128,256 x 4,096 for Llama 3; in bf16 it was 46% of the bytes an int4 step of the embedded
model reads. llama.cpp reads it in 8 bits too (the embedded GGUF stores it as Q8_0). Here each row
``w`` becomes ``scale * q`` with ``q`` in -127..127 and ``scale = max|w| / 127``, multiplied by torch's
CPU kernel ``aten._weight_int8pack_mm``, which reads the int8 codes directly.

Where the dense weight stays in memory anyway (a head tied to the embedding), each row's
``RESCORED`` highest int8 logits are computed again from it, exactly as the dense head computes them:
the greedy token is then the dense head's whenever it ranks among the int8 head's top 16, and the
logits that sampling and a grammar mask see are the dense head's where it matters.
"""

from __future__ import annotations

import functools
from typing import Any

RESCORED = 16
"""Logits per row recomputed from the dense weight, when there is one."""


def int8_kernel_available() -> bool:
    """Whether this torch build has the CPU int8 weight-only matmul."""
    import torch

    return hasattr(torch.ops.aten, "_weight_int8pack_mm")


def quantize_rows_int8(weight: Any) -> tuple[Any, Any]:
    """Symmetric int8 codes ``(N, K)`` of ``weight`` and one float32 scale per row ``(N,)``."""
    import torch

    rows = weight.detach().to(torch.float32)
    scale = rows.abs().amax(dim=1) / 127
    inverse = torch.where(scale > 0, 1 / scale, torch.zeros_like(scale))
    codes = torch.clamp(torch.round(rows * inverse[:, None]), -127, 127).to(torch.int8)
    return codes, scale


def _module_class() -> type:
    import torch

    class Int8Linear(torch.nn.Module):
        """A bias-free linear layer on int8 codes with a scale per output feature (see the module docstring).

        ``dense`` is the full-precision weight where something else keeps it (a tied embedding): the top
        ``RESCORED`` outputs of each row are then recomputed from it. It is held, not registered, so
        the model's memory footprint counts it once, under its owner.
        """

        def __init__(self, weight: Any, dtype: Any, dense: Any = None) -> None:
            super().__init__()
            codes, scale = quantize_rows_int8(weight)
            self.in_features = int(weight.shape[1])
            self.out_features = int(weight.shape[0])
            self.register_buffer("codes", codes.contiguous(), persistent=False)
            # The kernel takes the scales in the activations' dtype.
            self.register_buffer("scales", scale.to(dtype), persistent=False)
            self._dense = (dense,)  # a tuple: not registered as this module's parameter

        def forward(self, x: Any) -> Any:
            rows = x.reshape(-1, self.in_features)
            if rows.dtype != self.scales.dtype:
                rows = rows.to(self.scales.dtype)
            rows = rows.contiguous()
            out = torch.ops.aten._weight_int8pack_mm(rows, self.codes, self.scales)
            dense = self._dense[0]
            if dense is not None and dense.dtype == rows.dtype:
                _rescore(out, rows, dense)
            out = out.view(*x.shape[:-1], self.out_features)
            return out if out.dtype == x.dtype else out.to(x.dtype)

        def extra_repr(self) -> str:
            rescored = f", top {RESCORED} rescored" if self._dense[0] is not None else ""
            return f"in_features={self.in_features}, out_features={self.out_features}, int8 per row{rescored}"

    return Int8Linear


def _rescore(out: Any, rows: Any, dense: Any) -> None:
    """Replace each row's ``RESCORED`` highest outputs in ``out`` by ``rows @ dense.T`` at those columns (in place).

    Row by row, with the very call the dense head makes for one row (a decode step), so a rescored
    logit is bit for bit the dense head's.
    """
    import torch

    top = out.topk(min(RESCORED, out.shape[-1]), dim=-1, sorted=False).indices
    for row in range(rows.shape[0]):
        columns = top[row]
        out[row, columns] = torch.nn.functional.linear(rows[row : row + 1], dense[columns])[0]


@functools.cache
def int8_linear_class() -> type:
    """The ``Int8Linear`` module class (built on first use, so importing this module needs no torch)."""
    return _module_class()


def quantize_output_head(model: Any, dtype: Any) -> bool:
    """Replace ``model``'s output layer by an ``Int8Linear`` computing in ``dtype``; returns whether it did.

    Only a plain bias-free ``nn.Linear`` head on CPU is replaced, where this torch has the kernel. A
    head tied to the input embedding leaves the embedding as it is, and rescores from its weight.
    """
    import torch

    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if (
        type(head) is not torch.nn.Linear
        or head.bias is not None
        or head.weight.device.type != "cpu"
        or dtype not in (torch.bfloat16, torch.float32)
        or not int8_kernel_available()
    ):
        return False
    embedding = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    tied = embedding is not None and getattr(embedding, "weight", None) is head.weight
    model.set_output_embeddings(int8_linear_class()(head.weight, dtype, head.weight if tied else None))
    return True


def quantized_head_summary(model: Any) -> str | None:
    """How ``model``'s output layer is held, if this module quantized it ("int8 head, ..."), else None."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if type(head).__name__ != "Int8Linear":
        return None
    return f"int8 head (top {RESCORED} rescored)" if head._dense[0] is not None else "int8 head"
