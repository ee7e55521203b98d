"""A leaner one-token step for Llama decoder layers: transformers' operations, fewer Python layers.

At 135M parameters a decode step is mostly Python: each of the 30 layers passes through a dozen
``nn.Module.__call__``s and keyword-renaming decorators before its few small kernels run. For the
one-token case (no mask, a cache, no hooks) ``LeanDecodeLayer`` runs the same tensor operations in the
same order, calling the submodules' ``forward`` directly, so the result is bit-identical
(tests/core/test_lean_decode.py). Anything else goes to the layer's own forward.

Only ``LlamaDecoderLayer`` with its stock submodules, on CPU, is handled (Llama 2/3, SmolLM2, Hermes
2 Pro / Θ / 3 on Llama); other architectures and devices keep transformers' forward.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hermes_core.engines.local.cpu.folded_attention import ATTENTION_NAME, folded_attention, folds


def use_lean_decode_layers(model: Any) -> int:
    """Give ``model``'s stock Llama decoder layers the lean one-token step; returns how many."""
    try:
        from transformers.models.llama import modeling_llama as llama
    except ImportError:
        return 0
    device = getattr(model, "device", None)
    if getattr(device, "type", None) != "cpu":  # only measured and tested on CPU
        return 0
    count = 0
    rotary = RotaryTables()  # one per model: every layer of a step rotates by the same cos/sin
    for module in model.modules():
        if (
            type(module) is llama.LlamaDecoderLayer
            and _stock(module, llama)
            and "forward" not in vars(module)
        ):
            module.forward = LeanDecodeLayer(module, llama, rotary).forward
            count += 1
    return count


def _stock(layer: Any, llama: Any) -> bool:
    """Whether ``layer`` is built from transformers' own Llama submodules, with no hooks on any of them."""
    attention, mlp = layer.self_attn, layer.mlp
    kinds = (
        (attention, llama.LlamaAttention),
        (mlp, llama.LlamaMLP),
        (layer.input_layernorm, llama.LlamaRMSNorm),
        (layer.post_attention_layernorm, llama.LlamaRMSNorm),
    )
    if not all(type(module) is kind for module, kind in kinds):
        return False
    return not any(
        module._forward_hooks or module._forward_pre_hooks or getattr(module, "_hf_hook", None)
        for module in layer.modules()
    )


class LeanDecodeLayer:
    """The one-token forward of one ``LlamaDecoderLayer`` (see the module docstring).

    Sibling projections that the direct 4-bit kernel runs as one call (q/k/v, gate/up) are taken
    from that one call, and the query and key heads, side by side in its output, are rotated as one
    tensor; folded GQA attention (``_cpu_attention``) is called without its dispatch. All of it gives
    the tensors the layer-by-layer path gives.
    """

    def __init__(self, layer: Any, llama: Any, rotary: RotaryTables | None = None) -> None:
        from hermes_core.engines.local.cpu.direct_4bit import kernel_group_of

        self.layer = layer
        self.rotary_tables = rotary or RotaryTables()
        self.original: Callable[..., Any] = layer.forward
        self.rotary = llama.apply_rotary_pos_emb
        self.eager = llama.eager_attention_forward
        self.attention_functions = llama.ALL_ATTENTION_FUNCTIONS
        attention, mlp = layer.self_attn, layer.mlp
        self.qkv_group = kernel_group_of([attention.q_proj, attention.k_proj, attention.v_proj])
        self.gate_up_group = kernel_group_of([mlp.gate_proj, mlp.up_proj])

    def forward(
        self,
        hidden_states: Any,
        attention_mask: Any = None,
        position_ids: Any = None,
        cache: Any = None,
        use_cache: bool | None = False,
        position_embeddings: Any = None,
        **kwargs: Any,
    ) -> Any:
        layer = self.layer
        if (
            hidden_states.shape[1] != 1
            or attention_mask is not None
            or cache is None
            or position_embeddings is None
            or layer.training
            or kwargs.get("output_attentions")
        ):
            return self.original(
                hidden_states,
                attention_mask=attention_mask,
                position_ids=position_ids,
                cache=cache,
                use_cache=use_cache,
                position_embeddings=position_embeddings,
                **kwargs,
            )
        attention, mlp = layer.self_attn, layer.mlp
        # LlamaDecoderLayer.forward -> LlamaAttention.forward, inlined; same operations, same order.
        residual = hidden_states
        hidden_states = _rms_norm(layer.input_layernorm, hidden_states)
        query, key, value = self._rotated_qkv(attention, hidden_states, position_embeddings)
        # What LlamaAttention receives as **kwargs from LlamaDecoderLayer.
        passed = {"position_ids": position_ids, "use_cache": use_cache, **kwargs}
        key, value = cache.update(key, value, attention.layer_idx, kwargs=passed)
        output = self._attend(attention, query, key, value, passed)
        output = output.reshape(*residual.shape[:-1], -1).contiguous()
        hidden_states = residual + attention.o_proj.forward(output)
        # LlamaMLP.forward, inlined.
        residual = hidden_states
        hidden_states = _rms_norm(layer.post_attention_layernorm, hidden_states)
        if self.gate_up_group is not None and self.gate_up_group.direct:
            gate, up = self.gate_up_group.run_all(hidden_states)
        else:
            gate, up = mlp.gate_proj.forward(hidden_states), mlp.up_proj.forward(hidden_states)
        hidden_states = mlp.down_proj.forward(mlp.act_fn(gate) * up)
        return residual + hidden_states

    def _rotated_qkv(
        self, attention: Any, hidden_states: Any, position_embeddings: Any
    ) -> tuple[Any, Any, Any]:
        """Query and key (rotated) and value, each ``(batch, heads, 1, head_dim)``, as LlamaAttention has them."""
        head_dim = attention.head_dim
        cos, sin = position_embeddings
        tables = self.rotary_tables.for_step(cos, sin, head_dim)
        heads_shape = (*hidden_states.shape[:-1], -1, head_dim)
        group = self.qkv_group
        if tables is not None and group is not None and group.direct:
            # q, k and v side by side in one kernel output: rotate the q and k heads in one go.
            q_size, k_size, _ = group.sizes
            q_heads, k_heads = q_size // head_dim, k_size // head_dim
            heads = group.run_joined(hidden_states).view(heads_shape).transpose(1, 2)
            rotated = _rotate(heads[:, : q_heads + k_heads], *tables)
            return rotated[:, :q_heads], rotated[:, q_heads:], heads[:, q_heads + k_heads :]
        if group is not None and group.direct:
            projected = group.run_all(hidden_states)
        else:
            projected = [
                proj.forward(hidden_states) for proj in (attention.q_proj, attention.k_proj, attention.v_proj)
            ]
        query, key, value = (part.view(heads_shape).transpose(1, 2) for part in projected)
        if tables is None:
            query, key = self.rotary(query, key, cos, sin)
            return query, key, value
        return _rotate(query, *tables), _rotate(key, *tables), value

    def _attend(self, attention: Any, query: Any, key: Any, value: Any, passed: dict[str, Any]) -> Any:
        implementation = attention.config._attn_implementation
        if implementation == ATTENTION_NAME and folds(attention, query, None, passed):
            return folded_attention(query, key, value, attention.scaling)
        function = self.attention_functions.get_interface(implementation, self.eager)
        output, _ = function(
            attention, query, key, value, None, dropout=0.0, scaling=attention.scaling, **passed
        )
        return output


class RotaryTables:
    """This step's ``cos`` and sign-folded ``sin``, made once and shared by every layer of a model.

    ``rotate_half(x) * sin`` is ``roll(x, half) * (sin with its first half negated)`` exactly (a sign
    flip rounds the same either side of a product), which takes three operations fewer per tensor.
    """

    def __init__(self) -> None:
        self._last: tuple[Any, Any, int, tuple[Any, Any]] | None = None  # replaced whole: safe across threads

    def for_step(self, cos: Any, sin: Any, head_dim: int) -> tuple[Any, Any] | None:
        """(cos, signed sin) shaped to broadcast over ``(batch, heads, 1, head_dim)``; None if the rotary is partial."""
        last = self._last
        if last is not None and last[0] is cos and last[1] is sin and last[2] == head_dim:
            return last[3]
        if cos.shape[-1] != head_dim or sin.shape != cos.shape or head_dim % 2:
            return None
        import torch

        half = head_dim // 2
        sign = torch.ones(head_dim, dtype=sin.dtype, device=sin.device)
        sign[:half] = -1
        tables = (cos.unsqueeze(1), sin.unsqueeze(1) * sign)
        self._last = (cos, sin, head_dim, tables)
        return tables


def _rotate(x: Any, cos: Any, signed_sin: Any) -> Any:
    """``apply_rotary_pos_emb`` for one tensor, ``(x * cos) + (rotate_half(x) * sin)``, bit for bit."""
    return (x * cos) + (x.roll(x.shape[-1] // 2, -1) * signed_sin)


def _rms_norm(norm: Any, hidden_states: Any) -> Any:
    """``LlamaRMSNorm.forward``, operation for operation (the variance updated in place: it is ours)."""
    import torch

    dtype = hidden_states.dtype
    hidden_states = hidden_states.to(torch.float32)
    variance = hidden_states.pow(2).mean(-1, keepdim=True)
    hidden_states = hidden_states * variance.add_(norm.variance_epsilon).rsqrt_()
    return norm.weight * hidden_states.to(dtype)
