"""Streaming against a whole reply, through the core and both adapters, interleaved in one process.

Usage: ``.venv/bin/python benchmarks/bench_stream.py [--rounds 8] [--tokens 96] [--quantization auto]``

Every path generates the same greedy reply to the same prompt from one shared engine (loaded with the
options ``ChatHermes()`` passes when given none, unless ``--quantization``/``--torch-dtype`` say otherwise):
core ``generate`` / ``stream``, LangChain ``ChatHermes.invoke`` / ``.stream`` and LlamaIndex
``HermesLLM.chat`` / ``.stream_chat``. Each round runs every path once: the three whole/stream pairs in
an order shuffled every round, the two halves of a pair back to back in a shuffled order, so the two
sides of a ratio run seconds apart. The table shows each path's median wall time and process CPU time
(all threads) per request, tokens/s, and the stream/whole ratios of wall-clock and CPU time taken round
by round (median, and the middle half of the rounds), so a load burst hits both sides alike; the goal
is streamed within 10% of whole (wall ratio <= 1.10).
Only public APIs are used, so the same script can time an older checkout (``--json`` for a diff).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import load_average, machine_summary
from bench_decode import user_default_options

STORY = "Write a long story about a dragon who learns to cook. Describe every dish in detail."
SETTLE_SECONDS = 0.2


def paths(engine: Any, tokens: int) -> dict[str, Callable[[], Any]]:
    """name -> a callable running one request (the streaming ones drain their iterator)."""
    from llama_index.core.llms import ChatMessage

    from hermes_core import Message
    from langchain_hermes import ChatHermes
    from llama_index_hermes import HermesLLM

    core_messages = [Message("user", STORY)]
    chat = ChatHermes(engine=engine, max_tokens=tokens)
    llm = HermesLLM(engine=engine, max_new_tokens=tokens)
    li_messages = [ChatMessage(role="user", content=STORY)]

    def drain(iterator: Any) -> None:
        for _ in iterator:
            pass

    return {
        "core generate": lambda: engine.generate(core_messages, max_new_tokens=tokens),
        "core stream": lambda: drain(engine.stream(core_messages, max_new_tokens=tokens)),
        "langchain invoke": lambda: chat.invoke(STORY),
        "langchain stream": lambda: drain(chat.stream(STORY)),
        "llamaindex chat": lambda: llm.chat(li_messages),
        "llamaindex stream_chat": lambda: drain(llm.stream_chat(li_messages)),
    }


PAIRS = (
    ("core", "core generate", "core stream"),
    ("langchain", "langchain invoke", "langchain stream"),
    ("llamaindex", "llamaindex chat", "llamaindex stream_chat"),
)


def quartiles(values: list[float]) -> tuple[float, float, float]:
    """25th, 50th and 75th percentiles of ``values`` (the value itself when there is only one)."""
    if len(values) < 2:
        return values[0], values[0], values[0]
    low, middle, high = statistics.quantiles(values, n=4)
    return low, middle, high


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=96, help="max new tokens per request (default 96)")
    parser.add_argument("--quantization", default=None, help='load option, e.g. "auto" (default: none)')
    parser.add_argument("--torch-dtype", default=None)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--only", help="comma-separated subset of the paths")
    parser.add_argument("--json", help="also write the raw samples here")
    args = parser.parse_args()
    import warnings

    warnings.filterwarnings("ignore")
    import torch

    from hermes_core import get_engine

    torch.set_num_threads(args.threads)
    print(
        f"bench_stream: {args.tokens} tokens, {args.rounds} rounds, torch threads {torch.get_num_threads()}"
    )
    print(machine_summary())
    print(f"load average at start: {load_average()}", flush=True)
    options = {"progress": False, **user_default_options()}
    if args.quantization:
        options["quantization"] = args.quantization
    if args.torch_dtype:
        options["torch_dtype"] = args.torch_dtype
    engine = get_engine(None, **options)
    print(f"weights: {engine.engine.loaded.weights_summary()} (load options {options})")
    runners = paths(engine, args.tokens)
    if args.only:
        runners = {name: runners[name] for name in args.only.split(",")}
    reply = engine.generate([__import__("hermes_core").Message("user", STORY)], max_new_tokens=args.tokens)
    completion = reply.usage.completion_tokens
    for run in runners.values():  # warm-up
        run()
    wall: dict[str, list[float]] = {name: [] for name in runners}
    cpu: dict[str, list[float]] = {name: [] for name in runners}
    pairs = [[w, st] for _, w, st in PAIRS if w in runners and st in runners]
    singles = [[name] for name in runners if not any(name in pair for pair in pairs)]
    groups = pairs + singles
    shuffle = random.Random(0)
    for index in range(args.rounds):
        shuffle.shuffle(groups)
        for group in groups:
            shuffle.shuffle(group)
            for name in group:
                time.sleep(SETTLE_SECONDS)
                c0, w0 = time.process_time(), time.perf_counter()
                runners[name]()
                wall[name].append(time.perf_counter() - w0)
                cpu[name].append(time.process_time() - c0)
        print(f"  round {index + 1}/{args.rounds} (load average {load_average()})", flush=True)
    print(f"\n{completion} completion tokens per request; medians of {args.rounds} rounds")
    print(f"{'path':<24}{'wall s':>8}{'cpu s':>8}{'tok/s':>8}")
    for name in runners:
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        print(f"{name:<24}{w:>8.3f}{c:>8.3f}{completion / w:>8.1f}")
    print(
        f"\n{'stream / whole':<16}{'wall':>7}{'middle half':>15}{'cpu':>7}{'middle half':>15}   "
        "(per-round ratios: median, 25th-75th percentile; 1.00 = same)"
    )
    ratios: dict[str, dict[str, list[float]]] = {}
    for label, whole, streamed in PAIRS:
        if whole in runners and streamed in runners:
            rw = [a / b for a, b in zip(wall[streamed], wall[whole], strict=True)]
            rc = [a / b for a, b in zip(cpu[streamed], cpu[whole], strict=True)]
            ratios[label] = {"wall": rw, "cpu": rc}
            (w25, _, w75), (c25, _, c75) = quartiles(rw), quartiles(rc)
            verdict = "within 10%" if statistics.median(rw) <= 1.10 else "over 10%"
            print(
                f"{label:<16}{statistics.median(rw):>7.3f}{f'{w25:.2f}-{w75:.2f}':>15}"
                f"{statistics.median(rc):>7.3f}{f'{c25:.2f}-{c75:.2f}':>15}   wall: {verdict}"
            )
    print(f"load average at end: {load_average()}")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"tokens": completion, "wall": wall, "cpu": cpu, "ratios": ratios})
        )


if __name__ == "__main__":
    main()
