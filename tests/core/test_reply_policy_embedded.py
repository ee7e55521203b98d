"""Repeated calls and budget-cut answers on the embedded SmolLM2-135M, as LangChain's standard suite meets them.

With ``tool_choice="required"`` and parallel calls allowed, greedy SmolLM2 repeats ``magic_function(input=3)``
until the budget ends; asked for a joke as JSON, it loops inside the string ("The cat was a cat, and
the cat was a cat, ...") until the budget ends. One plain budget of 256 tokens, as a user would set it.
"""

from __future__ import annotations

import json

import jsonschema
import pytest

from hermes_core import get_engine

pytestmark = pytest.mark.slow

MAGIC = {
    "type": "function",
    "function": {
        "name": "magic_function",
        "description": "Apply a magic function to an input.",
        "parameters": {
            "type": "object",
            "properties": {"input": {"type": "integer", "exclusiveMinimum": -1000, "exclusiveMaximum": 1000}},
            "required": ["input"],
        },
    },
}
JOKE = {
    "title": "Joke",
    "description": "Joke to tell user.",
    "type": "object",
    "properties": {
        "setup": {"type": "string", "description": "question to set up a joke"},
        "punchline": {"type": "string", "description": "answer to resolve the joke"},
    },
    "required": ["setup", "punchline"],
}
BUDGET = 256


@pytest.fixture(scope="module")
def engine():
    # The load these loops were recorded with: the default (int4) load loops inside "punchline" instead.
    return get_engine(torch_dtype="bfloat16")


def test_a_forced_call_is_made_once(engine) -> None:
    ask = [{"role": "user", "content": "What is the value of magic_function(3)? Use the tool."}]
    options = {"tools": [MAGIC], "tool_choice": "required", "max_new_tokens": BUDGET}
    repeats = engine.generate(ask, duplicate_tool_calls="keep", **options)
    assert len(repeats.tool_calls) > 1  # what the model does when repeats are kept
    result = engine.generate(ask, **options)
    assert [(c.name, c.arguments) for c in result.tool_calls] == [("magic_function", {"input": 3})]
    assert not result.invalid_tool_calls and result.finish_reason == "tool_calls"
    assert [d.reason for d in result.dropped] == ["duplicate_call"]


@pytest.mark.parametrize("how", ["json_mode", "forced_tool"])
def test_a_looping_answer_is_finished_validly_within_the_budget(engine, how: str) -> None:
    ask = [{"role": "user", "content": "Tell me a joke about cats."}]
    if how == "json_mode":
        result = engine.generate(ask, response_format=JOKE, max_new_tokens=BUDGET)
        value = json.loads(result.content)
    else:
        tool = {
            "type": "function",
            "function": {"name": "Joke", "description": JOKE["description"], "parameters": JOKE},
        }
        result = engine.generate(
            ask, tools=[tool], tool_choice="Joke", parallel_tool_calls=False, max_new_tokens=BUDGET
        )
        assert len(result.tool_calls) == 1 and not result.invalid_tool_calls, result.raw_text
        value = result.tool_calls[0].arguments
    jsonschema.validate(value, JOKE)
    assert result.usage.completion_tokens <= BUDGET
    assert result.finish_reason == "length"  # the model loops in "setup" until the budget ends
    assert result.appended_text.startswith('", "punchline": ')
    assert result.raw_text.endswith(result.appended_text)
