"""Writes the tiny ChatML Llama of ``tests/tiny_model.py`` as a GGUF file (F32 tensors, gpt2 BPE vocab).

Lets the GGUF conversion path and its cache be tested in well under a second per conversion,
instead of the ~13 s the embedded SmolLM2 GGUF takes. The layout follows llama.cpp's converter:
q/k projections are permuted the way transformers un-permutes them, so a round trip is exact.
"""

from __future__ import annotations

import json
from pathlib import Path

CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
)

_LAYER_NAMES = {
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
_TOP_NAMES = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}


def _permute(array, heads: int):
    """llama.cpp's q/k row order (the inverse of what transformers applies when reading a GGUF)."""
    return (
        array.reshape(heads, 2, array.shape[0] // heads // 2, *array.shape[1:])
        .swapaxes(1, 2)
        .reshape(array.shape)
    )


def write_tiny_gguf(model_dir: str | Path, out_path: str | Path, layer_type: str | None = None) -> Path:
    """Write the saved tiny model in ``model_dir`` (config, tokenizer.json, safetensors) as a GGUF.

    ``layer_type`` (e.g. ``"Q4_1"``) stores the decoder layers' projections in that ggml type, as a
    quantized GGUF does; by default every tensor is F32.
    """
    import gguf
    import numpy as np
    from safetensors.torch import load_file

    model_dir, out_path = Path(model_dir), Path(out_path)
    config = json.loads((model_dir / "config.json").read_text())
    tok = json.loads((model_dir / "tokenizer.json").read_text())
    added = {token["content"]: token["id"] for token in tok["added_tokens"]}
    tokens = [""] * config["vocab_size"]
    for text, index in {**tok["model"]["vocab"], **added}.items():
        tokens[index] = text
    types = [gguf.TokenType.CONTROL if text in added else gguf.TokenType.NORMAL for text in tokens]
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]

    writer = gguf.GGUFWriter(str(out_path), "llama")
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_head_count_kv(config["num_key_value_heads"])
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_rope_freq_base(config.get("rope_theta") or config["rope_parameters"]["rope_theta"])
    writer.add_vocab_size(config["vocab_size"])
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(config["bos_token_id"])
    writer.add_eos_token_id(config["eos_token_id"])
    writer.add_pad_token_id(config["pad_token_id"])
    writer.add_chat_template(CHATML_TEMPLATE)

    heads = {
        "self_attn.q_proj": config["num_attention_heads"],
        "self_attn.k_proj": config["num_key_value_heads"],
    }
    for name, tensor in load_file(model_dir / "model.safetensors").items():
        array = tensor.float().numpy()
        if name in _TOP_NAMES:
            writer.add_tensor(_TOP_NAMES[name], array)
            continue
        parts = name.split(".")  # model.layers.<n>.<module path>.weight
        layer, module = parts[2], ".".join(parts[3:-1])
        if module in heads:
            array = _permute(array, heads[module])
        array = np.ascontiguousarray(array)
        if layer_type is not None and module in _LAYER_NAMES and "norm" not in module:
            kind = gguf.GGMLQuantizationType[layer_type]
            writer.add_tensor(
                f"blk.{layer}.{_LAYER_NAMES[module]}.weight",
                gguf.quants.quantize(array, kind),
                raw_dtype=kind,
            )
            continue
        writer.add_tensor(f"blk.{layer}.{_LAYER_NAMES[module]}.weight", array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out_path
