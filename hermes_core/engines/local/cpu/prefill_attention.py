"""Causal attention of prefill pieces in bf16 on CPU with the compiled kernel (``prefill_attention.cpp``).

On CPUs with AVX-512 BF16 but no AMX, torch's flash attention multiplies its bf16 blocks through a
generic path: it was 58% of the embedded model's prefill of a 1,600-token tools prompt, at about 140
GFLOP/s on two cores (benchmarks/profile_engine.py, section 2b). The compiled kernel runs the same
online softmax on the CPU's bf16 dot-product instruction, 3-7x faster at those shapes, as accurate as
torch's kernel and rounded differently (tests/core/test_prefill_attention.py). On CPUs with AMX torch's
kernel multiplies on AMX tiles, its fast path, and is kept (not measured here: no such machine).

It is part of the compiled module of ``native_step.py`` (built once per machine, in the background from
the start of a CPU load) and covers what transformers' ``sdpa`` gets for a prompt piece: bf16 query,
key and value on CPU, head size 64 or 128, and either no mask over a first piece or the causal mask of
a piece after cached keys (checked, in microseconds). Everything else stays with ``sdpa``. A model's
first prefill waits for the module like its first decode step does, so which kernel computes a prompt
never depends on timing, and a prefix served from the cache is bit for bit what a cold prefill makes.
Batched steps use it too, with each row's log-sum-exp (``attention_with_lse``), for their attention over a
shared prefix (``shared_prefix.py``). Marked per model at load (``use_native_prefill_attention``);
``native_decode=False`` or ``HERMES_NATIVE_DECODE=0`` keeps torch's kernel.
"""

from __future__ import annotations

from typing import Any

MARK = "hermes_native_prefill"  # set on a model's attention modules that may use the kernel
HEAD_SIZES = (64, 128)


def use_native_prefill_attention(model: Any) -> int:
    """Let ``model``'s attention modules run prefill pieces on the compiled kernel; returns how many.

    Only for CPU models in bf16 that use the library's attention function (``folded_attention``).
    """
    from hermes_core.engines.local.cpu.folded_attention import ATTENTION_NAME

    config = getattr(model, "config", None)
    if config is None or getattr(config, "_attn_implementation", None) != ATTENTION_NAME:
        return 0
    import torch

    if getattr(model, "dtype", None) != torch.bfloat16:
        return 0
    marked = 0
    for module in model.modules():
        if hasattr(module, "head_dim") and hasattr(module, "layer_idx") and hasattr(module, "scaling"):
            setattr(module, MARK, True)
            marked += 1
    return marked


def applies(
    module: Any, query: Any, key: Any, value: Any, attention_mask: Any, kwargs: dict[str, Any], dropout: float
) -> bool:
    """Whether this ``sdpa`` call is a causal prompt piece the compiled kernel computes (building it first)."""
    if not getattr(module, MARK, False) or query.shape[2] < 2 or dropout != 0.0:
        return False
    if kwargs.get("is_causal") is False or not getattr(module, "is_causal", True):
        return False
    if (
        kwargs.get("softcap") is not None
        or kwargs.get("position_bias") is not None
        or kwargs.get("sinks") is not None
    ):
        return False
    if kwargs.get("output_attentions", False) or not _supported(query, key, value, causal=True):
        return False
    native = _kernel()
    if native is None:
        return False
    if attention_mask is None:
        return key.shape[2] == query.shape[2]  # transformers drops the mask only where it is plain causal
    batch, rows, columns = attention_mask.shape[0], *attention_mask.shape[-2:]
    if (rows, columns) != (query.shape[2], key.shape[2]) or batch not in (1, query.shape[0]):
        return False  # e.g. a static cache's mask over room not yet filled
    return native.is_causal_after_cache(attention_mask)


def attention_with_lse(
    query: Any, key: Any, value: Any, scaling: float, causal: bool
) -> tuple[Any, Any] | None:
    """Output ``(batch, heads, queries, dim)`` and float log-sum-exps ``(batch, heads, queries)`` from the kernel.

    Causal as ``prefill_attention``, or every query over all keys; None where the kernel does not apply
    (then the caller computes it as before). For the shared-prefix attention of batched steps, which
    merges partial results by their log-sum-exps (``shared_prefix.py``) and calls this only for
    models marked at load.
    """
    native = _kernel() if _supported(query, key, value, causal) else None
    if native is None:
        return None
    return native.attention_with_lse(query, key, value, float(scaling), causal)


def prefill_attention(query: Any, key: Any, value: Any, scaling: float | None) -> Any:
    """Causal attention, ``(batch, heads, queries, dim)`` over ``(batch, kv_heads, keys, dim)``: ``(batch, queries, heads, dim)``."""
    native = _kernel()
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    return native.prefill_attention(query, key, value, float(scale))


def _supported(query: Any, key: Any, value: Any, causal: bool) -> bool:
    """Whether the kernel takes these tensors: bf16 on CPU, head size 64/128, grouped heads, unit last strides."""
    import torch

    if query.device.type != "cpu" or any(tensor.dtype != torch.bfloat16 for tensor in (query, key, value)):
        return False
    if query.shape[-1] not in HEAD_SIZES or query.shape[1] % key.shape[1] or key.shape[2] < 1:
        return False
    if causal and key.shape[2] < query.shape[2]:
        return False
    return all(tensor.stride(-1) == 1 for tensor in (query, key, value))


def _kernel() -> Any:
    """The compiled module if it has the kernel (waiting for its build), else None."""
    from hermes_core.engines.local.cpu.native_step import extension

    native = extension(wait=True)
    if native is None or not native.prefill_attention_available():
        return None
    return native
