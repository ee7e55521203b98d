"""bf16 linear layers on CPU with their weights reordered once for oneDNN, instead of at every call.

``torch.nn.functional.linear`` in bf16 on CPU hands the weight to oneDNN, which reorders it into its
blocked layout on every call. Reordering once (``torch.ops.mkldnn._reorder_linear_weight``, what
inductor's CPU weight prepacking uses) and calling ``torch.ops.mkldnn._linear_pointwise`` gives the
same bits (tests/core/test_cpu_linear.py) about twice as fast for a decode step: the embedded model's
49,152 x 576 output layer went from 5.8 to 2.6 ms a token here, each bf16 projection 1.5-2.2x faster
(benchmarks/bench_cpu_kernels.py).

The packed copy replaces the dense weight where ``release_dense`` allows it and no other module
shares the tensor (a tied output layer keeps the embedding it shares), so memory does not grow.
"""

from __future__ import annotations

import functools
import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

logger = logging.getLogger(__name__)


@functools.cache
def prepacking_available() -> bool:
    """Whether this torch has oneDNN's prepacked bf16 linear on CPU (and it computes what ``F.linear`` does)."""
    import torch

    if not torch.backends.mkldnn.is_available():
        return False
    try:
        weight = torch.arange(12, dtype=torch.float32).reshape(3, 4).to(torch.bfloat16) / 8
        x = torch.ones(1, 4, dtype=torch.bfloat16)
        packed = torch.ops.mkldnn._reorder_linear_weight(weight, None)
        out = torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")
    except (AttributeError, RuntimeError, NotImplementedError) as error:
        logger.debug("no prepacked oneDNN linear in this torch build: %s", error)
        return False
    return bool(torch.equal(out, torch.nn.functional.linear(x, weight)))


def prepack_cpu_linears(model: Any, *, release_dense: bool) -> int:
    """Route ``model``'s bf16 CPU ``nn.Linear`` layers to prepacked oneDNN weights; returns how many.

    ``release_dense`` swaps each unshared dense weight for an empty placeholder once packed (the
    model is then for inference only: ``state_dict`` no longer holds those weights).
    """
    import torch

    candidates = [
        module
        for module in model.modules()
        if type(module) is torch.nn.Linear
        and "forward" not in vars(module)  # already routed, or wrapped by someone else (accelerate hooks)
        and module.weight.device.type == "cpu"
        and module.weight.dtype == torch.bfloat16
    ]
    if not candidates or not prepacking_available():
        return 0
    uses = Counter(
        id(parameter) for module in model.modules() for parameter in module.parameters(recurse=False)
    )
    with torch.no_grad():
        for module in candidates:
            weight = module.weight
            packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), None)
            bias = None if module.bias is None else module.bias.detach()
            module.forward = _packed_forward(packed, bias)
            module._prepacked_weight = packed
            if release_dense and uses[id(weight)] == 1:
                module.weight = torch.nn.Parameter(
                    torch.empty(0, dtype=weight.dtype, device=weight.device), requires_grad=False
                )
    return len(candidates)


def _packed_forward(packed: Any, bias: Any) -> Callable[[Any], Any]:
    """``forward`` of a linear layer whose weight oneDNN holds prepacked."""
    import torch

    linear = torch.ops.mkldnn._linear_pointwise

    def forward(x: Any) -> Any:
        return linear(x, packed, bias, "none", [], "")

    return forward


def prepacked_bytes(model: Any) -> int:
    """Bytes held by prepacked weights (not counted by ``model.get_memory_footprint()``)."""
    total = 0
    for module in model.modules():
        packed = vars(module).get("_prepacked_weight")
        if packed is not None:
            total += packed.numel() * packed.element_size()
    return total
