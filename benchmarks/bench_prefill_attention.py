"""The compiled prefill attention against torch's CPU kernel: speed per shape, the engine's prefill, accuracy.

Run: ``.venv/bin/python benchmarks/bench_prefill_attention.py [--repeats 7] [--threads 2]``. Prints:

1. Milliseconds of one layer's attention at the embedded model's shapes (9 query heads over 3 key/value
   heads, head size 64) and at Llama-3.2-1B's and Llama-3-8B's (a piece of Q new tokens after L - Q
   cached ones): the compiled kernel
   (``hermes_core/engines/local/cpu/prefill_attention.cpp``) against torch's
   ``scaled_dot_product_attention`` with the causal mask transformers passes, best of ``--repeats``,
   with each one's GFLOP/s (4 x heads x Q x dim x visible keys).
2. The engine's prefill of the bench_engine tools prompt on the default load, in its pieces, with the
   kernel and with torch's (the same loaded model, the marks switched, interleaved, medians), and where
   the kernel's prefill goes: attention and int4 unpacking timed at their compiled calls.
3. Accuracy: next-token KL divergence from the float32 model after a cold prefill of three texts, for
   the bf16 model with the kernel and with torch's.
4. Eight concurrent requests over the cached tools prompt on the default load (bench_batching.py's
   requests: distinct questions, ``--batch-tokens`` tokens each, no stop): aggregate tokens/s and the
   slowest first token, with the kernel in the batched steps' shared-prefix attention and without
   (marks switched on one engine, interleaved, medians of ``--rounds``). It runs in a fresh interpreter:
   the OpenMP team sections 1-3 leave on this one's main thread would slow the scheduler's
   (``bench_openmp_teams.py``).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import load_average, machine_summary
from bench_engine import ASK_COLD, TTFT_TOOLS

# (model, query heads, key/value heads, head size, new tokens, keys): the embedded model's pieces, then
# the attention shapes of Llama-3.2-1B and Llama-3-8B.
SHAPES = (
    ("135M", 9, 3, 64, 512, 512),
    ("135M", 9, 3, 64, 512, 1024),
    ("135M", 9, 3, 64, 512, 1600),
    ("135M", 9, 3, 64, 64, 1600),
    ("135M", 9, 3, 64, 8, 1600),
    ("1B", 32, 8, 64, 512, 1024),
    ("8B", 32, 8, 128, 512, 1024),
    ("8B", 32, 8, 128, 64, 2048),
)
TEXTS = (
    "Tell me about the weather in Paris and London. " * 30,
    "Once upon a time, a robot wrote JSON. " * 40,
    "def f(x):\n    return x * 2\n" * 50,
)


def best_ms(function, args: tuple, repeats: int, **kwargs) -> float:
    """Best of ``repeats`` timings of ``function(*args, **kwargs)`` after one warm-up call, in ms."""
    function(*args, **kwargs)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function(*args, **kwargs)
        times.append(time.perf_counter() - start)
    return min(times) * 1000


def kernel_table(native, repeats: int) -> None:
    import torch

    print(
        f"{'model':>5} {'new':>5} {'keys':>6} {'compiled ms':>12} {'GFLOP/s':>8} {'torch ms':>9} {'GFLOP/s':>8} {'x':>6}"
    )
    for model, heads, kv_heads, dim, queries, keys in SHAPES:
        query = torch.randn(1, heads, queries, dim).to(torch.bfloat16)
        key = torch.randn(1, kv_heads, keys, dim).to(torch.bfloat16)
        value = torch.randn(1, kv_heads, keys, dim).to(torch.bfloat16)
        mask = (torch.arange(keys)[None, :] <= (keys - queries + torch.arange(queries))[:, None])[None, None]
        flops = 4 * heads * queries * dim * (keys - queries + (queries + 1) / 2)
        ours = best_ms(native.prefill_attention, (query, key, value, dim**-0.5), repeats)
        sdpa = torch.nn.functional.scaled_dot_product_attention
        torchs = best_ms(sdpa, (query, key, value), repeats, attn_mask=mask, enable_gqa=True)
        print(
            f"{model:>5} {queries:>5} {keys:>6} {ours:>12.2f} {flops / ours / 1e6:>8.0f} {torchs:>9.2f} "
            f"{flops / torchs / 1e6:>8.0f} {torchs / ours:>6.2f}"
        )


def set_marks(model, value: bool) -> None:
    from hermes_core.engines.local.cpu.prefill_attention import MARK

    for module in model.modules():
        if hasattr(module, MARK):
            setattr(module, MARK, value)


def engine_prefill(native, repeats: int) -> None:
    import torch

    from hermes_core import Message, load_engine

    engine = load_engine(prefix_cache=False, progress=False)
    local = engine.engine
    request = engine._prepare([Message("user", ASK_COLD)], tools=TTFT_TOOLS).request

    def run() -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            local._prefill_prompt(request)
        return time.perf_counter() - start

    timings: dict[bool, list[float]] = {True: [], False: []}
    for compiled in (True, False):
        set_marks(local.model, compiled)
        run()  # warm-up
    for _ in range(repeats):
        for compiled in (True, False):
            set_marks(local.model, compiled)
            timings[compiled].append(run())
    set_marks(local.model, True)
    ours, torchs = statistics.median(timings[True]), statistics.median(timings[False])
    print(
        f"default load ({local.loaded.weights_summary()}), {len(request.prompt_ids)} tokens: compiled "
        f"attention {ours * 1000:.0f} ms, torch's {torchs * 1000:.0f} ms (x{torchs / ours:.2f})"
    )
    spent: Counter[str] = Counter()
    calls: Counter[str] = Counter()
    originals = {name: getattr(native, name) for name in ("prefill_attention", "dequantize_int4")}

    def timed(name, function):
        def call(*args):
            start = time.perf_counter()
            result = function(*args)
            spent[name] += time.perf_counter() - start
            calls[name] += 1
            return result

        return call

    for name, function in originals.items():
        setattr(native, name, timed(name, function))
    try:
        wall = run()
    finally:
        for name, function in originals.items():
            setattr(native, name, function)
    parts = ", ".join(f"{name} {spent[name] * 1000:.0f} ms in {calls[name]} calls" for name in originals)
    print(f"one prefill with the compiled attention: wall {wall * 1000:.0f} ms; {parts}")


def accuracy() -> None:
    import torch

    from hermes_core.engines.local.engine import LocalEngine
    from hermes_core.engines.local.kv_cache import new_kv_cache
    from hermes_core.engines.local.loading import load_model

    bf16 = load_model(None, torch_dtype="bfloat16", progress=False)
    float32 = load_model(None, torch_dtype="float32", progress=False)

    def log_probs(loaded, ids):
        logits = LocalEngine(loaded, prefix_cache=False)._row_logits(ids, new_kv_cache(loaded.model))
        return torch.log_softmax(logits[0].float(), -1)

    print(f"{'tokens':>6} {'KL compiled':>12} {'KL torch':>10}")
    for text in TEXTS:
        ids = bf16.tokenizer(text).input_ids
        exact = log_probs(float32, ids)
        set_marks(bf16.model, True)
        ours = log_probs(bf16, ids)
        set_marks(bf16.model, False)
        torchs = log_probs(bf16, ids)
        kl = [float((exact.exp() * (exact - other)).sum()) for other in (ours, torchs)]
        print(f"{len(ids):>6} {kl[0]:>12.5f} {kl[1]:>10.5f}")


def batched(rounds: int, tokens: int) -> None:
    from bench_batching import TOOLS, _requests, _run

    from hermes_core import load_engine

    engine = load_engine(None, max_batch_size=8)
    requests = _requests(engine, 8, TOOLS, tokens)
    _run(engine, requests)  # warm-up: the tools turn into the prefix cache, grammar-free
    results: dict[bool, list[dict[str, float]]] = {True: [], False: []}
    for round_ in range(rounds):
        for compiled in (True, False) if round_ % 2 == 0 else (False, True):
            set_marks(engine.model, compiled)
            results[compiled].append(_run(engine, requests))
    set_marks(engine.model, True)
    for compiled, runs in results.items():
        name = "compiled attention" if compiled else "torch's attention "
        tok_s = statistics.median(run["tok_s"] for run in runs)
        slowest = statistics.median(run["ttft_max"] for run in runs)
        print(f"{name}  {tok_s:7.1f} tok/s aggregate, slowest first token {slowest:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=4, help="rounds of the concurrent-requests section")
    parser.add_argument("--batch-tokens", type=int, default=32, help="new tokens per concurrent request")
    parser.add_argument("--batched-only", action="store_true", help="only section 4, in this interpreter")
    args = parser.parse_args()
    import torch

    from hermes_core.engines.local.cpu import native_step

    torch.set_num_threads(args.threads)
    if args.batched_only:
        batched(args.rounds, args.batch_tokens)
        return
    native = native_step.extension(wait=True)
    if native is None or not native.prefill_attention_available():
        sys.exit(f"the compiled kernel is not available here ({native_step.failure() or 'no AVX-512 BF16'})")
    print(machine_summary())
    print(f"threads {args.threads}; load average at start: {load_average()}")
    print("\n1. one layer's attention, best of", args.repeats)
    kernel_table(native, args.repeats)
    print("\n2. the engine's prefill of the tools prompt (medians)")
    engine_prefill(native, args.repeats)
    print("\n3. next-token KL divergence from the float32 model (bf16 loads)")
    accuracy()
    print(
        f"\n4. 8 concurrent requests over the cached tools prompt, {args.batch_tokens} tokens each (medians)"
    )
    sys.stdout.flush()
    command = [sys.executable, __file__, "--batched-only", "--threads", str(args.threads)]
    command += ["--rounds", str(args.rounds), "--batch-tokens", str(args.batch_tokens)]
    subprocess.run(command, check=True)
    print(f"\nload average at end: {load_average()}")


if __name__ == "__main__":
    main()
