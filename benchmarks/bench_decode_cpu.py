"""Decode and prefill in process CPU time, for a machine too loaded for wall-clock figures.

Usage: ``.venv/bin/python benchmarks/bench_decode_cpu.py [--threads 1] [--rounds 4] [--variants ...]``

Loads the embedded model as each ``bench_decode`` variant (default: NF4, int4 and bf16, every speed-up
on) and, in interleaved rounds, runs greedy generation of 33 tokens and of 1 token after the short
story prompt and the 1,595-token tools prompt. Decode tok/s = 32 / (CPU time of the 33-token run minus
the 1-token run); prefill = CPU time of the 1-token run. On one thread CPU time is the work done (no
OpenMP spinning in it), so other jobs on the machine change it far less than wall time.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import load_average
from bench_decode import VARIANTS, load_variant
from bench_engine import STORY, TTFT_TOOLS, quiet_libraries

NEW_TOKENS = 33


def timed_generate(loaded: Any, ids: list[int], new_tokens: int) -> tuple[float, float]:
    """(process CPU s, wall s) of greedy generation of exactly ``new_tokens`` after ``ids``."""
    import torch

    from hermes_core.engines.local.engine import _cache_argument_name
    from hermes_core.engines.local.kv_cache import new_kv_cache

    prompt = torch.tensor([ids])
    cpu, wall = time.process_time(), time.perf_counter()
    with torch.inference_mode():
        loaded.model.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=loaded.tokenizer.pad_token_id,
            **{_cache_argument_name(): new_kv_cache(loaded.model)},
        )
    return time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--variants", default="nf4 all on,int4 all on,bf16 all on")
    args = parser.parse_args()
    quiet_libraries()
    import torch

    from hermes_core import Message
    from hermes_core.engines.local.hermes_engine import HermesEngine

    torch.set_num_threads(args.threads)
    by_name = {variant.name: variant for variant in VARIANTS}
    names = [name.strip() for name in args.variants.split(",")]
    print(f"load average at start: {load_average()}; torch threads {torch.get_num_threads()}", flush=True)
    models = {name: load_variant(by_name[name]) for name in names}
    probe = HermesEngine(models[names[0]], prefix_cache=False)
    prompts = {
        "short": probe._prepare([Message("user", STORY)]).prompt_ids,
        "long": probe._prepare([Message("user", STORY)], tools=TTFT_TOOLS).prompt_ids,
    }
    for name in names:  # warm-up: first-call packing, allocator
        timed_generate(models[name], prompts["short"], 3)
    samples: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    order = list(names)
    for round_index in range(args.rounds):
        random.Random(round_index).shuffle(order)
        for name in order:
            for context, ids in prompts.items():
                cpu_one, wall_one = timed_generate(models[name], ids, 1)
                cpu_all, wall_all = timed_generate(models[name], ids, NEW_TOKENS)
                rates = ((NEW_TOKENS - 1) / (cpu_all - cpu_one), (NEW_TOKENS - 1) / (wall_all - wall_one))
                samples.setdefault((name, context), []).append((*rates, cpu_one))
        print(f"  round {round_index + 1}/{args.rounds} (load average {load_average()})", flush=True)
    print(f"\n{'variant':<14}{'prompt':<7}{'decode tok/s cpu':>17}{'wall':>8}{'prefill cpu s':>15}")
    for (name, context), values in samples.items():
        cpu, wall, prefill = (statistics.median(v[i] for v in values) for i in range(3))
        print(f"{name:<14}{context:<7}{cpu:>17.1f}{wall:>8.1f}{prefill:>15.2f}")
    print(f"load average at end: {load_average()}")


if __name__ == "__main__":
    main()
