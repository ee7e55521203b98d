"""benchmarks/bench_gpu.py, the GPU measurement kept ready for a machine with CUDA, runs its steps on a CPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_every_step_runs_on_a_tiny_model_on_the_cpu(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    command = [sys.executable, "benchmarks/bench_gpu.py", "--device", "cpu", "--shape", "tiny"]
    command += ["--tokens", "8", "--rounds", "1", "--batch", "2", "--json", str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    medians = json.loads(out.read_text())["medians"]
    for name in ("bare generate tok/s", "engine tok/s", "one request tok/s", "2 requests tok/s"):
        assert medians[name] > 0, name
    assert medians["grammar ms/token"] > 0 and medians["free ms/token"] > 0
    assert "grammar cost ms/token" in medians and medians["batch gain"] > 0


def test_without_cuda_it_says_how_to_run_it_here() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the script would run for real")
    done = subprocess.run(
        [sys.executable, "benchmarks/bench_gpu.py"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode != 0
    assert "--device cpu --shape tiny" in done.stderr
