"""LangChain's ``create_agent`` with ``response_format``: a tool call, then a grammar-enforced structured answer.

Run from the repository root: ``python examples/langchain_structured_agent.py`` (offline, embedded model),
or ``python examples/langchain_structured_agent.py --model NousResearch/Hermes-2-Pro-Llama-3-8B
--quantization 4bit --auto``. Needs ``pip install "hermes-function-calling[langchain]"``.

``ChatHermes().profile`` declares native structured output, so ``create_agent`` takes its provider
strategy: it binds the schema as ``response_format`` (no extra "structured output" tool) and reads the
final answer's JSON text. The grammar lets each reply be either tool calls or JSON valid for the
schema. A 135M model keeps calling the tool once it has started, so a small middleware stops offering
tools once a tool has replied (``tool_choice="none"``: the reply is then the JSON answer); with a real
Hermes model pass ``--auto`` and the model decides by itself.
"""

from __future__ import annotations

import argparse
from typing import Any

from langchain.agents import create_agent
from langchain.agents.middleware import wrap_model_call
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import tool
from pydantic import BaseModel, Field

from langchain_hermes import ChatHermes


class WeatherReport(BaseModel):
    """The weather in one city."""

    city: str = Field(description="The city", max_length=40)
    temperature_c: int = Field(description="Temperature in degrees Celsius", ge=-60, le=60)
    sunny: bool = Field(description="Whether the sun is out")


@tool
def get_weather(city: str) -> str:
    """Get the current weather for a city (fixed, offline data)."""
    return f"It is sunny and 21 C in {city}."


@wrap_model_call
def answer_once_a_tool_replied(request: Any, handler: Any) -> Any:
    """One call at a time; once a tool has replied, no more tools: the reply is the structured answer."""
    settings = dict(request.model_settings)
    if any(isinstance(m, ToolMessage) for m in request.messages):
        settings["tool_choice"] = "none"
    else:
        settings["parallel_tool_calls"] = False
    return handler(request.override(model_settings=settings))


class BoundFormat(BaseCallbackHandler):
    """Records the ``response_format`` and tool names each model call was bound with."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, list[str]]] = []

    def on_chat_model_start(self, serialized: Any, messages: Any, **kwargs: Any) -> None:
        params = kwargs.get("invocation_params") or {}
        tools = [spec["function"]["name"] for spec in params.get("tools") or []]
        self.calls.append((params.get("response_format"), tools))


def strategy(bound: BoundFormat) -> str:
    """Which structured-output strategy ``create_agent`` took, from what the model was bound with."""
    response_format, tools = bound.calls[-1]
    if WeatherReport.__name__ in tools:
        return f"tool (the schema offered as a tool named {WeatherReport.__name__!r})"
    if response_format and response_format.get("type") == "json_schema":
        return f"provider (response_format json_schema {response_format['json_schema']['name']!r}, no extra tool)"
    return "none"


def main() -> None:
    """Run the agent on one question and print each step, the structured response and the strategy."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="Hermes model id or path (default: the embedded model)")
    parser.add_argument("--quantization", choices=["4bit", "8bit", "auto"])
    parser.add_argument("--auto", action="store_true", help="let the model decide when to call tools")
    parser.add_argument("--question", default="What is the weather in Paris?")
    args = parser.parse_args()

    llm = ChatHermes(model=args.model, quantization=args.quantization, max_new_tokens=64)
    middleware = [] if args.auto else [answer_once_a_tool_replied]
    agent = create_agent(llm, tools=[get_weather], response_format=WeatherReport, middleware=middleware)
    bound = BoundFormat()
    print(f"user: {args.question}")
    state = agent.invoke(
        {"messages": [("user", args.question)]}, {"recursion_limit": 10, "callbacks": [bound]}
    )
    for message in state["messages"][1:]:
        if isinstance(message, AIMessage) and message.tool_calls:
            for call in message.tool_calls:
                print(f"[model] tool call: {call['name']}({call['args']})")
        elif isinstance(message, ToolMessage):
            print(f"[tools] tool result: {message.content}")
        elif isinstance(message, AIMessage):
            print(f"[model] answer (JSON text): {message.content}")
    print(f"structured_response: {state['structured_response']!r}")
    print(f"strategy: {strategy(bound)}")


if __name__ == "__main__":
    main()
