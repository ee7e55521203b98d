"""Point ChatHermes at a real Hermes model: same code as with the embedded model, other arguments.

Offline on the embedded model (the default)::

    python examples/real_hermes_model.py

Hermes 2 Pro 8B on one GPU in 4-bit (about 6 GB of GPU memory; downloads ~16 GB once)::

    python examples/real_hermes_model.py --model NousResearch/Hermes-2-Pro-Llama-3-8B --quantization 4bit

Hermes 3 70B in 4-bit spread over the GPUs you have (about 40 GB in all)::

    python examples/real_hermes_model.py --model NousResearch/Hermes-3-Llama-3.1-70B \\
        --quantization 4bit --device-map auto

A real model decides by itself when to call a tool (``tool_choice="auto"``); the embedded 135M
model is forced to call one on its first turn (``tool_choice="any"``). Either way the grammar
guarantees that every call parses and fits the tool's schema.
"""

from __future__ import annotations

import argparse
import sys
import time

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from langchain_core.tools import tool
from tools import calculate, get_weather  # examples/tools.py

from hermes_core import HermesError
from langchain_hermes import ChatHermes

TOOLS = [tool(get_weather), tool(calculate)]
BY_NAME = {t.name: t for t in TOOLS}


def parse_args() -> argparse.Namespace:
    """Command-line options: which model, how to load it, what to ask."""
    parser = argparse.ArgumentParser(
        description="Tool calling with a real Hermes model (or the embedded one)."
    )
    parser.add_argument("--model", help="HF id, model directory or .gguf (default: embedded SmolLM2-135M)")
    parser.add_argument("--quantization", choices=["4bit", "8bit", "auto"], help="bitsandbytes quantization")
    parser.add_argument("--device-map", help='transformers device_map, e.g. "auto" to spread over GPUs')
    parser.add_argument("--tool-choice", help="default: any for the embedded model, auto for real models")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="default: 48 embedded, 512 real")
    parser.add_argument("--question", default="What is the weather in Tokyo?")
    return parser.parse_args()


def main() -> int:
    """Load, ask with tools, run the calls the model makes, and print the final answer."""
    args = parse_args()
    embedded = args.model is None
    tool_choice = args.tool_choice or ("any" if embedded else "auto")
    llm = ChatHermes(
        model=args.model,
        quantization=args.quantization,
        device_map=args.device_map,
        max_new_tokens=args.max_new_tokens or (48 if embedded else 512),
    )
    messages: list[BaseMessage] = [
        SystemMessage(
            "You are a helpful assistant. Once a tool result arrives, answer in one sentence using it."
        ),
        HumanMessage(args.question),
    ]
    print(
        f"model: {args.model or 'embedded SmolLM2-135M-Instruct'}  quantization: {args.quantization}  tool_choice: {tool_choice}"
    )
    started = time.perf_counter()
    try:
        ai = llm.bind_tools(TOOLS, tool_choice=tool_choice, parallel_tool_calls=False).invoke(messages)
    except HermesError as exc:  # e.g. the model is not downloaded and the machine is offline
        print(f"real_hermes_model: {exc}", file=sys.stderr)
        return 2
    print(f"first turn in {time.perf_counter() - started:.1f} s (includes loading the model)")
    for _ in range(3):  # a few rounds at most: run the calls, feed the results back
        if not ai.tool_calls:
            break
        messages.append(ai)
        for call in ai.tool_calls:
            result = BY_NAME[call["name"]].invoke(call)
            print(f"tool call: {call['name']}({call['args']}) -> {result.content}")
            messages.append(result)
        ai = llm.bind_tools(TOOLS, tool_choice="none" if embedded else "auto").invoke(messages)
    print(f"answer: {ai.content}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
