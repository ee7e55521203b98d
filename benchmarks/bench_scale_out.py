"""N concurrent agent requests: the local engine vs llama-server with ``-np N``, on the embedded SmolLM2-135M.

Usage: ``.venv/bin/python benchmarks/bench_scale_out.py [--concurrency 1,4,8] [--threads 1] [--rounds 2]``
(``--json PATH`` also writes the figures). See docs/scale-out.md for the figures and how to read them.

One agent request is two model turns, as an agent loop runs them: a forced tool call (three realistic
tools offered), then, with the tool's result in the conversation, a final answer (``tool_choice="none"``).
N such requests start at once through ``Frontend.agenerate`` (what ``ChatHermes.ainvoke`` and
``HermesLLM.achat`` call), against:

- ``local``: the in-process engine (``get_engine()``: the GGUF converted to the default load, torch
  with ``--threads`` threads). Concurrent requests decode together (continuous batching, up to
  ``max_batch_size`` = 8 rows; docs/engine.md).
- ``llama-server``: a real llama-server started here with ``-np N`` slots serving the same GGUF (Q4_1
  weights, ``-t --threads``), through ``get_engine(base_url=...)``: up to N requests decode in one batch.

Reported per engine and N: wall time, aggregate completion tokens per second (all requests' generated
tokens / wall time), and the p50/p95 latency of one agent request (both turns). Each engine is warmed
up first, not counted: the local engine with one request (model load, grammar compile, prefix cache),
each llama-server with N (every slot's prompt cache). Rounds alternate which
engine goes first so that machine load drifts over both alike; the medians over rounds are reported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REALISTIC_TOOLS, load_average, machine_summary, median  # noqa: E402

TOOLS = REALISTIC_TOOLS[:3]
SYSTEM = {
    "role": "system",
    "content": "You are a helpful assistant. Use the tools, then answer in one sentence.",
}
QUESTIONS = [
    "What's the weather like in Paris right now?",
    "How is the weather in Tokyo today, in celsius?",
    "Is it raining in London at the moment?",
    "What is the temperature in New York?",
    "Tell me the current weather in Berlin.",
    "Do I need an umbrella in Seattle today?",
    "How warm is it in Madrid right now?",
    "What are the weather conditions in Sydney?",
]
TOOL_RESULT = '{"temperature": 21, "unit": "celsius", "summary": "sunny with a light breeze"}'


async def agent_request(frontend: Any, index: int, max_new_tokens: int) -> tuple[float, int, bool]:
    """One agent request (forced call, then the answer): seconds, generated tokens, whether the call was valid."""
    messages: list[dict[str, Any]] = [SYSTEM, {"role": "user", "content": QUESTIONS[index % len(QUESTIONS)]}]
    started = time.perf_counter()
    first = await frontend.agenerate(
        messages,
        tools=TOOLS,
        tool_choice="required",
        parallel_tool_calls=False,
        max_new_tokens=max_new_tokens,
    )
    valid = len(first.tool_calls) == 1
    calls = [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in first.tool_calls]
    messages.append({"role": "assistant", "content": "", "tool_calls": calls})
    if valid:
        messages.append({"role": "tool", "tool_call_id": calls[0]["id"], "content": TOOL_RESULT})
    second = await frontend.agenerate(
        messages, tools=TOOLS, tool_choice="none", max_new_tokens=max_new_tokens
    )
    seconds = time.perf_counter() - started
    return seconds, first.usage.completion_tokens + second.usage.completion_tokens, valid


async def run_batch(frontend: Any, concurrency: int, max_new_tokens: int) -> dict[str, Any]:
    """N agent requests at once; wall time, aggregate tokens/s and latency percentiles."""
    started = time.perf_counter()
    results = await asyncio.gather(*(agent_request(frontend, i, max_new_tokens) for i in range(concurrency)))
    wall = time.perf_counter() - started
    latencies = sorted(r[0] for r in results)
    tokens = sum(r[1] for r in results)
    return {
        "wall_s": wall,
        "tokens": tokens,
        "tok_s": tokens / wall,
        "p50_s": statistics.median(latencies),
        "p95_s": _percentile(latencies, 0.95),
        "valid_calls": sum(r[2] for r in results),
    }


def _percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile (the largest value for small N)."""
    rank = max(1, min(len(sorted_values), round(q * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", default="1,4,8", help="comma-separated N values (default 1,4,8)")
    parser.add_argument(
        "--threads", type=int, default=1, help="CPU threads for torch and for llama-server (default 1)"
    )
    parser.add_argument("--rounds", type=int, default=2, help="measured rounds per N (default 2)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="budget of each turn (default 64)")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    levels = [int(n) for n in args.concurrency.split(",")]

    import torch

    from hermes_core import get_engine
    from hermes_core.engines.local.loading import embedded_gguf_path
    from tests.llama_server import llama_server

    torch.set_num_threads(args.threads)
    print(machine_summary())
    print(f"load average at start: {load_average()}\n", flush=True)
    local = get_engine(max_new_tokens=args.max_new_tokens)
    asyncio.run(run_batch(local, 1, args.max_new_tokens))  # warm-up: load, grammar, prefix cache
    figures: dict[str, Any] = {"threads": args.threads, "load_average_start": load_average(), "levels": {}}
    for n in levels:
        with llama_server(embedded_gguf_path(), parallel=n, ctx_per_slot=2048, threads=args.threads) as url:
            served = get_engine(base_url=url, max_new_tokens=args.max_new_tokens)
            asyncio.run(run_batch(served, n, args.max_new_tokens))  # warm-up: every slot's prompt cache
            rounds: dict[str, list[dict[str, Any]]] = {"local": [], "llama-server": []}
            for index in range(args.rounds):
                order = [("local", local), ("llama-server", served)]
                for name, frontend in order if index % 2 == 0 else order[::-1]:
                    rounds[name].append(asyncio.run(run_batch(frontend, n, args.max_new_tokens)))
                    print(f"N={n} round {index + 1} {name}: {_describe(rounds[name][-1])}", flush=True)
        figures["levels"][n] = {name: _summary(runs) for name, runs in rounds.items()}
    figures["load_average_end"] = load_average()
    print("\n" + table(figures))
    print(f"\nload average at end: {figures['load_average_end']}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


def _describe(run: dict[str, Any]) -> str:
    return (
        f"{run['tok_s']:.1f} tok/s, wall {run['wall_s']:.1f} s, p50 {run['p50_s']:.1f} s, "
        f"p95 {run['p95_s']:.1f} s, {run['valid_calls']} valid calls"
    )


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over rounds of every figure."""
    return {key: median([run[key] for run in runs]) for key in runs[0]}


def table(figures: dict[str, Any]) -> str:
    """The figures as a Markdown table."""
    lines = [
        "| N | engine | aggregate tok/s | wall s | p50 latency s | p95 latency s | valid calls |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for n, engines in figures["levels"].items():
        for name, s in engines.items():
            lines.append(
                f"| {n} | {name} | {s['tok_s']:.1f} | {s['wall_s']:.1f} | {s['p50_s']:.1f} | {s['p95_s']:.1f} "
                f"| {s['valid_calls']:.0f}/{n} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
