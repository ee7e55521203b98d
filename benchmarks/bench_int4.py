"""One-row 4-bit matmuls at real model shapes: torch's int4 kernel against bitsandbytes NF4 and bf16.

Usage: ``.venv/bin/python benchmarks/bench_int4.py [--reps 200] [--threads 1]``

For the projection shapes of SmolLM2-135M, Llama-3.2-1B and Llama-3-8B (q/k/v joined, o, gate/up
joined, down), times one decode row (``x`` is 1 x K, bf16) through: ``quantization="int4"``'s kernel
(``cpu/int4_linear.Int4Group``), bitsandbytes' NF4 CPU kernel called directly as the engine does
(``cpu/direct_4bit``), and a bf16 ``nn.Linear`` prepacked for oneDNN (``cpu/prepacked_linear``).
Each kernel runs in turn, ``--reps`` calls a turn, 5 turns; the table shows the median per call in
process CPU time (all threads), which a shared machine's other jobs do not inflate as they do wall time.

``--prefill`` instead times prefill-sized calls (M rows) on the 135M shapes: the int4 kernel against
unpacking the weights to bf16 (with tensor operations, or with the compiled ``dequantize_int4`` of
``cpu/native_step.py``) plus a bf16 matmul, in wall-clock ms per call; where the unpacking wins decides
``int4_linear.DENSE_FROM_ROWS`` and ``DENSE_FROM_ROWS_NATIVE``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import load_average, machine_summary

# (model, projection, out features N, in features K); q/k/v and gate/up as the engine joins them.
SHAPES = [
    ("135M", "q+k+v", 576 + 2 * 192, 576),
    ("135M", "gate+up", 2 * 1536, 576),
    ("135M", "down", 576, 1536),
    ("1B", "q+k+v", 2048 + 2 * 512, 2048),
    ("1B", "gate+up", 2 * 8192, 2048),
    ("1B", "down", 2048, 8192),
    ("8B", "q+k+v", 4096 + 2 * 1024, 4096),
    ("8B", "gate+up", 2 * 14336, 4096),
    ("8B", "down", 4096, 14336),
]


def _nf4(weight: Any) -> Any:
    """A bitsandbytes NF4 layer of ``weight`` routed to its CPU kernel directly; None without bitsandbytes."""
    try:
        import bitsandbytes as bnb
    except ImportError:
        return None
    import torch

    from hermes_core.engines.local.cpu.direct_4bit import DirectKernelGroup

    out_features, in_features = weight.shape
    layer = bnb.nn.Linear4bit(
        in_features, out_features, bias=False, compute_dtype=torch.bfloat16, quant_type="nf4"
    )
    layer.weight = bnb.nn.Params4bit(weight.to(torch.bfloat16), requires_grad=False, quant_type="nf4")
    layer = layer.to("cpu")
    group = DirectKernelGroup([layer])
    group.run_all(torch.zeros(1, in_features, dtype=torch.bfloat16))  # packs the weights
    return group if group.direct else None


def _per_call(run: Any, x: Any, reps: int) -> float:
    start = time.process_time()
    for _ in range(reps):
        run(x)
    return (time.process_time() - start) / reps * 1e6


def prefill_crossover(rows: list[int], reps: int) -> None:
    """ms per call of the int4 kernel and of unpack + bf16 matmul, per 135M shape and row count."""
    import torch

    from hermes_core.engines.local.cpu.int4_linear import Int4Group
    from hermes_core.engines.local.cpu.native_step import extension

    if extension(wait=True) is None:
        print("the compiled module is not available: only the tensor-operation unpacking is timed")

    def per_call(run: Any) -> float:
        run()
        started = time.perf_counter()
        for _ in range(reps):
            run()
        return (time.perf_counter() - started) / reps * 1e3

    print(f"\n{'layer':<9}{'N x K':>11}{'rows':>6}{'int4 ms':>9}{'unpack ms':>11}{'compiled ms':>13}")
    for model, name, n, k in SHAPES:
        if model != "135M":
            continue
        python = Int4Group([torch.randn(n, k) * 0.02], [None], native=False)
        compiled = Int4Group([torch.randn(n, k) * 0.02], [None], native=True)
        for count in rows:
            x = torch.randn(count, k, dtype=torch.bfloat16)
            with torch.inference_mode():
                kernel = per_call(
                    lambda x=x, g=python: torch.ops.aten._weight_int4pack_mm_for_cpu(
                        x, g.packed, 32, g.scales_and_zeros
                    )
                )
                unpack = per_call(lambda x=x, g=python: torch.nn.functional.linear(x, g.dense_weight()))
                native = per_call(lambda x=x, g=compiled: torch.nn.functional.linear(x, g.dense_weight()))
            print(f"{name:<9}{f'{n}x{k}':>11}{count:>6}{kernel:>9.2f}{unpack:>11.2f}{native:>13.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--models", default="135M,1B,8B")
    parser.add_argument("--prefill", action="store_true", help="prefill-sized calls instead (see above)")
    args = parser.parse_args()
    import torch

    if args.prefill:
        torch.set_num_threads(max(args.threads, 2))
        print(machine_summary())
        print(f"load average at start: {load_average()}; torch threads {torch.get_num_threads()}")
        prefill_crossover([1, 8, 16, 48, 96, 192, 384, 512], max(args.reps // 10, 10))
        print(f"load average at end: {load_average()}")
        return

    from hermes_core.engines.local.cpu.int4_linear import Int4Group
    from hermes_core.engines.local.cpu.prepacked_linear import prepack_cpu_linears

    torch.set_num_threads(args.threads)
    print(machine_summary())
    print(f"load average at start: {load_average()}; torch threads {torch.get_num_threads()}")
    print(
        f"\n{'model':<6}{'layer':<9}{'N x K':>13}{'int4 µs':>10}{'NF4 µs':>9}{'bf16 µs':>9}{'int4/NF4':>10}"
    )
    wanted = set(args.models.split(","))
    for model, name, n, k in SHAPES:
        if model not in wanted:
            continue
        weight = torch.randn(n, k) * 0.02
        x = torch.randn(1, k, dtype=torch.bfloat16)
        runners = {"int4": Int4Group([weight], [None]).run_joined}
        nf4 = _nf4(weight)
        if nf4 is not None:
            runners["nf4"] = nf4.run_joined
        dense = torch.nn.Linear(k, n, bias=False, dtype=torch.bfloat16)
        dense.weight.data = weight.to(torch.bfloat16)
        prepack_cpu_linears(torch.nn.Sequential(dense), release_dense=True)
        runners["bf16"] = dense
        with torch.inference_mode():
            for run in runners.values():
                run(x)
            times: dict[str, list[float]] = {key: [] for key in runners}
            for _ in range(5):
                for key, run in runners.items():
                    times[key].append(_per_call(run, x, args.reps))
        med = {key: statistics.median(values) for key, values in times.items()}
        nf4_text = f"{med['nf4']:>9.0f}" if "nf4" in med else f"{'-':>9}"
        ratio = f"{med['int4'] / med['nf4']:>10.2f}" if "nf4" in med else f"{'-':>10}"
        print(f"{model:<6}{name:<9}{f'{n}x{k}':>13}{med['int4']:>10.0f}{nf4_text}{med['bf16']:>9.0f}{ratio}")
        del runners, dense, nf4
    print(f"load average at end: {load_average()}")


if __name__ == "__main__":
    main()
