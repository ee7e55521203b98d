"""Builds a tiny, randomly initialised ChatML Llama and its tokenizer on disk, with no download.

The tokenizer mimics the Hermes 2 Pro one: ``<tool_call>`` and ``</tool_call>`` are single special
tokens, so the engine's "decode with special tokens kept" path is exercised.
"""

from __future__ import annotations

from pathlib import Path

# 2 layers, grouped-query attention (4 query heads, 2 key/value heads), hidden 64.
TINY_SIZES = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}
CHATML_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<tool_call>", "</tool_call>"]

_CORPUS = [
    "<|im_start|>system\nYou are a function calling AI model.<|im_end|>\n",
    "<|im_start|>user\nWhat is the weather in Paris?<|im_end|>\n<|im_start|>assistant\n",
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n</tool_call>',
    '{"arguments": {"symbol": "TSLA"}, "name": "get_stock_fundamentals"}',
    "The quick brown fox jumps over the lazy dog. 0123456789 true false null [] {} , : \" ' \\",
    "Hello! How can I help you today? The answer is 42.",
]


def build_tiny_model(path: str | Path, *, seed: int = 0) -> Path:
    """Write a tiny Llama (2 layers, hidden 64) and a ChatML BPE tokenizer to ``path``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600,
        special_tokens=CHATML_SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_CORPUS * 20, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<tool_call>", "</tool_call>"],
    )
    tokenizer.save_pretrained(path)

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        **TINY_SIZES,
        max_position_embeddings=2048,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|im_start|>"),
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(path)
    return path


def build_tiny_qwen2(
    path: str | Path, tokenizer_dir: str | Path, *, seed: int = 1, bias_std: float = 0.0
) -> Path:
    """Write a tiny Qwen2 (q/k/v with biases; ``bias_std`` > 0 makes them non-zero) with ``tokenizer_dir``'s tokenizer."""
    import shutil

    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    path, tokenizer_dir = Path(path), Path(tokenizer_dir)
    path.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (tokenizer_dir / name).exists():
            shutil.copy(tokenizer_dir / name, path / name)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        **TINY_SIZES,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
    )
    model = Qwen2ForCausalLM(config)
    if bias_std:
        with torch.no_grad():
            for layer in model.model.layers:
                for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                    proj.bias.normal_(0, bias_std)
    model.save_pretrained(path)
    return path
