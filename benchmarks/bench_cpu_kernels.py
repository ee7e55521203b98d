"""The kernel-level figures behind the engine's CPU decode speed-ups, on the embedded model's shapes.

Usage: ``.venv/bin/python benchmarks/bench_cpu_kernels.py [--repeats 7]``

Prints, for one decode step's worth of calls (medians of interleaved repeats, microseconds per call):
1. one-token attention in bf16 (9 query heads, 3 key/value heads of 64, 30 layers' worth of distinct
   KV so caches behave as in the model): torch's ``enable_gqa`` kernel, which transformers calls, vs
   the folded layout of ``hermes_core.engines.local.cpu.folded_attention``, at several cached lengths;
2. one-row bf16 linears of the model's shapes: ``F.linear`` vs the prepacked oneDNN weight of
   ``hermes_core.engines.local.cpu.prepacked_linear`` (and whether the outputs are bit-identical);
3. the embedded model's NF4 projections of one layer: bitsandbytes' own forward vs the direct kernel
   of ``hermes_core.engines.local.cpu.direct_4bit``, both called as the model calls them (q, k, v then gate, up).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import load_average, machine_summary
from bench_engine import quiet_libraries

HEADS, KV_HEADS, HEAD_DIM, LAYERS = 9, 3, 64, 30
LINEAR_SHAPES = {
    "q/k/v fused": (960, 576),
    "o_proj": (576, 576),
    "gate/up fused": (3072, 576),
    "down_proj": (576, 1536),
    "output layer": (49152, 576),
}


def per_call_us(fn: Callable[[], Any], calls: int) -> float:
    """Microseconds per call of ``fn`` over ``calls`` calls (after one warm-up call)."""
    fn()
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) / calls * 1e6


def interleaved(candidates: dict[str, Callable[[], Any]], calls: int, repeats: int) -> dict[str, float]:
    """Median microseconds per call of each candidate, measured in alternating order."""
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    names = list(candidates)
    for index in range(repeats):
        for name in names if index % 2 == 0 else names[::-1]:
            samples[name].append(per_call_us(candidates[name], calls))
    return {name: statistics.median(values) for name, values in samples.items()}


def attention_rows(repeats: int) -> list[str]:
    import torch
    import torch.nn.functional as F

    rows = []
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(1, HEADS, 1, HEAD_DIM, generator=generator).to(torch.bfloat16)
    folded = query.reshape(1, KV_HEADS, HEADS // KV_HEADS, HEAD_DIM)
    for length in (100, 400, 1600):
        caches = [
            tuple(
                torch.randn(1, KV_HEADS, length, HEAD_DIM, generator=generator).to(torch.bfloat16)
                for _ in "kv"
            )
            for _ in range(LAYERS)
        ]

        def gqa(caches: list[Any] = caches) -> None:
            for key, value in caches:
                F.scaled_dot_product_attention(query, key, value, scale=0.125, enable_gqa=True)

        def fold(caches: list[Any] = caches) -> None:
            for key, value in caches:
                F.scaled_dot_product_attention(folded, key, value, scale=0.125)

        with torch.inference_mode():
            times = interleaved({"gqa": gqa, "folded": fold}, calls=10, repeats=repeats)
        gqa_us, fold_us = times["gqa"] / LAYERS, times["folded"] / LAYERS
        rows.append(f"{length:>8}{gqa_us:>14.0f}{fold_us:>12.0f}{gqa_us / fold_us:>9.1f}x")
    return rows


def linear_rows(repeats: int) -> list[str]:
    import torch

    rows = []
    generator = torch.Generator().manual_seed(1)
    for label, (out_features, in_features) in LINEAR_SHAPES.items():
        weight = (torch.randn(out_features, in_features, generator=generator) * 0.02).to(torch.bfloat16)
        x = torch.randn(1, 1, in_features, generator=generator).to(torch.bfloat16)
        packed = torch.ops.mkldnn._reorder_linear_weight(weight, None)

        def plain(weight: Any = weight, x: Any = x) -> Any:
            return torch.nn.functional.linear(x, weight)

        def prepacked(packed: Any = packed, x: Any = x) -> Any:
            return torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")

        with torch.inference_mode():
            calls = 20 if out_features > 10_000 else 400
            times = interleaved({"plain": plain, "packed": prepacked}, calls=calls, repeats=repeats)
            same = torch.equal(plain(), prepacked())
        rows.append(
            f"{label:<15}{out_features:>6} x {in_features:<5}{times['plain']:>10.0f}{times['packed']:>10.0f}"
            f"{times['plain'] / times['packed']:>9.2f}x{'yes' if same else 'NO':>6}"
        )
    return rows


def four_bit_rows(repeats: int) -> list[str]:
    import torch

    from hermes_core.engines.local.loading import load_model

    models = {
        direct: load_model(
            None, quantization="4bit", torch_dtype="bfloat16", progress=False, direct_4bit_kernel=direct
        )
        for direct in (False, True)
    }
    if not models[True].direct_4bit_layers:
        return ["(no direct kernel on this CPU: bitsandbytes has no AVX512-BF16 kernel here)"]
    rows = []
    x = torch.randn(1, 1, 576, generator=torch.Generator().manual_seed(2)).to(torch.bfloat16)
    with torch.inference_mode():
        for loaded in models.values():
            loaded.model(torch.tensor([[1, 2, 3]]))  # first call packs (and fuses) the weights
        for label, names in (
            ("q, k, v", ("q_proj", "k_proj", "v_proj")),
            ("gate, up", ("gate_proj", "up_proj")),
        ):
            calls = {}
            for direct, loaded in models.items():
                layer = loaded.model.model.layers[0]
                owner = layer.self_attn if names[0] == "q_proj" else layer.mlp
                modules = [getattr(owner, name) for name in names]

                def run(modules: list[Any] = modules) -> None:
                    for module in modules:
                        module(x)

                calls["direct" if direct else "bitsandbytes"] = run
            times = interleaved(calls, calls=400, repeats=repeats)
            rows.append(
                f"{label:<15}{times['bitsandbytes']:>14.0f}{times['direct']:>10.0f}"
                f"{times['bitsandbytes'] / times['direct']:>9.2f}x"
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="interleaved repeats per figure (default 7)")
    args = parser.parse_args()
    quiet_libraries()
    import torch

    print(f"bench_cpu_kernels: {args.repeats} interleaved repeats, torch threads {torch.get_num_threads()}")
    print(machine_summary())
    print(f"load average at start: {load_average()}\n")
    print("1. One-token attention, bf16, 9 query / 3 KV heads of 64 (us per layer)")
    print(f"{'KV len':>8}{'enable_gqa':>14}{'folded':>12}{'gain':>10}")
    print("\n".join(attention_rows(args.repeats)))
    print("\n2. One-row bf16 linear (us per call); same = bit-identical outputs")
    print(f"{'layer':<15}{'shape':>14}{'F.linear':>10}{'packed':>10}{'gain':>10}{'same':>6}")
    print("\n".join(linear_rows(args.repeats)))
    print("\n3. NF4 projections of one layer of the embedded model, as the model calls them (us per group)")
    print(f"{'group':<15}{'bitsandbytes':>14}{'direct':>10}{'gain':>10}")
    print("\n".join(four_bit_rows(args.repeats)))
    print(f"\nload average at end: {load_average()}")


if __name__ == "__main__":
    main()
