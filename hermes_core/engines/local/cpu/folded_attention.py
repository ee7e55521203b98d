"""Decode-step attention for grouped-query models in bf16/fp16 on CPU, without torch's slow GQA path.

For one new token with no mask, transformers calls ``scaled_dot_product_attention(..., enable_gqa=True)``.
On CPU in bf16 that kernel took 1.2 ms per layer at 1,600 cached tokens here (benchmarks/
bench_cpu_kernels.py), 36 ms of a decode step of the embedded model; given the query heads folded into
the rows of their key/value head (``[batch, kv_heads, group, dim]``, the layout transformers itself
uses when a mask is present) the same kernel took 0.31 ms. Causal prompt pieces of models marked for it
go to the compiled prefill kernel (``prefill_attention.py``). Every other call (masks, fp32, GPUs) goes
to transformers' own ``sdpa``. The result is as accurate but rounded differently, so greedy
text can part from transformers' after some tokens (benchmarks/decode_agreement.py).

Registered with transformers' ``AttentionInterface`` under ``ATTENTION_NAME``; it applies to prefill
and decode alike, so ``model.generate`` with or without the engine computes the same thing.
"""

from __future__ import annotations

import functools
from typing import Any

ATTENTION_NAME = "hermes_cpu_sdpa"


def folds(module: Any, query: Any, attention_mask: Any, kwargs: dict[str, Any], dropout: float = 0.0) -> bool:
    """Whether this attention call is a one-token GQA step in bf16/fp16 on CPU that folding handles."""
    return (
        getattr(module, "num_key_value_groups", 1) > 1
        and query.shape[2] == 1
        and attention_mask is None
        and dropout == 0.0
        and query.device.type == "cpu"
        and query.dtype in _low_precision()
        and kwargs.get("position_bias") is None
        and kwargs.get("softcap") is None
        and not kwargs.get("output_attentions", False)
    )


def folded_attention(query: Any, key: Any, value: Any, scaling: float | None) -> Any:
    """One-token attention with the query heads folded into their key/value head's rows: (batch, 1, heads, dim)."""
    import torch

    batch, heads, _, dim = query.shape
    folded = query.reshape(batch, key.shape[1], heads // key.shape[1], dim)
    output = torch.nn.functional.scaled_dot_product_attention(folded, key, value, scale=scaling)
    return output.reshape(batch, 1, heads, value.shape[-1])


def grouped_decode_attention(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[Any, None]:
    """transformers' ``sdpa`` attention, with one-token GQA steps in bf16/fp16 on CPU run with folded heads
    and causal prompt pieces on the compiled kernel where the model is marked for it."""
    if folds(module, query, attention_mask, kwargs, dropout):
        return folded_attention(query, key, value, scaling), None
    from hermes_core.engines.local.cpu import prefill_attention

    if prefill_attention.applies(module, query, key, value, attention_mask, kwargs, dropout):
        return prefill_attention.prefill_attention(query, key, value, scaling), None
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward(
        module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
    )


@functools.cache
def _low_precision() -> tuple[Any, ...]:
    import torch

    return (torch.bfloat16, torch.float16)


@functools.cache
def _register() -> None:
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    AttentionInterface.register(ATTENTION_NAME, grouped_decode_attention)
    AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)


def use_grouped_decode_attention(model: Any) -> bool:
    """Switch ``model`` from ``sdpa`` to ``grouped_decode_attention`` where it helps; returns whether it did.

    Only CPU models in bf16/fp16 with grouped-query attention that use ``sdpa`` are switched.
    """
    config = getattr(model, "config", None)
    if config is None or getattr(config, "_attn_implementation", None) != "sdpa":
        return False
    if getattr(model, "dtype", None) not in _low_precision():
        return False
    device = getattr(model, "device", None)
    if device is None or getattr(device, "type", None) != "cpu":
        return False
    text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    heads = getattr(text, "num_attention_heads", None)
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    if not heads or not kv_heads or heads == kv_heads:
        return False
    _register()
    try:
        model.set_attn_implementation(ATTENTION_NAME)
    except (ValueError, TypeError, AttributeError):  # a model class that refuses custom attention
        return False
    return True
