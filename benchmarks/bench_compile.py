"""What torch.compile with a static KV cache would buy at decode, on the embedded model (not an engine option).

Run: ``.venv/bin/python benchmarks/bench_compile.py [--tokens 64] [--repeats 3]``. For bf16 and for
NF4 + bf16 (the CPU defaults) it times greedy ``model.generate`` of N forced tokens, eager with the
dynamic cache the engine uses, and with ``cache_implementation="static"`` plus transformers'
``CompileConfig`` (forced on CPU, where transformers does not auto-compile). transformers marks
bitsandbytes 4-bit as not compileable, so for NF4 the script overrides that flag: this measures
what a compiled NF4 decode path could reach, not something the library does. It also reports the
one-time compile warm-up and whether the compiled greedy tokens equal the eager ones.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

CONFIGS = {
    "bf16": {"torch_dtype": "bfloat16"},
    "nf4-bf16-all": {"quantization": "4bit", "torch_dtype": "bfloat16"},
}
PROMPT = "Once upon a time there was a little robot who"


def greedy(model: Any, ids: Any, tokens: int, compile_config: Any = None) -> tuple[float, list[int]]:
    """(tok/s, new token ids) of one greedy generate with exactly ``tokens`` new tokens."""
    import torch

    options = {"cache_implementation": "static", "compile_config": compile_config} if compile_config else {}
    with torch.inference_mode():
        start = time.perf_counter()
        out = model.generate(ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, **options)
        seconds = time.perf_counter() - start
    return tokens / seconds, out[0, ids.shape[1] :].tolist()


def measure(name: str, tokens: int, repeats: int) -> dict[str, Any]:
    """Eager vs static+compile decode for one configuration, interleaved rounds."""
    import torch
    from transformers import CompileConfig

    from hermes_core.engines.local.loading import load_model

    loaded = load_model(None, progress=False, **CONFIGS[name])
    model = loaded.model
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:  # transformers refuses to compile bitsandbytes models; measure anyway
        type(quantizer).is_compileable = property(lambda self: True)
    config = CompileConfig(fullgraph=False, dynamic=False)
    config._compile_all_devices = True  # transformers auto-compiles on accelerators only
    ids = torch.tensor([loaded.tokenizer(PROMPT).input_ids])
    started = time.perf_counter()
    greedy(model, ids, tokens, config)
    warmup = time.perf_counter() - started
    greedy(model, ids, tokens)
    eager, compiled = [], []
    same = True
    for _ in range(repeats):
        rate, eager_ids = greedy(model, ids, tokens)
        eager.append(rate)
        rate, compiled_ids = greedy(model, ids, tokens, config)
        compiled.append(rate)
        same = same and eager_ids == compiled_ids
    return {
        "eager": statistics.median(eager),
        "compiled": statistics.median(compiled),
        "warmup": warmup,
        "same": same,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import os
    import warnings

    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    print(f"{args.tokens} tokens, {args.repeats} interleaved rounds, load average {os.getloadavg()}")
    print(
        f"{'config':<14}{'eager tok/s':>12}{'static+compile':>16}{'gain':>8}{'warm-up s':>11}{'same tokens':>13}"
    )
    for name in CONFIGS:
        row = measure(name, args.tokens, args.repeats)
        gain = row["compiled"] / row["eager"]
        print(
            f"{name:<14}{row['eager']:>12.1f}{row['compiled']:>16.1f}{gain:>7.2f}x{row['warmup']:>11.1f}"
            f"{'yes' if row['same'] else 'NO':>13}"
        )


if __name__ == "__main__":
    main()
