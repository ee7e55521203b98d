"""How far greedy text with the engine's CPU decode speed-ups agrees with plain transformers' text.

Usage: ``.venv/bin/python benchmarks/decode_agreement.py [--tokens 96]``

For NF4 + bf16 and for bf16, generates greedy free text for six prompts with every speed-up on,
with only folded GQA attention off, and with every speed-up off, and prints how many leading
tokens each agrees with the all-off text (bf16 against fp32 as a yardstick of ordinary rounding
differences). The exact speed-ups should agree to the end; folded attention rounds differently.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_engine import agreement, quiet_libraries

PROMPTS = [
    "Write a long story about a dragon who learns to cook.",
    "Explain how a bicycle works.",
    "What are the benefits of exercise?",
    "Describe the city of Paris.",
    "Tell me about the history of computers.",
    "Give me a recipe for pancakes.",
]
ALL_OFF = {
    "direct_4bit_kernel": False,
    "grouped_decode_attention": False,
    "prepack_linear": False,
    "lean_decode": False,
}
VARIANTS = {
    "all on": {},
    "all on but folded GQA": {"grouped_decode_attention": False},
    "all off": ALL_OFF,
}


def greedy_ids(engine: Any, tokens: int) -> list[list[int]]:
    """Greedy completion token ids for each prompt."""
    from hermes_core import Message

    out = []
    for prompt in PROMPTS:
        result = engine.generate([Message("user", prompt)], max_new_tokens=tokens, constrained=False)
        out.append(engine.tokenizer(result.raw_text, add_special_tokens=False)["input_ids"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=96)
    args = parser.parse_args()
    quiet_libraries()
    from hermes_core import load_engine

    print(f"leading greedy tokens equal to the all-off text, of {args.tokens}, per prompt")
    for label, load in (
        ("nf4 + bf16", {"quantization": "4bit", "torch_dtype": "bfloat16"}),
        ("bf16", {"torch_dtype": "bfloat16"}),
    ):
        texts = {
            name: greedy_ids(load_engine(progress=False, prefix_cache=False, **load, **options), args.tokens)
            for name, options in VARIANTS.items()
        }
        for name in VARIANTS:
            counts = [agreement(a, b) for a, b in zip(texts[name], texts["all off"], strict=True)]
            print(f"{label:<11}{name:<24}{counts}")
    fp32 = greedy_ids(
        load_engine(progress=False, prefix_cache=False, torch_dtype="float32", **ALL_OFF), args.tokens
    )
    bf16 = greedy_ids(
        load_engine(progress=False, prefix_cache=False, torch_dtype="bfloat16", **ALL_OFF), args.tokens
    )
    print(
        f"{'yardstick':<11}{'bf16 vs fp32 (all off)':<24}{[agreement(a, b) for a, b in zip(bf16, fp32, strict=True)]}"
    )


if __name__ == "__main__":
    main()
