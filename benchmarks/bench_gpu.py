"""An 8B-shaped bf16 model on a GPU: engine decode against bare ``generate``, grammar cost per token, batching.

Usage: ``.venv/bin/python benchmarks/bench_gpu.py [--shape 8B] [--tokens 64] [--rounds 3] [--batch 8]
[--json PATH]`` on a machine with CUDA; ``--device cpu --shape tiny`` runs every step on a tiny model
instead, which is how tests/test_bench_gpu.py keeps the script working where no GPU is lent, and
``--device cpu --shape embedded`` takes the same figures for the embedded model on its default load.

No weights can be downloaded, so the model is Llama-3-8B's published shape (``bench_real_sizes.SHAPES``)
with random weights, built in bf16 directly on the device, and the embedded SmolLM2 tokenizer (its ids
are all inside the 8B vocabulary). It is handed to the engine as a ``(model, tokenizer)`` pair. In
rounds, after a warm-up:

- **decode**: greedy tok/s of ``--tokens`` new tokens after a 32-token prompt, bare
  ``model.generate`` (timed by a streamer, first to last new token) against the engine's scheduler
  (``LocalEngine.run``, timed per token the same way);
- **grammar**: ms per token of a tool call forced by the grammar (10 tools, ``tool_choice="required"``)
  against the same number of unconstrained tokens after the same prompt: the difference is what the
  grammar costs a token;
- **batching**: ``--batch`` requests at once (one thread each) against one alone, aggregate tok/s.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import load_average, machine_summary
from bench_engine import TTFT_TOOLS
from bench_real_sizes import SHAPES, transformers_speed

TINY = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "vocab_size": 49152,
    "tie_word_embeddings": False,
    "rope_theta": 10000.0,
    "rms_norm_eps": 1e-5,
    "initializer_range": 0.02,
}
QUESTION = "What is the weather in Paris today, in celsius?"


def build(shape: dict[str, Any], device: str, seed: int = 0) -> Any:
    """A random bf16 Llama of ``shape`` made on ``device``: matrices ~ N(0, initializer_range), norms 1."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**shape, max_position_embeddings=4096)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config).eval().requires_grad_(False)
    finally:
        torch.set_default_dtype(default)
    generator = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.dim() == 2:
                parameter.normal_(0.0, config.initializer_range, generator=generator)
            elif name.endswith("norm.weight"):
                parameter.fill_(1.0)
    return model


def tokenizer() -> Any:
    """The embedded model's tokenizer (ChatML, ids below the 8B vocabulary)."""
    from transformers import AutoTokenizer

    from hermes_core.engines.local.loading import embedded_gguf_path

    gguf = embedded_gguf_path()
    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)


def timed_run(engine: Any, request: Any) -> list[float]:
    """The times at which the engine handed over each new token of ``request``."""
    stamps: list[float] = []
    engine.engine.run(request, on_token=lambda token: stamps.append(time.perf_counter()))
    return stamps


def free_run(request: Any, tokens: int) -> Any:
    """``request`` decoding exactly ``tokens`` greedy tokens, no grammar, no stops."""
    return dataclasses.replace(
        request,
        max_new_tokens=tokens,
        stop_token_ids=[-1],  # an id no token has (an empty list means the model's own stops)
        stop_strings=[],
        constraint=None,
        temperature=0.0,
        cancel=threading.Event(),
    )


def per_token_ms(stamps: list[float]) -> float:
    return (stamps[-1] - stamps[0]) / (len(stamps) - 1) * 1e3


def batched_tok_s(engine: Any, request: Any, tokens: int, count: int) -> float:
    """Aggregate decode tok/s of ``count`` copies of ``request`` submitted at once."""
    runs = [free_run(request, tokens) for _ in range(count)]
    produced: list[Any] = []

    def run_one(run: Any) -> None:
        try:
            produced.append(len(engine.engine.run(run).token_ids))
        except BaseException as exc:  # reported below, not lost in the thread
            produced.append(exc)

    threads = [threading.Thread(target=run_one, args=(run,)) for run in runs]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    if produced != [tokens] * count:
        raise RuntimeError(f"batched requests gave {produced}, not {count} x {tokens} tokens")
    return count * tokens / seconds


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Every figure of the module docstring, medians over ``args.rounds``."""
    import torch

    from hermes_core import Message
    from hermes_core.engines.local.cpu.threads import on_fresh_thread
    from hermes_core.engines.local.hermes_engine import load_engine

    if args.shape == "embedded":  # the embedded model on its default load (CPU): the same figures for it
        engine = load_engine(prefix_cache=False, progress=False, max_batch_size=args.batch)
        model = engine.engine.model
    else:
        shape = TINY if args.shape == "tiny" else SHAPES[args.shape]
        model = on_fresh_thread(build, shape, args.device)  # no torch work here (bench_openmp_teams.py)
        engine = load_engine(
            (model, tokenizer()), prefix_cache=False, progress=False, max_batch_size=args.batch
        )
    plain = engine._prepare([Message("user", QUESTION)]).request
    prompt = list(plain.prompt_ids[:32])
    plain = dataclasses.replace(plain, prompt_ids=prompt)
    forced = engine._prepare([Message("user", QUESTION)], tools=TTFT_TOOLS, tool_choice="required").request
    forced = dataclasses.replace(forced, max_new_tokens=args.tokens, temperature=0.0)
    unforced = free_run(forced, args.tokens)

    on_fresh_thread(transformers_speed, model, 4, prompt)  # warm-ups
    timed_run(engine, free_run(plain, 4))
    timed_run(engine, forced)
    figures: dict[str, list[float]] = {
        "bare generate tok/s": [],
        "engine tok/s": [],
        "grammar ms/token": [],
        "free ms/token": [],
        "one request tok/s": [],
        f"{args.batch} requests tok/s": [],
    }
    for index in range(args.rounds):
        figures["bare generate tok/s"].append(on_fresh_thread(transformers_speed, model, args.tokens, prompt))
        figures["engine tok/s"].append(1e3 / per_token_ms(timed_run(engine, free_run(plain, args.tokens))))
        constrained = timed_run(engine, forced)
        figures["grammar ms/token"].append(per_token_ms(constrained))
        same_length = dataclasses.replace(unforced, max_new_tokens=len(constrained))
        figures["free ms/token"].append(per_token_ms(timed_run(engine, same_length)))
        figures["one request tok/s"].append(batched_tok_s(engine, plain, args.tokens, 1))
        figures[f"{args.batch} requests tok/s"].append(batched_tok_s(engine, plain, args.tokens, args.batch))
        print(f"  round {index + 1}/{args.rounds} done", flush=True)
    medians = {name: statistics.median(values) for name, values in figures.items()}
    medians["grammar cost ms/token"] = medians["grammar ms/token"] - medians["free ms/token"]
    medians["engine / bare"] = medians["engine tok/s"] / medians["bare generate tok/s"]
    medians["batch gain"] = medians[f"{args.batch} requests tok/s"] / medians["one request tok/s"]
    device_name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu"
    return {"device": device_name, "shape": args.shape, "tokens": args.tokens, "medians": medians}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--shape", default="8B", help="a key of bench_real_sizes.SHAPES, tiny or embedded")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--json", help="also write the medians here")
    args = parser.parse_args()
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here; --device cpu --shape tiny runs the script's steps on the CPU")
    if args.shape not in ("tiny", "embedded") and args.shape not in SHAPES:
        raise SystemExit(f"unknown shape {args.shape!r}; use tiny, embedded or one of {', '.join(SHAPES)}")
    if args.shape == "embedded" and args.device != "cpu":
        raise SystemExit("--shape embedded runs the embedded model's default CPU load: pass --device cpu")
    print(machine_summary())
    print(
        f"bench_gpu: {args.shape} on {args.device}, {args.tokens} tokens, {args.rounds} rounds; "
        f"{time.strftime('%Y-%m-%d %H:%M')}; load average {load_average()}",
        flush=True,
    )
    result = measure(args)
    print(f"\n{result['device']}, {args.shape}, medians of {args.rounds} rounds")
    for name, value in result["medians"].items():
        print(f"  {name:<28}{value:10.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
