"""Decode at real model shapes with random weights: Llama-3.2-1B and a few layers of Llama-3-8B.

Usage: ``.venv/bin/python benchmarks/bench_real_sizes.py [--sizes 1B,8B-2L] [--rounds 3] [--tokens 16]``

No weights can be downloaded here, so each model is built from its published shape (hidden size,
layers, heads, vocabulary) with random weights; speed and memory depend on the shapes, not the values.
For each size three copies are measured one after another (each built, run, freed): bare transformers in bf16, this
engine's CPU speed-ups in bf16 (prepacked linears, folded GQA attention, lean decode step), and
``quantization="int4"`` with the speed-ups. Decode tok/s is greedy generation of ``--tokens`` after a
32-token prompt, timed from the first to the last new token (wall, and process CPU time per token);
memory is each copy's weight bytes (parameters, buffers, prepacked copies), and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import gc
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import load_average, machine_summary

# Published shapes (config.json of meta-llama/Llama-3.2-1B and Meta-Llama-3-8B); "8B-2L" keeps 2 of 32 layers.
SHAPES: dict[str, dict[str, Any]] = {
    "1B": {
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 64,
        "vocab_size": 128256,
        "tie_word_embeddings": True,
        "rope_theta": 500000.0,
    },
    "8B-2L": {
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 2,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "vocab_size": 128256,
        "tie_word_embeddings": False,
        "rope_theta": 500000.0,
    },
}


def build(shape: dict[str, Any], variant: str) -> Any:
    """A random Llama of ``shape`` in bf16, with this engine's speed-ups / int4 as ``variant`` says."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from hermes_core.engines.local.cpu.folded_attention import use_grouped_decode_attention
    from hermes_core.engines.local.cpu.int4_linear import quantize_linears_int4
    from hermes_core.engines.local.cpu.lean_decode import use_lean_decode_layers
    from hermes_core.engines.local.cpu.prepacked_linear import prepack_cpu_linears

    torch.manual_seed(0)
    config = LlamaConfig(**shape, max_position_embeddings=4096, attn_implementation="sdpa")
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # built in bf16 directly: no float32 copy of 8B-sized layers
    try:
        model = LlamaForCausalLM(config).eval().requires_grad_(False)
    finally:
        torch.set_default_dtype(default)
    if variant == "int4":
        quantize_linears_int4(model)
    if variant != "transformers":
        use_grouped_decode_attention(model)
        prepack_cpu_linears(model, release_dense=True)
        use_lean_decode_layers(model)
    return model


def weight_bytes(model: Any) -> int:
    from hermes_core.engines.local.cpu.prepacked_linear import prepacked_bytes

    return int(model.get_memory_footprint()) + prepacked_bytes(model)


def decode(model: Any, tokens: int, engine_cache: bool) -> tuple[float, float]:
    """(wall tok/s, CPU tok/s) of greedy decode of ``tokens`` after a fixed 32-token prompt."""
    import torch

    from hermes_core.engines.local.engine import _cache_argument_name
    from hermes_core.engines.local.kv_cache import new_kv_cache

    prompt = torch.arange(100, 132).unsqueeze(0)
    times: list[float] = []
    cpu: list[float] = []

    class Stamps:
        seen = False

        def put(self, value: Any) -> None:
            if not self.seen:
                self.seen = True
                return
            times.append(time.perf_counter())
            cpu.append(time.process_time())

        def end(self) -> None:
            pass

    cache = new_kv_cache(model) if engine_cache else None
    with torch.inference_mode():
        model.generate(
            prompt,
            attention_mask=torch.ones_like(prompt),
            max_new_tokens=tokens,
            min_new_tokens=tokens,
            do_sample=False,
            pad_token_id=0,
            streamer=Stamps(),
            **{_cache_argument_name(): cache},
        )
    steps = len(times) - 1
    return steps / (times[-1] - times[0]), steps / (cpu[-1] - cpu[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1B,8B-2L")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()
    import warnings

    warnings.filterwarnings("ignore")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    # Random weights drive the activations of deep stacks into denormal range, where the CPU's slow
    # path made 1B-shaped bf16 decode 3-10x slower than with the same weights' step on normal values.
    torch.set_flush_denormal(True)
    print(machine_summary())
    print(f"load average at start: {load_average()}; torch threads {torch.get_num_threads()}", flush=True)
    rows = []
    for size in args.sizes.split(","):
        for variant in ("transformers", "engine bf16", "int4"):
            model = build(SHAPES[size], variant)
            decode(model, 3, variant != "transformers")  # warm-up
            samples = [decode(model, args.tokens, variant != "transformers") for _ in range(args.rounds)]
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
            wall = statistics.median(s[0] for s in samples)
            cpu = statistics.median(s[1] for s in samples)
            rows.append((size, variant, wall, cpu, weight_bytes(model) / 2**30, peak))
            print(f"  {size} {variant}: {wall:.2f} tok/s (load average {load_average()})", flush=True)
            del model
            gc.collect()
    print(f"\ngreedy decode of {args.tokens} tokens after 32, medians of {args.rounds} runs")
    print(
        f"{'shape':<7}{'variant':<14}{'tok/s wall':>11}{'tok/s CPU':>11}{'weights GiB':>13}{'peak RSS GiB':>14}"
    )
    for size, variant, wall, cpu, weights, peak in rows:
        print(f"{size:<7}{variant:<14}{wall:>11.2f}{cpu:>11.2f}{weights:>13.2f}{peak:>14.2f}")
    print("peak RSS is the process's so far (the copies measured before count too)")
    print(f"load average at end: {load_average()}")


if __name__ == "__main__":
    main()
