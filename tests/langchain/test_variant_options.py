"""ChatHermes passes the variant and reasoning options through to the engine, unchanged."""

from __future__ import annotations

from typing import Literal

from langchain_core.tools import tool

from langchain_hermes import ChatHermes


@tool
def set_unit(unit: Literal["celsius", "kelvin"]) -> str:
    """Set the temperature unit."""
    return unit


def test_variant_and_reasoning_reach_the_engine(tiny_path: str) -> None:
    llm = ChatHermes(model=tiny_path, max_tokens=120, variant="qwen3", reasoning_budget=6)
    assert llm._get_engine().variant.name == "qwen3"
    assert llm._call_options(None, {})["reasoning_budget"] == 6
    assert llm._call_options(None, {"reasoning": False})["reasoning"] is False
    ai = llm.bind_tools([set_unit], tool_choice="any").invoke("Use kelvin.", temperature=1.0, seed=0)
    assert [c["name"] for c in ai.tool_calls] == ["set_unit"] and not ai.invalid_tool_calls
    assert ChatHermes(model=tiny_path)._get_engine().variant.name == "hermes-2-pro"  # read from the template
