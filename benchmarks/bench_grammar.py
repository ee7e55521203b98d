"""Times grammar-constrained decoding: GrammarCache setup, grammar compile times, per-token overhead,
and the budget reserve's per-token cost (finishing a reply the token budget would cut).

Usage: ``.venv/bin/python benchmarks/bench_grammar.py [--model PATH_OR_ID] [--tokens 64] [--repeats 7] [--threads N]
[--reserve-only]``
(default model: the embedded SmolLM2-135M-Instruct). Overhead is measured on identical tokens: a
constrained greedy reply is generated once, then replayed step by step through the model with a KV
cache, once bare and once with each logits processor; medians over ``--repeats`` interleaved runs.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from hermes_core.engines.local.loading import load_model
from hermes_core.format.tool_choice import NormalizedToolChoice
from hermes_core.grammar import GrammarCache, tool_call_structural_tag

STOCK = {
    "type": "function",
    "function": {
        "name": "get_stock_fundamentals",
        "description": "Get fundamental data for a stock symbol.",
        "parameters": {
            "type": "object",
            "properties": {"symbol": {"type": "string"}},
            "required": ["symbol"],
        },
    },
}


def fifteen_tools() -> list[dict[str, Any]]:
    """Fifteen varied tools (strings, enums, integers with bounds, arrays, nested objects)."""
    tools = [STOCK]
    for i in range(14):
        properties: dict[str, Any] = {
            "query": {"type": "string", "description": "what to look up"},
            "limit": {"type": "integer", "minimum": 1, "maximum": 100},
            "unit": {"enum": ["metric", "imperial"]},
            "tags": {"type": "array", "items": {"type": "string"}},
            "options": {
                "type": "object",
                "properties": {"verbose": {"type": "boolean"}, "ratio": {"type": "number"}},
            },
        }
        tools.append(
            {
                "type": "function",
                "function": {
                    "name": f"tool_{i:02d}",
                    "description": f"Tool number {i}.",
                    "parameters": {"type": "object", "properties": properties, "required": ["query"]},
                },
            }
        )
    return tools


def median_seconds(fn: Callable[[], Any], repeats: int) -> float:
    """Median wall time of ``fn()``."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def compile_times(cache: GrammarCache, repeats: int) -> list[tuple[str, float]]:
    """Cold compile time (building the structural tag included) per grammar kind."""
    tools = fifteen_tools()
    required, auto = NormalizedToolChoice("required"), NormalizedToolChoice("auto")
    forced = NormalizedToolChoice("required", "get_stock_fundamentals")

    def cold(fn: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            cache._cache.clear()
            return fn()

        return run

    def name_first_only() -> Any:
        tag = tool_call_structural_tag(tools, required, True, cache.delimiters)
        for element in tag.format.tags[0].content.elements[1::2]:  # drop the arguments-first alternatives
            tag.format.tags[0].content.elements.remove(element)
        return cache.compiler.compile_structural_tag(tag)

    rows = [
        ("1 tool, required", cold(lambda: cache.for_tools([STOCK], required, True))),
        ("15 tools, required (both key orders)", cold(lambda: cache.for_tools(tools, required, True))),
        ("15 tools, required (name-first only)", name_first_only),
        ("15 tools, required, parallel off", cold(lambda: cache.for_tools(tools, required, False))),
        ("15 tools, forced name", cold(lambda: cache.for_tools(tools, forced, True))),
        ("15 tools, auto", cold(lambda: cache.for_tools(tools, auto, True))),
        ("JSON mode, any object", cold(lambda: cache.for_json(None))),
        (
            "JSON mode, 15-tool parameters schema",
            cold(lambda: cache.for_json(tools[1]["function"]["parameters"])),
        ),
        ("cache hit (15 tools, required)", lambda: cache.for_tools(tools, required, True)),
    ]
    return [(label, median_seconds(fn, repeats)) for label, fn in rows]


def constrained_reply(
    loaded: Any, cache: GrammarCache, prompt_ids: list[int], grammar: Any, tokens: int
) -> list[int]:
    """A greedy constrained reply of at most ``tokens`` tokens (stop token excluded)."""
    ids = torch.tensor([prompt_ids])
    with torch.inference_mode():
        out = loaded.model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            logits_processor=[cache.logits_processor(grammar)],
            max_new_tokens=tokens,
            do_sample=False,
            eos_token_id=loaded.stop_token_ids,
            pad_token_id=loaded.tokenizer.pad_token_id,
        )
    reply = out[0, len(prompt_ids) :].tolist()
    return [t for t in reply if t not in loaded.stop_token_ids]


def _cache_name() -> str:
    """transformers renamed ``past_key_values`` to ``cache`` (5.2x); use whichever this version has."""
    from transformers.generation.utils import GenerateDecoderOnlyOutput

    return "cache" if "cache" in GenerateDecoderOnlyOutput.__dataclass_fields__ else "past_key_values"


def replay_seconds(
    model: Any, prompt_ids: list[int], reply: list[int], make_processor: Callable[[], Any] | None
) -> float:
    """Seconds to decode ``reply`` step by step (prefill excluded), with a fresh processor or none."""
    full = torch.tensor([prompt_ids + reply])
    n_prompt = len(prompt_ids)
    processor = make_processor() if make_processor is not None else None
    name = _cache_name()
    with torch.inference_mode():
        out = model(full[:, :n_prompt], use_cache=True)
        kv, logits = getattr(out, name), out.logits[:, -1, :].float()
        start = time.perf_counter()
        for step, token in enumerate(reply):
            if processor is not None:
                logits = processor(full[:, : n_prompt + step], logits)
                assert torch.isfinite(logits[0, token]), "replayed token was masked: grammar/replay mismatch"
            out = model(full[:, n_prompt + step : n_prompt + step + 1], use_cache=True, **{name: kv})
            kv, logits = getattr(out, name), out.logits[:, -1, :].float()
        return time.perf_counter() - start


def processor_seconds(
    prompt_ids: list[int], reply: list[int], vocab_size: int, make_processor: Callable[[], Any]
) -> float:
    """Seconds spent inside a fresh processor over ``reply`` alone (no model), same calls as decoding."""
    full = torch.tensor([prompt_ids + reply])
    n_prompt = len(prompt_ids)
    processor = make_processor()
    base = torch.zeros(1, vocab_size)
    spent = 0.0
    for step in range(len(reply)):
        scores = base.clone()
        start = time.perf_counter()
        processor(full[:, : n_prompt + step], scores)
        spent += time.perf_counter() - start
    return spent


def overhead(
    loaded: Any, cache: GrammarCache, tokens: int, repeats: int
) -> list[tuple[str, int, float, dict[str, float], float]]:
    """Per grammar kind: (label, tokens, bare ms/token, processor-only ms/token by name, decode ms/token with ours)."""
    import xgrammar as xgr

    tokenizer = loaded.tokenizer
    vocab_size = loaded.model.config.vocab_size
    tools = fifteen_tools()
    prompt = (
        "<|im_start|>system\nYou are a function calling AI model. Call a tool inside <tool_call></tool_call> "
        "tags.<|im_end|>\n<|im_start|>user\nFetch the stock fundamentals data for Tesla (TSLA)<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    prompt_ids = tokenizer(prompt).input_ids
    cases = [
        ("required, 15 tools", cache.for_tools(tools, NormalizedToolChoice("required"), True)),
        ("auto, 15 tools", cache.for_tools(tools, NormalizedToolChoice("auto"), True)),
        ("JSON mode, any object", cache.for_json(None)),
    ]
    rows = []
    for label, grammar in cases:
        reply = constrained_reply(loaded, cache, prompt_ids, grammar, tokens)

        def ours(g: Any = grammar) -> Any:
            return cache.logits_processor(g)

        def theirs(g: Any = grammar) -> Any:
            return xgr.contrib.hf.LogitsProcessor(g)

        bare, constrained = [], []
        for _ in range(repeats):  # interleaved, so machine load hits both variants alike
            bare.append(replay_seconds(loaded.model, prompt_ids, reply, None))
            constrained.append(replay_seconds(loaded.model, prompt_ids, reply, ours))
        alone = {
            name: statistics.median(
                processor_seconds(prompt_ids, reply, vocab_size, make) for _ in range(repeats)
            )
            for name, make in (("ours", ours), ("xgr.contrib.hf", theirs))
        }
        n = len(reply)
        per_token = {name: seconds / n * 1000 for name, seconds in alone.items()}
        rows.append(
            (
                label,
                n,
                statistics.median(bare) / n * 1000,
                per_token,
                statistics.median(constrained) / n * 1000,
            )
        )
    return rows


RECORD = {
    "type": "object",
    "properties": {
        "title": {"type": "string"},
        "year": {"type": "integer", "minimum": 1900, "maximum": 2100},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        "authors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "role": {"enum": ["writer", "editor"]}},
                "required": ["name", "role"],
            },
        },
    },
    "required": ["title", "year", "tags", "authors"],
}


def _pieces(tokenizer: Any, text: str) -> list[str]:
    """``text`` as the decoded piece of each of its tokens, as the frontend sees a reply arrive."""
    from hermes_core._decoding import IncrementalDecoder

    decoder = IncrementalDecoder(tokenizer)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return [decoder.push(i) for i in ids]


def reserve_seconds(
    completer_factory: Callable[[], Any], pieces: list[str], count: Any
) -> tuple[float, float]:
    """Seconds per token of ``BudgetReserve.check`` over ``pieces``: budget ample (the byte bound spares
    the tokenizer) and budget tight (the completion is tokenized every step)."""
    from hermes_core.format.reply_completion import BudgetReserve

    results = []
    for budget in (10**6, len(pieces) + 1):
        reserve = BudgetReserve(completer_factory(), budget, count)
        tight = budget != 10**6
        if tight:
            reserve._budget = 10**6  # never stop, but always take the tokenizer path below
        text = ""
        start = time.perf_counter()
        for used, piece in enumerate(pieces, start=1):
            text += piece
            if tight:
                reserve._budget = used + 1  # one token left: the suffix is always counted
                reserve.active = True
            reserve.check(text, used)
        results.append((time.perf_counter() - start) / len(pieces))
    return results[0], results[1]


def reserve_cost(loaded: Any, repeats: int) -> list[tuple[str, int, float, float]]:
    """(label, tokens, ms/token ample, ms/token tight) for replies of several kinds and lengths."""
    import json

    from hermes_core.format.reply_completion import ReplyCompleter

    tokenizer = loaded.tokenizer

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    def record(n: int) -> str:
        doc = {
            "title": "The cat was a cat, and the cat was a cat. " * 2,
            "year": 1999,
            "tags": ["fiction", "cats"],
            "authors": [{"name": f"Author number {i}", "role": "writer"} for i in range(n)],
        }
        return json.dumps(doc, separators=(", ", ": "))

    arguments = {"query": "weather in Paris " * 3, "limit": 5, "unit": "metric", "tags": ["a", "b"]}
    call = "<tool_call>\n" + json.dumps({"name": "tool_03", "arguments": arguments}) + "\n</tool_call>"
    tools = fifteen_tools()
    cases = [
        ("structured output, short", lambda: ReplyCompleter.for_json(RECORD), record(2)),
        ("structured output, long", lambda: ReplyCompleter.for_json(RECORD), record(60)),
        ("JSON mode, any object, long", lambda: ReplyCompleter.for_json(None), record(60)),
        ("required call, 15 tools", lambda: ReplyCompleter.for_tools(tools, required=True), call),
    ]
    rows = []
    for label, factory, text in cases:
        pieces = _pieces(tokenizer, text)
        runs = [reserve_seconds(factory, pieces, count) for _ in range(repeats)]
        ample = statistics.median(r[0] for r in runs) * 1000
        tight = statistics.median(r[1] for r in runs) * 1000
        rows.append((label, len(pieces), ample, tight))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model path or hub id (default: the embedded SmolLM2)")
    parser.add_argument("--tokens", type=int, default=64, help="tokens decoded per overhead run")
    parser.add_argument("--repeats", type=int, default=7, help="runs per figure (median reported)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (use 1 on a shared, oversubscribed machine)",
    )
    parser.add_argument(
        "--reserve-only", action="store_true", help="time only the budget reserve (no compile or decode runs)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    loaded = load_model(args.model, progress=False)
    if args.reserve_only:
        print_reserve_cost(loaded, args.repeats)
        return
    vocab_size = loaded.model.config.vocab_size
    start = time.perf_counter()
    cache = GrammarCache(loaded.tokenizer, vocab_size, loaded.stop_token_ids)
    setup = time.perf_counter() - start
    print(f"model: {loaded.model_name}  vocab: {vocab_size}  torch threads: {torch.get_num_threads()}")
    print(
        f"GrammarCache setup (tokenizer info): {setup * 1000:.0f} ms; delimiters as single tokens: "
        f"{cache.delimiters.single_tokens}\n"
    )

    print(f"{'compile (cold, median of ' + str(args.repeats) + ')':<44} {'ms':>8}")
    for label, seconds in compile_times(cache, args.repeats):
        print(f"{label:<44} {seconds * 1000:8.2f}")

    print(
        f"\n{'decode, same tokens':<24} {'tokens':>6} {'bare':>7} {'with ours':>10} "
        f"{'e2e ovh':>8} {'ours alone':>11} {'ovh':>6} {'xgr.hf alone':>13} {'ovh':>6}   (ms/token, medians)"
    )
    for label, n, bare, alone, with_ours in overhead(loaded, cache, args.tokens, args.repeats):
        ours, hf = alone["ours"], alone["xgr.contrib.hf"]
        print(
            f"{label:<24} {n:6d} {bare:7.2f} {with_ours:10.2f} {(with_ours / bare - 1) * 100:7.1f}% "
            f"{ours:11.3f} {ours / bare * 100:5.1f}% {hf:13.3f} {hf / bare * 100:5.1f}%"
        )
    print("\ne2e ovh: decode time with our processor vs bare; 'alone': time inside the processor only,")
    print("as a share of the bare decode step (steadier than e2e on a loaded machine).")

    print_reserve_cost(loaded, args.repeats)


def print_reserve_cost(loaded: Any, repeats: int) -> None:
    """Print the budget reserve's per-token cost table."""
    print(
        f"\n{'budget reserve (BudgetReserve.check)':<32} {'tokens':>6} {'ample':>8} {'tight':>8}   (ms/token, medians)"
    )
    for label, n, ample, tight in reserve_cost(loaded, repeats):
        print(f"{label:<32} {n:6d} {ample:8.3f} {tight:8.3f}")
    print("ample: the completion's UTF-8 length is below the tokens left, so it is not tokenized;")
    print("tight: one token left at every step, so the completion is tokenized every step.")


if __name__ == "__main__":
    main()
