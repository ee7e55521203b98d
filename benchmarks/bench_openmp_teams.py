"""What a second live OpenMP thread team costs the decode step, and what loading on an ending thread saves.

Run: ``.venv/bin/python benchmarks/bench_openmp_teams.py [--rounds 3] [--tokens 64]``. Each case runs in a
fresh interpreter, so no OpenMP team carries over from one case to the next:

- ``kernel``: microseconds of one 3072x576 int4 matmul (a decode step's gate/up call, one row) run on
  the main thread; on a new thread while the main thread's team is alive; on a new thread when no other
  team is alive.
- ``engine``: decode tokens/s of the embedded model on its defaults, through the scheduler (the path
  every request takes), after ``load_engine`` (which now loads on a thread that ends, see
  ``hermes_core/engines/local/cpu/threads.py``), once as is and once after the main thread ran one
  parallel torch op itself, which is what loading on the caller's thread used to leave behind.

Cases alternate round by round; the medians are printed with the load average.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import load_average, machine_summary

KERNEL_CASES = ("main thread", "new thread, main team alive", "new thread, no other team")
ENGINE_CASES = ("loaded as load_engine does", "plus a parallel op on the main thread")


def kernel_case(case: str) -> float:
    """Microseconds per int4 matmul in ``case`` (runs in this interpreter, which must be fresh)."""
    import threading
    import time

    import torch

    from hermes_core.engines.local.cpu.int4_linear import quantize_rows

    def setup_and_time() -> float:
        codes, scale, low = quantize_rows(torch.randn(3072, 576))
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1)
        zeros = torch.stack([scale.t(), (low + 8 * scale).t()], dim=-1).to(torch.bfloat16)
        x = torch.randn(1, 576, dtype=torch.bfloat16)
        for _ in range(100):
            torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed, 32, zeros)
        started = time.perf_counter()
        for _ in range(2000):
            torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed, 32, zeros)
        return (time.perf_counter() - started) / 2000 * 1e6

    if case == KERNEL_CASES[0]:
        return setup_and_time()
    if case == KERNEL_CASES[1]:
        torch.randn(1024, 1024) @ torch.randn(1024, 1024)  # the main thread's team, alive from here on
    result: list[float] = []
    thread = threading.Thread(target=lambda: result.append(setup_and_time()))
    thread.start()
    thread.join()
    return result[0]


def engine_case(case: str, tokens: int) -> float:
    """Decode tokens/s of one greedy request on the embedded defaults, in ``case``."""
    from bench_decode import Row, engine_speed, load_row
    from bench_engine import STORY

    from hermes_core import Message

    engine = load_row(Row("default"))
    if case == ENGINE_CASES[1]:
        import torch

        torch.randn(1024, 1024) @ torch.randn(1024, 1024)
    request = engine._prepare([Message("user", STORY)]).request
    engine_speed(engine, request, 8)  # warm-up
    return statistics.median(engine_speed(engine, request, tokens).decode for _ in range(3))


def in_fresh_interpreter(kind: str, case: str, tokens: int) -> float:
    """Run one case in a new Python process and return its figure."""
    code = (
        "import sys, json; sys.path.insert(0, 'benchmarks'); import bench_openmp_teams as b; "
        f"print(json.dumps(b.{kind}_case({case!r}{', ' + str(tokens) if kind == 'engine' else ''})))"
    )
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    return float(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    print(machine_summary())
    print(f"load average at start: {load_average()}")
    figures: dict[str, list[float]] = {case: [] for case in (*KERNEL_CASES, *ENGINE_CASES)}
    for _ in range(args.rounds):
        for case in KERNEL_CASES:
            figures[case].append(in_fresh_interpreter("kernel", case, args.tokens))
        for case in ENGINE_CASES:
            figures[case].append(in_fresh_interpreter("engine", case, args.tokens))
    print("\nint4 matmul 3072x576, one row (us, median)")
    for case in KERNEL_CASES:
        print(f"  {case:<40} {statistics.median(figures[case]):7.1f}")
    print(f"\nembedded model, defaults, decode tokens/s after a short prompt (median, {args.tokens} tokens)")
    for case in ENGINE_CASES:
        print(f"  {case:<40} {statistics.median(figures[case]):7.1f}")
    print(f"\nload average at end: {load_average()}")


if __name__ == "__main__":
    main()
