"""Decode speed against llama.cpp, side by side, and what each of the engine's CPU speed-ups adds.

Usage: ``.venv/bin/python benchmarks/bench_decode.py [--rounds 6] [--tokens 48] [--threads N]``
(needs ``llama-cpp-python`` for the reference column; without it the engine rows still print).

Method: every variant of the embedded SmolLM2-135M and llama.cpp on the same GGUF are loaded into
this one process and measured in interleaved rounds (each variant and llama.cpp once a round, in
an order shuffled every round, after a short pause), at two context lengths: the story prompt alone (short) and the same request after the
10-tool system prompt (long, ~1,600 tokens: what every agent turn decodes after). Decode is greedy
with exactly ``--tokens`` new tokens (``min_new_tokens``), timed from the first to the last new token
(prefill excluded), through the KV cache the engine decodes into. Ratios against llama.cpp are taken
round by round, then the median, so a load burst hits both sides of a ratio alike.
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import statistics
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import load_average, machine_summary
from bench_engine import SPEEDUP_OPTIONS, STORY, TTFT_TOOLS, Timestamps, load_embedded, quiet_libraries

SETTLE_SECONDS = 0.3


@dataclass(frozen=True)
class Variant:
    """One way to load and decode: quantization, dtype and which CPU speed-ups are on."""

    name: str
    quantization: str | None = "4bit"
    torch_dtype: str = "bfloat16"
    engine_cache: bool = (
        True  # the in-place KV cache (hermes_core.engines.local.kv_cache) vs transformers' DynamicCache
    )
    grouped_decode_attention: bool = True
    prepack_linear: bool = True
    direct_4bit_kernel: bool = True
    lean_decode: bool = True


ALL_ON = Variant("nf4 all on")
ALL_OFF = replace(
    ALL_ON,
    name="nf4 all off",
    engine_cache=False,
    grouped_decode_attention=False,
    prepack_linear=False,
    direct_4bit_kernel=False,
    lean_decode=False,
)
VARIANTS = [
    ALL_ON,
    replace(ALL_ON, name="- in-place KV", engine_cache=False),
    replace(ALL_ON, name="- folded GQA", grouped_decode_attention=False),
    replace(ALL_ON, name="- prepacked", prepack_linear=False),
    replace(ALL_ON, name="- direct 4bit", direct_4bit_kernel=False),
    replace(ALL_ON, name="- lean step", lean_decode=False),
    ALL_OFF,
    replace(ALL_ON, name="int4 all on", quantization="int4"),
    replace(ALL_ON, name="bf16 all on", quantization=None),
    replace(ALL_OFF, name="bf16 all off", quantization=None),
]


@dataclass
class Samples:
    """tok/s per round at each context length."""

    short: list[float] = field(default_factory=list)
    long: list[float] = field(default_factory=list)


def load_variant(variant: Variant) -> Any:
    """The embedded model loaded as ``variant`` says (a ``LoadedModel``)."""
    switches = {name: getattr(variant, name) for name in SPEEDUP_OPTIONS}
    # int4 re-quantises the GGUF's float32 weights (see quantization.int4_load_dtype), the rest ends bf16.
    dtype = None if variant.quantization == "int4" else variant.torch_dtype
    return load_embedded(variant.quantization, dtype, **switches)


def engine_decode(loaded: Any, variant: Variant, prompt_ids: list[int], new_tokens: int) -> float:
    """Greedy decode tok/s of exactly ``new_tokens`` after ``prompt_ids``."""
    import torch

    from hermes_core.engines.local.engine import _cache_argument_name
    from hermes_core.engines.local.kv_cache import new_kv_cache

    ids = torch.tensor([prompt_ids])
    stamps = Timestamps()
    cache = new_kv_cache(loaded.model) if variant.engine_cache else None
    with torch.inference_mode():
        loaded.model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=loaded.tokenizer.pad_token_id,
            streamer=stamps,
            **{_cache_argument_name(): cache},
        )
    return stamps.decode_rate()


class LlamaCpp:
    """llama.cpp (llama-cpp-python) on the embedded GGUF, decoding greedily from token ids."""

    def __init__(self, threads: int) -> None:
        from llama_cpp import Llama

        from hermes_core.engines.local.loading import embedded_gguf_path

        self.llm = Llama(
            model_path=str(embedded_gguf_path()), n_ctx=4096, n_batch=2048, n_threads=threads, verbose=False
        )

    def tokens(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode(), add_bos=False, special=True)

    def decode(self, prompt_ids: list[int], new_tokens: int) -> float:
        """Greedy decode tok/s of ``new_tokens`` after ``prompt_ids`` (prefill excluded)."""
        import numpy as np

        llm = self.llm
        llm.reset()
        llm.eval(prompt_ids)
        token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        start = time.perf_counter()
        for _ in range(new_tokens - 1):
            llm.eval([token])
            token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        return (new_tokens - 1) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6, help="interleaved rounds (default 6)")
    parser.add_argument("--tokens", type=int, default=48, help="new tokens per decode run (default 48)")
    parser.add_argument("--threads", type=int, help="torch and llama.cpp threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the per-round run order")
    parser.add_argument(
        "--variants", help="comma-separated subset of: " + ", ".join(v.name for v in VARIANTS)
    )
    args = parser.parse_args()
    quiet_libraries()
    import torch

    from hermes_core import Message
    from hermes_core.engines.local.hermes_engine import HermesEngine

    if args.threads:
        torch.set_num_threads(args.threads)
    chosen = VARIANTS
    if args.variants:
        wanted = [name.strip() for name in args.variants.split(",")]
        chosen = [v for v in VARIANTS if v.name in wanted]
        if len(chosen) != len(wanted):
            parser.error(f"unknown variants in {wanted}")
    began = time.perf_counter()
    print(
        f"bench_decode: {args.tokens} tokens, {args.rounds} rounds, torch threads {torch.get_num_threads()}"
    )
    print(machine_summary())
    print(f"load average at start: {load_average()}", flush=True)

    models = {v.name: load_variant(v) for v in chosen}
    probe = HermesEngine(next(iter(models.values())), prefix_cache=False)
    prompts = {
        "short": probe._prepare([Message("user", STORY)]).prompt_ids,
        "long": probe._prepare([Message("user", STORY)], tools=TTFT_TOOLS).prompt_ids,
    }
    llama = None
    if importlib.util.find_spec("llama_cpp") is not None:
        llama = LlamaCpp(torch.get_num_threads())
        llama_prompts = {k: llama.tokens(probe.tokenizer.decode(ids)) for k, ids in prompts.items()}
    samples = {v.name: Samples() for v in chosen}
    reference = Samples()
    for variant in chosen:  # warm-up: first-call packing, allocator
        engine_decode(models[variant.name], variant, prompts["short"], 4)
    if llama is not None:
        llama.decode(llama_prompts["short"], 4)
    # Runners take turns in an order shuffled every round (seeded), so none always runs right after
    # another (llama.cpp's and OpenMP's threads spin for a while after work, which may slow whoever
    # runs next), and each run starts after a short pause for those threads to go idle.
    runners: list[tuple[str, Any]] = [
        (v.name, lambda ids, v=v: engine_decode(models[v.name], v, ids, args.tokens)) for v in chosen
    ]
    if llama is not None:
        runners.append(("llama.cpp", None))
    order = random.Random(args.seed)
    for round_index in range(args.rounds):
        order.shuffle(runners)
        for name, run in runners:
            for context in ("short", "long"):
                time.sleep(SETTLE_SECONDS)
                if run is None:
                    getattr(reference, context).append(llama.decode(llama_prompts[context], args.tokens))
                else:
                    getattr(samples[name], context).append(run(prompts[context]))
        print(f"  round {round_index + 1}/{args.rounds} done (load average {load_average()})", flush=True)

    print(
        f"\nDecode tok/s, medians of {args.rounds} interleaved rounds; prompts: short {len(prompts['short'])} "
        f"tokens, long {len(prompts['long'])} tokens ({len(TTFT_TOOLS)} tools)"
    )
    header = (
        f"{'variant':<15}{'short':>8}{'long':>8}{'vs llama.cpp short':>20}{'long':>7}"
        f"{'vs all off short':>18}{'long':>7}"
    )
    print(header)
    print("-" * len(header))
    off = samples.get(ALL_OFF.name)

    def per_round(ours: list[float], theirs: list[float] | None) -> str:
        if not theirs:
            return "-"
        return f"{statistics.median(a / b for a, b in zip(ours, theirs, strict=True)):.0%}"

    for variant in chosen:
        s = samples[variant.name]
        print(
            f"{variant.name:<15}{statistics.median(s.short):>8.1f}{statistics.median(s.long):>8.1f}"
            f"{per_round(s.short, reference.short if llama else None):>20}"
            f"{per_round(s.long, reference.long if llama else None):>7}"
            f"{per_round(s.short, off.short if off else None):>18}{per_round(s.long, off.long if off else None):>7}"
        )
    if llama is not None:
        print(
            f"{'llama.cpp':<15}{statistics.median(reference.short):>8.1f}{statistics.median(reference.long):>8.1f}"
            "   (Q4_1 GGUF, its own CPU kernels)"
        )
    else:
        print("llama.cpp: not installed (pip install llama-cpp-python; PyPI ships only a source build)")
    print(
        "'- X' = all on but X: in-place KV = hermes_core.engines.local.kv_cache, folded GQA = _cpu_attention,\n"
        "prepacked = _cpu_linear, direct 4bit = _cpu_4bit, lean step = _lean_decode;\n"
        "'all off' = plain transformers + bitsandbytes."
    )
    print(f"\ntotal {time.perf_counter() - began:.0f} s; load average at end: {load_average()}")


if __name__ == "__main__":
    main()
