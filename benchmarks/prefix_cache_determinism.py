"""Does reusing a cached KV prefix change greedy output? Compared per dtype, warm vs cold engine.

Run: ``.venv/bin/python benchmarks/prefix_cache_determinism.py``. For each configuration (fp32, bf16, NF4 with bf16) it fills the
prefix cache with one turn, then generates the next turn with a warm engine and with an engine
whose prefix cache is off, and counts how many outputs are identical.
"""

from __future__ import annotations

import argparse

from hermes_core import Message, load_engine

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
QUESTIONS = [
    "Weather in Paris?",
    "Is it raining in Oslo?",
    "Tell me about Rome's weather",
    "What should I wear in Lima?",
]


CONFIGS = {
    "float32": {"torch_dtype": "float32"},
    "bfloat16": {"torch_dtype": "bfloat16"},
    "nf4-bf16": {"quantization": "4bit", "torch_dtype": "bfloat16"},
}


def compare(dtype: str, max_new_tokens: int) -> tuple[int, int]:
    """Return (identical, total) warm-vs-cold greedy outputs for the configuration ``dtype``."""
    options = CONFIGS[dtype]
    warm = load_engine(max_new_tokens=max_new_tokens, progress=False, **options)
    cold = load_engine(max_new_tokens=max_new_tokens, prefix_cache=False, progress=False, **options)
    system = Message("system", "You are a helpful assistant that uses tools. " * 8)
    identical = 0
    for question in QUESTIONS:
        first = [system, Message("user", question)]
        warm.generate(first, tools=[WEATHER])
        second = [*first, Message("assistant", "Let me check."), Message("user", "Go on.")]
        a = warm.generate(second, tools=[WEATHER])
        b = cold.generate(second, tools=[WEATHER])
        identical += a.raw_text == b.raw_text
        print(
            f"{dtype:9} reused {warm.stats.last_reused_prefix_tokens:4} tokens  identical={a.raw_text == b.raw_text}"
        )
    return identical, len(QUESTIONS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-new-tokens", type=int, default=40)
    args = parser.parse_args()
    for dtype in CONFIGS:
        same, total = compare(dtype, args.max_new_tokens)
        print(f"{dtype}: {same}/{total} warm outputs identical to cold")


if __name__ == "__main__":
    main()
