"""hermes-chat and hermes-demo: help, one-line errors (exit 2, no traceback), tool loading, real runs."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydantic import BaseModel

from hermes_core import cli, demo

ROOT = Path(__file__).resolve().parents[1]
TOOLS_FILE = ROOT / "examples" / "tools.py"


def run_cli(*args: str, module: str = "hermes_core.cli", stdin: str = "") -> subprocess.CompletedProcess[str]:
    """Run a CLI module in a fresh interpreter, single-threaded like the rest of the suite."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("HERMES_TEST_THREADS", "1")}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=600,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *fragments: str) -> None:
    """Exit status 2, a single error line naming the problem, and no traceback."""
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in errors[0]


def test_console_scripts_are_installed() -> None:
    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    assert scripts["hermes-chat"] == "hermes_core.cli:entry_point"
    assert scripts["hermes-demo"] == "hermes_core.demo:entry_point"


def test_help_explains_modes_options_and_exit_codes() -> None:
    proc = run_cli("--help")
    assert proc.returncode == 0
    text = proc.stdout
    assert text.startswith("usage: hermes-chat")
    for option in (
        "--tools",
        "--tool-choice",
        "--json-schema",
        "--stream",
        "--model",
        "--quantization",
        "--max-new-tokens",
        "--temperature",
        "--no-constrain",
        "--max-tool-rounds",
        "--parallel",
        "--threads",
        "--repetition-penalty",
        "--base-url",
    ):
        assert option in text
    assert "interactive" in text and "embedded SmolLM2-135M-Instruct" in text
    assert "hermes-chat --tools examples/tools.py" in text  # a worked example
    assert "Exit status" in text
    assert max(len(line) for line in text.splitlines()) <= 100  # readable in a terminal


def test_demo_help() -> None:
    proc = run_cli("--help", module="hermes_core.demo")
    assert proc.returncode == 0
    assert proc.stdout.startswith("usage: hermes-demo") and "--model" in proc.stdout


def test_missing_tools_file_is_one_line_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.py"
    proc = run_cli("--tools", str(missing), "hi")
    assert_one_line_error(proc, str(missing), "no such file")


def test_module_without_tools_is_one_line_error(tmp_path: Path) -> None:
    module = tmp_path / "helpers.py"
    module.write_text(
        "import os\n\ndef helper(x):\n    return x\n\ndef _private(y: int) -> int:\n    return y\n"
    )
    proc = run_cli("--tools", str(module), "hi")
    assert_one_line_error(proc, "defines no tools", "type hints")


def test_unknown_tools_module_is_one_line_error() -> None:
    proc = run_cli("--tools", "no_such_module_xyz", "hi")
    assert_one_line_error(proc, "no_such_module_xyz")


def test_tools_module_that_fails_to_import_is_one_line_error(tmp_path: Path) -> None:
    module = tmp_path / "broken.py"
    module.write_text("raise RuntimeError('boom')\n")
    proc = run_cli("--tools", str(module), "hi")
    assert_one_line_error(proc, "importing it failed", "boom")


@pytest.mark.parametrize(
    ("schema", "fragment"),
    [("{not json", "not valid JSON"), ('{"type": 5}', "not a valid JSON schema"), ("[1, 2]", "JSON object")],
)
def test_bad_json_schema_is_one_line_error(schema: str, fragment: str) -> None:
    assert_one_line_error(run_cli("--json-schema", schema, "hi"), fragment)


def test_missing_schema_file_is_one_line_error(tmp_path: Path) -> None:
    assert_one_line_error(run_cli("--json-schema", str(tmp_path / "s.json"), "hi"), "no such file")


def test_bad_model_path_is_one_line_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-model"
    assert_one_line_error(run_cli("--model", str(missing), "hi"), str(missing))


def test_contradictory_options_are_usage_errors() -> None:
    proc = run_cli("--tools", str(TOOLS_FILE), "--json-schema", "{}", "hi")
    assert proc.returncode == 2 and "cannot be combined" in proc.stderr and "Traceback" not in proc.stderr
    assert_one_line_error(run_cli("--tool-choice", "required", "hi"), "needs tools")
    assert_one_line_error(run_cli("--tools", str(TOOLS_FILE), "--tool-choice", "nope", "hi"), "'nope'")


def test_load_tools_collects_public_typed_functions_in_order(tmp_path: Path) -> None:
    module = tmp_path / "mine.py"
    module.write_text(
        textwrap.dedent(
            '''
            from os.path import join  # imported: not offered

            def second(b: int) -> int:
                """Second tool."""
                return b

            def first(a: str) -> str:
                """First tool."""
                return a

            def untyped(x):
                return x

            def _hidden(y: int) -> int:
                return y
            '''
        )
    )
    tools = cli.load_tools(str(module))
    assert [fn.__name__ for fn in tools] == ["second", "first"]


def test_load_tools_prefers_a_tools_list(tmp_path: Path) -> None:
    module = tmp_path / "listed.py"
    module.write_text(
        "def a(x: int) -> int:\n    return x\n\ndef b(y: int) -> int:\n    return y\n\nTOOLS = [b]\n"
    )
    assert [fn.__name__ for fn in cli.load_tools(str(module))] == ["b"]
    bad = tmp_path / "bad_list.py"
    bad.write_text("TOOLS = ['not a function']\n")
    with pytest.raises(cli.CliError, match="cannot be run"):
        cli.load_tools(str(bad))


def test_example_tools_module_loads_and_runs() -> None:
    tools = {fn.__name__: fn for fn in cli.load_tools(str(TOOLS_FILE))}
    assert set(tools) == {"get_weather", "calculate", "current_time"}
    value, ok = cli.run_tool(SimpleNamespace(name="calculate", arguments={"expression": "37 * 91"}), tools)
    assert ok and value == 3367
    value, ok = cli.run_tool(
        SimpleNamespace(name="calculate", arguments={"expression": "__import__('os')"}), tools
    )
    assert not ok and value.startswith("Error: calculate raised ValueError")
    value, ok = cli.run_tool(SimpleNamespace(name="nope", arguments={}), tools)
    assert not ok and "unknown tool 'nope'" in value


class Point(BaseModel):
    """A point on a grid (a tool parameter type that needs coercion from JSON)."""

    x: int
    y: int


def manhattan(p: Point) -> int:
    """Distance from the origin along the grid."""
    return abs(p.x) + abs(p.y)


def test_run_tool_coerces_arguments_to_hinted_types() -> None:
    call = SimpleNamespace(name="manhattan", arguments={"p": {"x": -2, "y": 3}})
    value, ok = cli.run_tool(call, {"manhattan": manhattan})
    assert ok and value == 5
    bad = SimpleNamespace(name="manhattan", arguments={"p": {"x": "left"}})
    value, ok = cli.run_tool(bad, {"manhattan": manhattan})
    assert not ok and "ValidationError" in value


def test_tool_choice_per_round_and_parallel_default() -> None:
    """The first round uses --tool-choice, later rounds auto, the last round must answer; one call per turn."""
    tools = cli.load_tools(str(TOOLS_FILE))
    args = cli.build_parser().parse_args(["--tool-choice", "required", "--max-tool-rounds", "2", "q"])
    session = cli.ChatSession(engine=None, args=args, tools=tools, out=io.StringIO())
    rounds = [session._options(i) for i in range(3)]
    assert [r["tool_choice"] for r in rounds] == ["required", "auto", "none"]
    assert all(r["parallel_tool_calls"] is False for r in rounds)
    assert session.history[0].role == "system"  # the tool-use hint small models need
    parallel = cli.build_parser().parse_args(["--parallel", "--system", "Be brief.", "q"])
    session = cli.ChatSession(engine=None, args=parallel, tools=tools, out=io.StringIO())
    assert session._options(0)["parallel_tool_calls"] is True
    assert "repetition_penalty" not in session._options(0)  # engine default unless asked
    penalised = cli.build_parser().parse_args(["--repetition-penalty", "1.2", "q"])
    options = cli.ChatSession(engine=None, args=penalised, tools=tools, out=io.StringIO())._options(0)
    assert options["repetition_penalty"] == 1.2
    assert session.history[0].content == "Be brief."


def test_threads_default_to_one_for_the_embedded_model(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        torch.set_num_threads(2)
        assert cli.configure_threads(None, None) == 1  # embedded model: one thread
        torch.set_num_threads(2)
        assert cli.configure_threads("some/model", None) == 2  # real model: torch's choice stays
        assert cli.configure_threads("some/model", 3) == 3  # --threads wins
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        torch.set_num_threads(2)
        assert cli.configure_threads(None, None) == 2  # the user's OMP_NUM_THREADS is respected
    finally:
        torch.set_num_threads(before)


def test_format_call_is_readable() -> None:
    call = SimpleNamespace(name="get_weather", arguments={"city": "Paris", "days": 2})
    assert cli.format_call(call) == 'get_weather(city="Paris", days=2)'


@pytest.mark.slow
def test_one_shot_with_example_tools_calls_and_runs_a_tool() -> None:
    proc = run_cli(
        "--tools",
        str(TOOLS_FILE),
        "--tool-choice",
        "required",
        "--max-tool-rounds",
        "1",
        "--max-new-tokens",
        "48",
        "What is the weather in Paris?",
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("-> tool call: get_weather(city=")
    result = next(line for line in lines if line.startswith("<- get_weather returned: "))
    assert (
        json.loads(result.removeprefix("<- get_weather returned: "))["condition"] == "sunny"
    )  # the tool ran
    assert lines[-1].strip() and not lines[-1].startswith(("->", "<-"))  # a final answer after the result
    assert "Tools: get_weather, calculate, current_time" in proc.stderr
    # The embedded Q4_1 model loads as int4 on a CPU with native bf16, unquantized elsewhere.
    assert re.search(
        r"Loaded in [0-9.]+ s \((int4 \(.*\), rest bfloat16|bfloat16|float32)\)\.", proc.stderr
    ), proc.stderr


@pytest.mark.slow
def test_json_mode_prints_schema_valid_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    import jsonschema

    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
        "required": ["city", "country"],
    }
    path = tmp_path / "schema.json"
    path.write_text(json.dumps(schema))
    status = cli.main(["--json-schema", str(path), "--max-new-tokens", "48", "Where is the Eiffel tower?"])
    out = capsys.readouterr().out
    assert status == 0
    jsonschema.validate(json.loads(out), schema)


@pytest.mark.slow
def test_interactive_session_streams_tool_calls_and_keeps_going(capsys: pytest.CaptureFixture[str]) -> None:
    stdin = io.StringIO("What is the weather in Tokyo?\n/reset\nWhat is the weather in London?\n")
    status = cli.main(
        [
            "--tools",
            str(TOOLS_FILE),
            "--tool-choice",
            "get_weather",
            "--stream",
            "--max-tool-rounds",
            "1",
            "--max-new-tokens",
            "40",
        ],
        stdin=stdin,
    )
    captured = capsys.readouterr()
    assert status == 0, captured.err
    calls = [line for line in captured.out.splitlines() if line.startswith("-> tool call: get_weather(")]
    assert len(calls) == 2 and "Tokyo" in calls[0] and "London" in calls[1]
    assert "cloudy" in captured.out and "light rain" in captured.out  # both tools ran
    assert "(conversation cleared)" in captured.err


@pytest.mark.slow
def test_demo_prints_call_result_and_answer(capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.main([]) == 0
    out = capsys.readouterr().out
    steps = [out.index(f"[{n}/4]") for n in range(1, 5)]
    assert steps == sorted(steps)
    assert "<tool_call>" in out and 'tool call: get_weather(city="Paris")' in out
    assert '-> {"condition": "sunny", "temperature": "22 °C"}' in out  # the tool really ran
    answer = next(line for line in out.splitlines() if line.strip().startswith("assistant:"))
    assert len(answer.split("assistant:", 1)[1].strip()) > 10


def test_demo_reports_a_missing_model_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.main(["--model", str(tmp_path / "no-model")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hermes-demo: error:") and "no-model" in err[0]


def test_reply_cut_off_at_the_token_limit_is_said_in_one_line(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The forced call ends by itself (no note); the answer after it hits --max-new-tokens (one note)."""
    module = tmp_path / "mode_tools.py"
    module.write_text(
        "from typing import Literal\n\n"
        "def set_mode(mode: Literal['fast', 'slow']) -> str:\n"
        '    """Switch the speed mode."""\n'
        "    return f'mode is {mode}'\n"
    )
    argv = ["--model", str(tiny_model_dir), "--tools", str(module), "--tool-choice", "required"]
    status = cli.main([*argv, "--max-tool-rounds", "1", "--max-new-tokens", "40", "Go fast"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "<- set_mode returned: mode is" in captured.out  # the first reply was complete
    notes = [line for line in captured.err.splitlines() if "cut off" in line]
    assert notes == [
        "hermes-chat: the reply was cut off at --max-new-tokens (40 tokens); raise it for a longer one."
    ]


def test_demo_says_when_the_answer_was_cut_off(
    tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert demo.main(["--model", str(tiny_model_dir), "--max-new-tokens", "40"]) == 0
    out = capsys.readouterr().out
    assert "tool call: get_weather(" in out
    assert (
        "(hermes-demo: the reply was cut off at --max-new-tokens (40 tokens); raise it for a longer one.)"
        in out
    )


@pytest.mark.parametrize(
    ("flag", "value"), [("--temperature", "nan"), ("--temperature", "inf"), ("--repetition-penalty", "inf")]
)
def test_non_finite_sampling_flags_are_usage_errors(flag: str, value: str, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main([flag, value, "hi"])
    assert exit_info.value.code == 2
    assert f"{flag} must be a finite number" in capsys.readouterr().err
