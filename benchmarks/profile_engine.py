"""Where prefill and decode time goes on the embedded model: bare prefill vs engine TTFT, and op profiles.

Run: ``.venv/bin/python benchmarks/profile_engine.py [--repeats 4]``. Prints (1) a bare one-pass
``model(input_ids)`` over the bench_engine TTFT prompt against the engine's cold time to first token
on the same prompt, interleaved, for bf16 and fp32; (2) the top ops of one bf16 prefill of that
prompt, and (2b) of the engine's prefill of it on the default load, in its pieces; (3) the top ops of 16 decode steps of the default load (int4 on CPUs with native bf16) as the
engine makes them, with the op time and the number of ops per step. It explains the figures of
``bench_engine.py``; it does not replace them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_engine import ASK_COLD, TTFT_TOOLS


def prefill_vs_ttft(dtype: str, repeats: int) -> tuple[int, float, float]:
    """(prompt tokens, bare prefill s, engine cold TTFT s) medians for ``dtype``."""
    import torch

    from hermes_core import Message, load_engine

    engine = load_engine(torch_dtype=dtype, progress=False, prefix_cache=False)
    messages = [Message("user", ASK_COLD)]
    options = {"tools": TTFT_TOOLS, "tool_choice": "required", "max_new_tokens": 1}
    ids = torch.tensor([engine._prepare(messages, tools=TTFT_TOOLS).prompt_ids])
    engine.generate(messages, **options)  # warm-up: grammar compile, first-call allocations
    bare, ttft = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        with torch.inference_mode():
            engine.model(ids, logits_to_keep=1)
        bare.append(time.perf_counter() - start)
        start = time.perf_counter()
        engine.generate(messages, **options)
        ttft.append(time.perf_counter() - start)
    return ids.shape[1], statistics.median(bare), statistics.median(ttft)


def top_ops(run: Any, rows: int = 8) -> tuple[str, float]:
    """The profiler table of ``run()`` and its total op (self CPU) time in ms."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    averages = prof.key_averages()
    total_ms = sum(event.self_cpu_time_total for event in averages) / 1000
    return averages.table(sort_by="self_cpu_time_total", row_limit=rows), total_ms


def prefill_profile() -> str:
    """Top ops of one bf16 prefill of the TTFT prompt."""
    import torch

    from hermes_core import Message, load_engine

    engine = load_engine(torch_dtype="bfloat16", progress=False)
    ids = torch.tensor([engine._prepare([Message("user", ASK_COLD)], tools=TTFT_TOOLS).prompt_ids])

    def run() -> None:
        with torch.inference_mode():
            engine.model(ids, logits_to_keep=1)

    run()
    table, total = top_ops(run)
    return f"bf16 prefill of {ids.shape[1]} tokens, op time {total:.0f} ms\n{table}"


def default_prefill_profile() -> str:
    """Top ops of the engine's prefill of the TTFT prompt on the default load, cut into pieces as it cuts it."""
    import torch

    from hermes_core import Message, load_engine

    engine = load_engine(prefix_cache=False, progress=False)
    request = engine._prepare([Message("user", ASK_COLD)], tools=TTFT_TOOLS).request
    local = engine.engine

    def run() -> None:
        with torch.inference_mode():
            local._prefill_prompt(request)

    run()
    start = time.perf_counter()
    run()
    wall = time.perf_counter() - start
    table, total = top_ops(run)
    return (
        f"default load ({local.loaded.weights_summary()}) prefill of {len(request.prompt_ids)} tokens in the "
        f"engine's pieces: wall {wall * 1000:.0f} ms, op time {total:.0f} ms\n{table}"
    )


def decode_profile(steps: int = 16) -> str:
    """Top ops of ``steps`` greedy decode steps of the default load, made as the engine makes them."""
    import torch

    from hermes_core.engines.base import GenerationRequest
    from hermes_core.engines.local.engine import LocalEngine
    from hermes_core.engines.local.loading import load_model

    loaded = load_model(None, progress=False)
    engine = LocalEngine(loaded, prefix_cache=False)
    ids = loaded.tokenizer("Once upon a time there was a little robot who").input_ids
    cache, _, logits, _ = engine._prefill_prompt(GenerationRequest(prompt_ids=ids, max_new_tokens=steps))
    token = int(logits.argmax())

    def run() -> None:
        nonlocal token
        for _ in range(steps):  # the engine's one-token call for a lone request, then greedy choice
            token = int(torch.argmax(engine._row_logits([token], cache), dim=-1)[0])

    start = time.perf_counter()
    run()
    wall = (time.perf_counter() - start) / steps * 1000
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run()
    averages = prof.key_averages()
    total = sum(event.self_cpu_time_total for event in averages) / 1000
    ops = sum(event.count for event in averages) / steps
    table = averages.table(sort_by="self_cpu_time_total", row_limit=8)
    return (
        f"default load ({loaded.weights_summary()}) decode, {steps} steps: wall {wall:.1f} ms/step, "
        f"op time {total / steps:.1f} ms/step, {ops:.0f} profiled ops/step (the rest is Python between ops)\n"
        f"{table}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=4)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    print(f"load average at start: {os.getloadavg()}")
    print("1. bare one-pass prefill vs engine cold TTFT (same prompt, interleaved, medians)")
    for dtype in ("bfloat16", "float32"):
        tokens, bare, ttft = prefill_vs_ttft(dtype, args.repeats)
        print(
            f"{dtype:<9} {tokens} tokens  bare prefill {bare:.3f} s  engine TTFT {ttft:.3f} s  ({ttft / bare - 1:+.1%})"
        )
    print("\n2. " + prefill_profile())
    print("\n2b. " + default_prefill_profile())
    print("\n3. " + decode_profile())
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
