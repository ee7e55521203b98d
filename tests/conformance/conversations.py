"""Framework-neutral conversations and tools that every adapter must handle identically.

A conversation is a list of plain dicts (role, content, tool_calls, tool_call_id); each driver
turns it into its framework's messages. Tools are OpenAI-style dicts, so both adapters offer the
model byte-identical tool specs and any difference in output comes from the adapters themselves.
Tool arguments are enums so that even the tiny random model finishes its calls in a few tokens;
free-text cases sample with a fixed seed, because the tiny model's greedy text is only newlines.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "enum": ["Paris", "Rome", "Oslo"], "description": "The city."},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
        },
    },
}
MODE = {
    "type": "function",
    "function": {
        "name": "set_mode",
        "description": "Switch the assistant's speed mode.",
        "parameters": {
            "type": "object",
            "properties": {"mode": {"type": "string", "enum": ["fast", "slow"]}},
            "required": ["mode"],
        },
    },
}
TOOLS = [WEATHER, MODE]

ANSWER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"enum": ["Paris", "Rome", "Oslo"]}, "sunny": {"type": "boolean"}},
    "required": ["city", "sunny"],
    "additionalProperties": False,
}

_ASK = {"role": "user", "content": "What is the weather in Paris and in Rome? Answer briefly."}
_SYSTEM = {"role": "system", "content": "You are a concise weather assistant."}
_CALLS = [
    {"id": "call_paris", "name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}},
    {"id": "call_rome", "name": "get_weather", "arguments": {"city": "Rome", "unit": "celsius"}},
]


@dataclass(frozen=True)
class Case:
    """One request: the conversation, what is offered, and the per-call options."""

    id: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_choice: Any = None
    parallel_tool_calls: bool = True
    response_format: dict[str, Any] | None = None
    max_new_tokens: int = 48
    temperature: float = 0.0
    seed: int | None = None
    reasoning_budget: int | None = None

    @property
    def generation(self) -> dict[str, Any]:
        """The generation settings every driver passes the same way (to the engine call or the adapter)."""
        return {
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "seed": self.seed,
            "reasoning_budget": self.reasoning_budget,
        }


CASES = [
    Case(
        "plain_text",
        [_SYSTEM, {"role": "user", "content": "Say hello."}],
        max_new_tokens=16,
        temperature=1.0,
        seed=2,
    ),
    Case("forced_single_call", [_SYSTEM, _ASK], TOOLS, "required", parallel_tool_calls=False),
    Case("forced_named_call", [_ASK], TOOLS, "set_mode", parallel_tool_calls=False),
    Case("parallel_calls_allowed", [_ASK], TOOLS, "required", parallel_tool_calls=True, max_new_tokens=120),
    Case(
        "tools_offered_not_forced", [_SYSTEM, _ASK], TOOLS, None, max_new_tokens=40, temperature=1.0, seed=3
    ),
    Case("tool_choice_none", [_ASK], TOOLS, "none", max_new_tokens=16, temperature=1.0, seed=4),
    Case(
        "round_trip_after_parallel_calls",
        [
            _SYSTEM,
            _ASK,
            {"role": "assistant", "content": "", "tool_calls": _CALLS},
            {"role": "tool", "tool_call_id": "call_paris", "content": "18 degrees, sunny"},
            {"role": "tool", "tool_call_id": "call_rome", "content": '{"temperature": 24, "sky": "clear"}'},
        ],
        TOOLS,
        None,
        max_new_tokens=32,
        temperature=1.0,
        seed=5,
    ),
    # Cut off inside the forced call: every adapter must report the same invalid (truncated) call.
    Case(
        "truncated_call_is_invalid", [_ASK], TOOLS, "get_weather", parallel_tool_calls=False, max_new_tokens=8
    ),
    Case("json_mode", [_SYSTEM, _ASK], response_format=ANSWER_SCHEMA, max_new_tokens=40),
]
