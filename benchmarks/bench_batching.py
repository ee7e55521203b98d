"""Aggregate decode throughput of concurrent requests: continuous batching against one request at a time.

Two engines over the same loaded embedded model: ``max_batch_size=16`` (batching) and
``max_batch_size=1`` (the serialised engine: requests wait and run one after another, as before
batching). For N = 1, 2, 4, 8, 16 concurrent requests, on short prompts and on the ~1,600-token
tools prompt, both engines run the same N requests, interleaved in one process (A, B, A, B ...), and
the script reports aggregate generated tokens per second (from the first submission to the last
answer), each request's time to first token and the p95 request latency, then batched/serialised
ratios. Every request decodes exactly ``--tokens`` tokens (its stop tokens are ignored), greedy.
First, the step alone: one decode step over B rows against one lone step, at a short and a
1,600-token context, with each row's own cache and with the context held once as a shared prefix
(cascade attention), which is what batching buys with no prefill or scheduling around it.

    python benchmarks/bench_batching.py [--tokens 32] [--rounds 2] [--sizes 1,2,4,8,16] [--threads 1] [--steps-only]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REALISTIC_TOOLS, load_average, machine_summary

from hermes_core import Message, load_engine
from hermes_core.engines.base import GenerationRequest
from hermes_core.engines.local.scheduler import Submission

TOOLS = REALISTIC_TOOLS[:10]  # about 1,600 prompt tokens, as in bench_engine.py


def _requests(engine: Any, count: int, tools: list[Any] | None, tokens: int) -> list[GenerationRequest]:
    """``count`` distinct questions rendered by the frontend; no stop token, so each decodes ``tokens``."""
    out = []
    for i in range(count):
        ask = [Message("user", f"Question {i}: what is the weather like in city number {i} today?")]
        request = engine._prepare(ask, tools=tools, constrained=False, max_new_tokens=tokens).request
        out.append(dataclasses.replace(request, stop_token_ids=[-1], stop_strings=[], max_new_tokens=tokens))
    return out


def _run(engine: Any, requests: list[GenerationRequest]) -> dict[str, float]:
    """Submit all ``requests`` at once; aggregate tokens/s, median and max TTFT, p95 latency."""
    local = engine.engine
    first: dict[int, float] = {}
    ends: dict[int, float] = {}
    submissions = []
    start = time.perf_counter()
    for index, request in enumerate(requests):
        request = dataclasses.replace(request, cancel=threading.Event())

        def on_token(token: int, index: int = index) -> None:
            first.setdefault(index, time.perf_counter())

        def on_finish(index: int = index) -> None:
            ends[index] = time.perf_counter()

        submission = Submission(request, on_token, on_finish=on_finish)
        submissions.append(submission)
        local.scheduler.submit(submission)
    for submission in submissions:
        submission.done.wait()
        if submission.error is not None:
            raise submission.error
    wall = max(ends.values()) - start
    generated = sum(len(s.final.token_ids) for s in submissions)
    ttft = sorted(first[i] - start for i in range(len(requests)))
    latency = sorted(ends[i] - start for i in range(len(requests)))
    p95 = latency[min(len(latency) - 1, round(0.95 * (len(latency) - 1)))]
    return {
        "tok_s": generated / wall,
        "ttft_median": statistics.median(ttft),
        "ttft_max": ttft[-1],
        "p95": p95,
    }


def step_ratios(engine: Any, sizes: list[int], context: int, repeats: int) -> None:
    """Time of one decode step over B rows against one lone step, interleaved: tokens/s gained by batching."""
    import torch

    from hermes_core.engines.local.batch_step import LlamaBatchStep, single_row_logits
    from hermes_core.engines.local.kv_cache import new_kv_cache
    from hermes_core.engines.local.shared_prefix import SharedPrefix, suffix_cache

    model = engine.model
    step = LlamaBatchStep.for_model(model)
    if step is None:
        print("no batched step for this model (row-by-row only)")
        return
    prompt = [100 + i % 1000 for i in range(context)]

    def caches(count: int) -> list[Any]:
        made = [new_kv_cache(model) for _ in range(count)]
        for cache in made:
            single_row_logits(model, "cache", prompt, cache)
        return made

    print(f"\n## one decode step, {context}-token context, load {load_average()}")
    print(
        "| rows | lone step ms | batched step ms (own caches) | tokens/s against one row | "
        "batched step ms (shared prefix) | tokens/s against one row |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    with torch.inference_mode():
        common = caches(1)[0]
        prefix = SharedPrefix.from_cache(common, prompt)
        for size in sizes:
            rows, lone = caches(size), caches(1)[0]
            own = []
            for i in range(size):  # the prompt by reference, then one token of each row's own
                whole = prefix.as_cache(model)
                single_row_logits(model, "cache", [7 + i], whole)
                own.append(suffix_cache(whole, context, model))
            lone_s, batched_s, shared_s = [], [], []
            for _ in range(repeats):
                start = time.perf_counter()
                single_row_logits(model, "cache", [5], lone)
                lone_s.append(time.perf_counter() - start)
                start = time.perf_counter()
                step([5] * size, rows)
                batched_s.append(time.perf_counter() - start)
                start = time.perf_counter()
                step([5] * size, own, [prefix] * size)
                shared_s.append(time.perf_counter() - start)
            lone_ms, batched_ms = statistics.median(lone_s) * 1e3, statistics.median(batched_s) * 1e3
            shared_ms = statistics.median(shared_s) * 1e3
            print(
                f"| {size} | {lone_ms:.1f} | {batched_ms:.1f} | {size * lone_ms / batched_ms:.2f}x | "
                f"{shared_ms:.1f} | {size * lone_ms / shared_ms:.2f}x |",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--sizes", default="1,2,4,8,16")
    parser.add_argument("--model", default=None, help="model path (default: the embedded SmolLM2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steady on a busy machine)")
    parser.add_argument("--steps-only", action="store_true", help="only the decode-step ratios")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    sizes = [int(size) for size in args.sizes.split(",")]

    batched = load_engine(args.model, max_batch_size=max(sizes))
    serial = load_engine(args.model, max_batch_size=1)
    assert batched.model is serial.model, "both engines share one loaded model"
    print(machine_summary())
    loaded = batched.loaded
    print(f"model dtype {batched.model.dtype}, quantization {getattr(loaded, 'quantization', None)}")
    for context in (40, 1600):
        step_ratios(batched, sizes, context, repeats=8)
    if args.steps_only:
        return
    for name, tools in (("short prompt", None), ("tools prompt", TOOLS)):
        prompt_tokens = len(_requests(batched, 1, tools, args.tokens)[0].prompt_ids)
        for engine in (batched, serial):  # warm up: load kernels, fill the prefix cache with the tools turn
            _run(engine, _requests(engine, 2, tools, 4))
        print(
            f"\n## {name} ({prompt_tokens} tokens), {args.tokens} new tokens per request, load {load_average()}"
        )
        print(
            "| N | batched tok/s | serialised tok/s | ratio | batched vs N=1 | TTFT median / max (batched) | "
            "TTFT median / max (serialised) | p95 latency batched / serialised |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        one = None
        for size in sizes:
            results: dict[str, list[dict[str, float]]] = {"batched": [], "serial": []}
            for _ in range(args.rounds):  # interleaved A/B
                results["batched"].append(_run(batched, _requests(batched, size, tools, args.tokens)))
                results["serial"].append(_run(serial, _requests(serial, size, tools, args.tokens)))
            b = {key: statistics.median(r[key] for r in results["batched"]) for key in results["batched"][0]}
            s = {key: statistics.median(r[key] for r in results["serial"]) for key in results["serial"][0]}
            one = one or b["tok_s"]
            print(
                f"| {size} | {b['tok_s']:.1f} | {s['tok_s']:.1f} | {b['tok_s'] / s['tok_s']:.2f}x | "
                f"{b['tok_s'] / one:.2f}x | {b['ttft_median']:.2f} / {b['ttft_max']:.2f} s | "
                f"{s['ttft_median']:.2f} / {s['ttft_max']:.2f} s | {b['p95']:.2f} / {s['p95']:.2f} s |",
                flush=True,
            )


if __name__ == "__main__":
    main()
