"""Every example in examples/ runs offline on the embedded model and does what it says it does."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
TESTED = {
    "langchain_tool_calling.py",
    "langgraph_agent.py",
    "langchain_structured_agent.py",
    "llama_index_rag_agent.py",
    "structured_output.py",
    "real_hermes_model.py",
}


def run_example(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``examples/<name>`` as a user would (from the repo root), offline and single-threaded."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": os.environ.get("HERMES_TEST_THREADS", "1"),
        "HF_HUB_OFFLINE": "1",  # an example that reached for the network would fail here
    }
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=600,
    )


def lines_starting(output: str, prefix: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith(prefix)]


def test_every_example_is_run_by_a_test() -> None:
    scripts = {p.name for p in EXAMPLES.glob("*.py")} - {"tools.py"}
    assert scripts == TESTED


def test_examples_have_a_docstring_saying_how_to_run_them() -> None:
    for name in TESTED:
        doc = ast.get_docstring(ast.parse((EXAMPLES / name).read_text()))
        assert doc and f"examples/{name}" in doc, name


@pytest.mark.slow
def test_langchain_tool_calling() -> None:
    proc = run_example("langchain_tool_calling.py")
    assert proc.returncode == 0, proc.stderr
    assert lines_starting(proc.stdout, "tool call: get_weather(") and "'London'" in proc.stdout
    assert "light rain" in lines_starting(proc.stdout, "tool result: ")[0]  # the real tool ran
    answer = lines_starting(proc.stdout, "answer: ")[0].removeprefix("answer: ")
    assert answer.strip()


@pytest.mark.slow
def test_langgraph_agent() -> None:
    proc = run_example("langgraph_agent.py")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    call = out.index(next(line for line in out if line.startswith("[model] tool call: convert_currency(")))
    assert out[call + 1] == "[tools] tool result: 250 EUR = 270.00 USD"  # ToolNode ran the tool
    assert out[-1].startswith("[model] answer: ") and len(out[-1]) > len("[model] answer: ")


@pytest.mark.slow
def test_langchain_structured_agent() -> None:
    proc = run_example("langchain_structured_agent.py")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    call = out.index(next(line for line in out if line.startswith("[model] tool call: get_weather(")))
    assert out[call + 1].startswith("[tools] tool result: It is sunny and 21 C in ")  # the tool ran
    answer = lines_starting(proc.stdout, "[model] answer (JSON text): ")[0].split(": ", 1)[1]
    report = json.loads(answer)
    assert set(report) == {"city", "temperature_c", "sunny"}  # the grammar held the answer to the schema
    structured = lines_starting(proc.stdout, "structured_response: ")[0]
    assert structured == f"structured_response: WeatherReport(city={report['city']!r}, " + (
        f"temperature_c={report['temperature_c']}, sunny={report['sunny']})"
    )
    assert lines_starting(proc.stdout, "strategy: ")[0].startswith("strategy: provider (")


@pytest.mark.slow
def test_llama_index_rag_agent() -> None:
    proc = run_example("llama_index_rag_agent.py")
    assert proc.returncode == 0, proc.stderr
    assert "indexed 3 documents from docs/" in proc.stdout
    assert lines_starting(proc.stdout, "tool call: search_docs(")
    result = lines_starting(proc.stdout, "tool result: ")[0]
    assert (
        "green" in result and "(source: lighthouse.md)" in result
    )  # the embeddings found the right sentence
    assert lines_starting(proc.stdout, "answer: ")[0].removeprefix("answer: ").strip()


@pytest.mark.slow
def test_structured_output() -> None:
    proc = run_example("structured_output.py")
    assert proc.returncode == 0, proc.stderr
    langchain_line = lines_starting(proc.stdout, "LangChain ")[0]
    llama_line = lines_starting(proc.stdout, "LlamaIndex ")[0]
    core_line = lines_starting(proc.stdout, "hermes_core ")[0]
    for line in (langchain_line, llama_line):
        assert "-> Landmark(name=" in line and "kind=" in line  # parsed into the pydantic model
    core = ast.literal_eval(core_line.split("-> ", 1)[1])
    assert set(core) == {"name", "city", "kind"}
    assert core["kind"] in {"tower", "bridge", "building", "statue", "other"}


@pytest.mark.slow
def test_real_hermes_model_example_defaults_to_the_embedded_model() -> None:
    proc = run_example("real_hermes_model.py")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("model: embedded SmolLM2-135M-Instruct")
    call = lines_starting(proc.stdout, "tool call: get_weather(")[0]
    assert "Tokyo" in call and "cloudy" in call
    assert lines_starting(proc.stdout, "answer: ")[0].removeprefix("answer: ").strip()


def test_real_hermes_model_example_reports_a_missing_model(tmp_path: Path) -> None:
    proc = run_example("real_hermes_model.py", "--model", str(tmp_path / "Hermes-3-missing"))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "does not exist" in proc.stderr and "Hermes-3-missing" in proc.stderr
