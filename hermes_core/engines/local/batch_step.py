"""One decode step for several sequences at once, each with its own KV cache.

Decoding a token is bound by reading the weights, so the projections and the MLP of a stock Llama
decoder layer (Llama 2/3, SmolLM2, the Llama-based Hermes models) run once over every row of the
batch (``(batch, 1, hidden)``); attention, the only part that reads a row's own KV, runs row by row
on that row's cache, with exactly the call a request decoding alone makes (folded GQA attention or
transformers' ``sdpa``, no mask, no padding). So rows of any lengths join and leave without copying
or padding any cache, and a row's attention is bit for bit its solo attention; only the batched
matrix products may round differently from one-row ones (see docs/engine.md).

Other architectures step each row through ``model.forward`` on its own cache (``RowByRowStep``):
correct, interleaved, but not faster than one request at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from hermes_core.engines.local.cpu.lean_decode import LeanDecodeLayer, RotaryTables, _rms_norm
from hermes_core.engines.local.cpu.native_step import NativeSlot, can_run
from hermes_core.engines.local.cpu.prefill_attention import MARK as NATIVE_MARK
from hermes_core.engines.local.shared_prefix import cascade_attention, pieces_attention


class DecodeStep(Protocol):
    """Feeds one token per row (at that row's next position) and returns float32 logits ``(rows, vocab)``."""

    batched: bool

    def __call__(
        self, tokens: Sequence[int], caches: Sequence[Any], prefixes: Sequence[Any] | None = None
    ) -> Any: ...


def decode_step_for(model: Any, cache_argument: str) -> DecodeStep:
    """The batched Llama step where every decoder layer is a stock one, else the row-by-row step."""
    step = LlamaBatchStep.for_model(model)
    return step if step is not None else RowByRowStep(model, cache_argument)


class RowByRowStep:
    """Each row through ``model.forward`` on its own cache: any architecture, no speed-up."""

    batched = False
    shares_prefixes = False

    def __init__(self, model: Any, cache_argument: str) -> None:
        self.model = model
        self.cache_argument = cache_argument

    def __call__(
        self, tokens: Sequence[int], caches: Sequence[Any], prefixes: Sequence[Any] | None = None
    ) -> Any:
        import torch

        if prefixes is not None and any(prefix is not None for prefix in prefixes):
            raise ValueError("RowByRowStep takes whole caches, not shared prefixes.")
        logits = []
        for token, cache in zip(tokens, caches, strict=True):
            logits.append(single_row_logits(self.model, self.cache_argument, [token], cache))
        return torch.cat(logits)


def single_row_logits(model: Any, cache_argument: str, ids: Sequence[int], cache: Any) -> Any:
    """Float32 logits ``(1, vocab)`` of the last of ``ids`` fed to ``model`` after ``cache`` (which grows)."""
    import torch

    input_ids = torch.tensor([list(ids)], dtype=torch.long, device=model.device)
    output = model(input_ids=input_ids, use_cache=True, **{cache_argument: cache}, **logits_to_keep(model))
    # What generate does with the last position's logits.
    return output.logits[:, -1].to(copy=True, dtype=torch.float32)


def logits_to_keep(model: Any) -> dict[str, int]:
    """``logits_to_keep=1`` where the model takes it (only the last position's logits are used)."""
    import inspect

    accepts = "logits_to_keep" in inspect.signature(model.forward).parameters
    return {"logits_to_keep": 1} if accepts else {}


class LlamaBatchStep:
    """The one-token step of a stock Llama causal LM over several rows, each row with its own cache.

    Each layer: RMS norm, the q/k/v projection (one direct 4-bit kernel call where the model has
    it), rotary embedding at each row's own position, then per row the cache append and attention,
    then ``o_proj`` and the MLP over all rows. The operations are the lean step's
    (``cpu/lean_decode.py``), which are transformers' own in the same order.
    """

    batched = True
    shares_prefixes = True  # rows may hold a ``SharedPrefix`` plus their own suffix

    def __init__(self, model: Any, layers: list[LeanDecodeLayer], native: bool = True) -> None:
        self.model = model
        self.inner = model.model
        self.layers = layers
        self._native = NativeSlot(layers if native else [], model)  # one_token's compiled layers, once built

    @classmethod
    def for_model(cls, model: Any, native: bool = True) -> LlamaBatchStep | None:
        """The step for ``model`` if it is a ``LlamaForCausalLM`` made of stock layers with no hooks, else None."""
        try:
            from transformers.models.llama import modeling_llama as llama
        except ImportError:
            return None
        from hermes_core.engines.local.cpu.lean_decode import _stock

        inner = getattr(model, "model", None)
        if type(model) is not llama.LlamaForCausalLM or type(inner) is not llama.LlamaModel:
            return None
        if model._forward_hooks or model._forward_pre_hooks or getattr(model, "_hf_hook", None):
            return None
        layers = list(inner.layers[: inner.config.num_hidden_layers])
        if not all(type(layer) is llama.LlamaDecoderLayer and _stock(layer, llama) for layer in layers):
            return None
        rotary = RotaryTables()
        return cls(model, [LeanDecodeLayer(layer, llama, rotary) for layer in layers], native)

    def __call__(
        self, tokens: Sequence[int], caches: Sequence[Any], prefixes: Sequence[Any] | None = None
    ) -> Any:
        """Logits after feeding each row its token; a row with a ``SharedPrefix`` has only its suffix in its cache."""
        import torch

        device = self.model.device
        prefixes = list(prefixes) if prefixes is not None else [None] * len(caches)
        input_ids = torch.tensor([[token] for token in tokens], dtype=torch.long, device=device)
        positions = torch.tensor(
            [
                [cache.get_seq_length() + (prefix.length if prefix is not None else 0)]
                for cache, prefix in zip(caches, prefixes, strict=True)
            ],
            dtype=torch.long,
            device=device,
        )
        groups = _rows_by_prefix(prefixes)
        # What LlamaAttention receives as **kwargs for each row (made once a step, not once a layer).
        passed = [{"position_ids": positions[row : row + 1], "use_cache": True} for row in range(len(caches))]
        hidden = self.inner.embed_tokens(input_ids)
        position_embeddings = self.inner.rotary_emb(hidden, position_ids=positions)
        for index, lean in enumerate(self.layers):
            hidden = self._layer(lean, hidden, position_embeddings, passed, caches, prefixes, groups, index)
        hidden = self.inner.norm(hidden)
        logits = self.model.lm_head(hidden[:, -1:, :])
        return logits[:, -1].to(copy=True, dtype=torch.float32)

    def one_token(self, token: int, cache: Any) -> Any:
        """Float32 logits ``(1, vocab)`` after feeding ``token`` to one request's whole ``cache``.

        ``model.forward``'s operations for one token in its order, without its wrappers: no
        ``nn.Module.__call__`` per layer, no mask building, no output objects (about 6% of the embedded
        model's decode step), with logits the model's own bit for bit (tests/core/test_lean_decode.py).
        Where the compiled step covers the layers (``cpu/native_step.py``) they run as one C++ call
        instead, whose attention rounds differently (tests/core/test_native_step.py).
        """
        import torch

        device = self.model.device
        input_ids = torch.tensor([[token]], dtype=torch.long, device=device)
        position_ids = torch.tensor([[cache.get_seq_length()]], dtype=torch.long, device=device)
        hidden = self.inner.embed_tokens(input_ids)
        position_embeddings = self.inner.rotary_emb(hidden, position_ids=position_ids)
        native = self._native.get()
        tables = None
        if native is not None and can_run(cache, len(self.layers)):
            head_dim = self.layers[0].layer.self_attn.head_dim
            tables = self.layers[0].rotary_tables.for_step(*position_embeddings, head_dim)
        if tables is not None:  # the lean step from C++, with its own attention (cpu/native_step.py)
            hidden = native.run(hidden, *tables, cache)
        else:
            for lean in self.layers:
                hidden = lean.forward(
                    hidden,
                    position_ids=position_ids,
                    cache=cache,
                    use_cache=True,
                    position_embeddings=position_embeddings,
                )
        hidden = self.inner.norm(hidden)
        return self.model.lm_head(hidden[:, -1:, :])[:, -1].to(copy=True, dtype=torch.float32)

    def mixed(self, pieces: Sequence[Sequence[int]], caches: Sequence[Any], prefixes: Sequence[Any]) -> Any:
        """Like ``__call__``, but a row may feed several tokens (the last prefill piece of a joining request).

        All rows' tokens go through the projections and the MLP as one sequence ``(1, tokens, hidden)``,
        so a joining request's piece is prefilled with the weights the decode step reads anyway. Each
        row attends causally over its own cache (and its shared prefix); returns float32 logits of
        each row's last token ``(rows, vocab)``.
        """
        import torch

        device = self.model.device
        ids = [token for piece in pieces for token in piece]
        offsets, position_list = [], []
        for piece, cache, prefix in zip(pieces, caches, prefixes, strict=True):
            start = cache.get_seq_length() + (prefix.length if prefix is not None else 0)
            offsets.append(len(position_list))
            position_list.extend(range(start, start + len(piece)))
        input_ids = torch.tensor([ids], dtype=torch.long, device=device)
        positions = torch.tensor([position_list], dtype=torch.long, device=device)
        hidden = self.inner.embed_tokens(input_ids)
        position_embeddings = self.inner.rotary_emb(hidden, position_ids=positions)
        spans = [(offset, len(piece)) for offset, piece in zip(offsets, pieces, strict=True)]
        groups = _rows_by_prefix(prefixes)
        for index, lean in enumerate(self.layers):
            hidden = self._mixed_layer(
                lean, hidden, position_embeddings, caches, prefixes, spans, groups, index
            )
        last = torch.tensor([offset + length - 1 for offset, length in spans], device=device)
        hidden = self.inner.norm(hidden[0, last].unsqueeze(1))
        return self.model.lm_head(hidden)[:, -1].to(copy=True, dtype=torch.float32)

    def _mixed_layer(
        self,
        lean: LeanDecodeLayer,
        hidden: Any,
        position_embeddings: Any,
        caches: Sequence[Any],
        prefixes: Sequence[Any],
        spans: Sequence[tuple[int, int]],
        groups: Sequence[list[int]],
        index: int,
    ) -> Any:
        """One decoder layer over the rows' tokens laid end to end (see ``mixed``).

        Rows over one shared prefix attend over it in one call (``pieces_attention``).
        """
        import torch

        attention = lean.layer.self_attn
        residual = hidden
        hidden = _rms_norm(lean.layer.input_layernorm, hidden)
        query, key, value = lean._rotated_qkv(attention, hidden, position_embeddings)
        parts = [slice(offset, offset + length) for offset, length in spans]
        own = [
            cache.update(key[:, :, part], value[:, :, part], attention.layer_idx, kwargs={"use_cache": True})
            for part, cache in zip(parts, caches, strict=True)
        ]
        outputs: list[Any] = [None] * len(caches)
        for rows in groups:
            attended = pieces_attention(
                [query[:, :, parts[row]] for row in rows],
                [own[row] for row in rows],
                prefixes[rows[0]],
                index,
                attention.scaling,
                compiled=getattr(attention, NATIVE_MARK, False),
            )
            for row, output in zip(rows, attended, strict=True):
                outputs[row] = output
        output = torch.cat(outputs, dim=1).reshape(*residual.shape[:-1], -1).contiguous()
        return _attention_out_and_mlp(lean, residual, output)

    def _layer(
        self,
        lean: LeanDecodeLayer,
        hidden: Any,
        position_embeddings: Any,
        passed: Sequence[dict[str, Any]],
        caches: Sequence[Any],
        prefixes: Sequence[Any],
        groups: Sequence[list[int]],
        index: int,
    ) -> Any:
        """``LeanDecodeLayer.forward`` over all rows, with the cache append and attention per row.

        Rows sharing a prefix attend together (``cascade_attention``); the others alone, as a lone request.
        """
        import torch

        attention = lean.layer.self_attn
        residual = hidden
        hidden = _rms_norm(lean.layer.input_layernorm, hidden)
        query, key, value = lean._rotated_qkv(attention, hidden, position_embeddings)
        outputs: list[Any] = [None] * len(caches)
        own: list[tuple[Any, Any]] = []
        for row, cache in enumerate(caches):
            row_key, row_value = cache.update(
                key[row : row + 1], value[row : row + 1], attention.layer_idx, kwargs=passed[row]
            )
            own.append((row_key, row_value))
        for rows in groups:
            prefix = prefixes[rows[0]]
            if prefix is None:  # alone, with exactly the call a lone request makes
                for row in rows:
                    outputs[row] = lean._attend(attention, query[row : row + 1], *own[row], passed[row])
                continue
            shared = cascade_attention(
                query[rows] if len(rows) < len(caches) else query,
                prefix.keys[index],
                prefix.values[index],
                [own[row] for row in rows],
                attention.scaling,
                compiled=getattr(attention, NATIVE_MARK, False),
            )
            if len(rows) == len(caches):  # every row over one prefix, in order: no reassembly
                output = shared
                break
            for position, row in enumerate(rows):
                outputs[row] = shared[position : position + 1]
        else:
            output = torch.cat(outputs)
        return _attention_out_and_mlp(lean, residual, output.reshape(*residual.shape[:-1], -1).contiguous())


def _rows_by_prefix(prefixes: Sequence[Any]) -> list[list[int]]:
    """Row indices grouped by the ``SharedPrefix`` they hold (rows with none form one group), in row order."""
    groups: dict[int, list[int]] = {}
    for row, prefix in enumerate(prefixes):
        groups.setdefault(id(prefix), []).append(row)
    return list(groups.values())


def _attention_out_and_mlp(lean: LeanDecodeLayer, residual: Any, attended: Any) -> Any:
    """The rest of a decoder layer after attention: output projection, residual, norm, MLP, residual."""
    layer = lean.layer
    mlp = layer.mlp
    hidden = residual + layer.self_attn.o_proj.forward(attended)
    residual = hidden
    hidden = _rms_norm(layer.post_attention_layernorm, hidden)
    group = lean.gate_up_group
    if group is not None and group.direct:
        gate, up = group.run_all(hidden)
    else:
        gate, up = mlp.gate_proj.forward(hidden), mlp.up_proj.forward(hidden)
    hidden = mlp.down_proj.forward(mlp.act_fn(gate) * up)
    return residual + hidden
