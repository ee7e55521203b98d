"""validate_tool_calls: unknown names and schema violations become feedback-ready invalid calls."""

from __future__ import annotations

import copy
import json
from enum import Enum

from pydantic import BaseModel

from hermes_core.format.validation import _validator, validate_tool_calls
from hermes_core.types import InvalidToolCall, ParsedResponse, ToolCall


class Unit(Enum):
    C = "celsius"
    F = "fahrenheit"


class Stop(BaseModel):
    city: str
    nights: int = 1


def get_weather(city: str, unit: Unit = Unit.C, days: int = 1) -> str:
    """Weather for a city."""
    return ""


def plan_trip(stops: list[Stop], budget: dict[str, int] | None = None) -> str:
    """Plan a trip."""
    return ""


STRICT = {
    "name": "strict",
    "parameters": {"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": False},
}
TOOLS = [get_weather, plan_trip, STRICT]


def _check(*calls: ToolCall) -> ParsedResponse:
    return validate_tool_calls(ParsedResponse("prose", list(calls)), TOOLS)


def _only_error(call: ToolCall) -> InvalidToolCall:
    result = _check(call)
    assert result.tool_calls == []
    assert len(result.invalid_tool_calls) == 1
    return result.invalid_tool_calls[0]


def test_valid_calls_pass_unchanged():
    calls = [
        ToolCall("get_weather", {"city": "Paris"}, id="a"),
        ToolCall("get_weather", {"city": "Oslo", "unit": "fahrenheit", "days": 3}, id="b"),
        ToolCall("plan_trip", {"stops": [{"city": "Rome"}], "budget": {"food": 10}}, id="c"),
        ToolCall("strict", {}, id="d"),
    ]
    result = _check(*calls)
    assert result.tool_calls == calls
    assert result.invalid_tool_calls == []
    assert result.content == "prose"


def test_unknown_tool_lists_the_available_ones_and_keeps_id_and_name():
    bad = _only_error(ToolCall("get_wether", {"city": "Paris"}, id="call_9"))
    assert bad.error == "Unknown tool 'get_wether'; the available tools are: get_weather, plan_trip, strict."
    assert bad.id == "call_9"
    assert bad.name == "get_wether"
    assert json.loads(bad.raw) == {"name": "get_wether", "arguments": {"city": "Paris"}}


def test_missing_required_argument():
    bad = _only_error(ToolCall("get_weather", {"unit": "celsius"}))
    assert bad.error == "Invalid arguments for tool 'get_weather': argument 'city' is required."


def test_wrong_type_names_the_argument():
    bad = _only_error(ToolCall("get_weather", {"city": "Paris", "days": "x"}))
    assert (
        bad.error
        == "Invalid arguments for tool 'get_weather': argument 'days': 'x' is not of type 'integer'."
    )


def test_enum_violation():
    bad = _only_error(ToolCall("get_weather", {"city": "Paris", "unit": "kelvin"}))
    assert "argument 'unit': 'kelvin' is not one of ['celsius', 'fahrenheit']" in bad.error


def test_nested_paths_are_spelled_out():
    bad = _only_error(ToolCall("plan_trip", {"stops": [{"city": "Rome"}, {"nights": "two"}]}))
    assert "argument 'stops[1].city' is required" in bad.error
    assert "argument 'stops[1].nights': 'two' is not of type 'integer'" in bad.error
    bad = _only_error(ToolCall("plan_trip", {"stops": [], "budget": {"food": 1.5}}))
    assert bad.error.endswith("argument 'budget.food': 1.5 is not of type 'integer'.")


def test_optional_argument_of_the_wrong_type_lists_the_allowed_types():
    def f(n: int | None = None) -> None:
        """F."""

    result = validate_tool_calls(ParsedResponse("", [ToolCall("f", {"n": "x"})]), [f])
    assert (
        result.invalid_tool_calls[0].error
        == "Invalid arguments for tool 'f': argument 'n': 'x' is not of type 'integer' or 'null'."
    )


def test_unexpected_argument_when_additional_properties_are_forbidden():
    bad = _only_error(ToolCall("strict", {"a": "x", "b": 1}))
    assert bad.error == "Invalid arguments for tool 'strict': unexpected argument 'b'."


def test_many_errors_are_summarised_on_one_line():
    bad = _only_error(ToolCall("plan_trip", {"stops": [{}, {}, {}, {}, {}]}))
    assert "(and 2 more)" in bad.error
    assert "\n" not in bad.error


def test_input_is_not_mutated_and_order_is_kept():
    earlier = InvalidToolCall(raw="<tool_call>{", error="truncated", id="x")
    parsed = ParsedResponse(
        "text",
        [
            ToolCall("get_weather", {"city": "A"}, id="1"),
            ToolCall("nope", {}, id="2"),
            ToolCall("get_weather", {"city": "B"}, id="3"),
            ToolCall("get_weather", {}, id="4"),
        ],
        [earlier],
    )
    snapshot = copy.deepcopy(parsed)
    result = validate_tool_calls(parsed, TOOLS)
    assert parsed == snapshot
    assert result is not parsed
    assert [c.id for c in result.tool_calls] == ["1", "3"]
    assert [c.id for c in result.invalid_tool_calls] == ["x", "2", "4"]
    assert result.invalid_tool_calls[0] is earlier


def test_no_tools_makes_every_call_unknown():
    result = validate_tool_calls(ParsedResponse("", [ToolCall("f", {})]), [])
    assert result.invalid_tool_calls[0].error == "Unknown tool 'f'; the available tools are: (none)."


def test_validators_are_cached_per_schema():
    _validator.cache_clear()
    _check(ToolCall("get_weather", {"city": "A"}))
    _check(ToolCall("get_weather", {"city": "B"}))
    info = _validator.cache_info()
    assert info.misses == 1
    assert info.hits == 1


def test_arguments_json_cannot_carry_are_invalid():
    """A hand-built call with inf/NaN or a lone surrogate would pass the schema and break json.dumps later."""
    free = {"name": "free", "parameters": {"type": "object"}}
    for value, fragment in (
        (float("inf"), "not finite"),
        (float("nan"), "not finite"),
        ({"deep": [float("-inf")]}, "not finite"),
        ("bad \ud800 text", "surrogate"),
    ):
        result = validate_tool_calls(ParsedResponse("", [ToolCall("free", {"v": value}, id="x")]), [free])
        assert result.tool_calls == []
        bad = result.invalid_tool_calls[0]
        assert fragment in bad.error and bad.id == "x" and bad.name == "free"
        json.loads(bad.raw)  # the raw text itself is still JSON the model can be shown


def test_a_parsed_overflowing_number_never_reaches_validation_as_a_call():
    from hermes_core import parse_tool_calls

    schema = {"name": "f", "parameters": {"type": "object", "properties": {"x": {"type": "number"}}}}
    parsed = parse_tool_calls('<tool_call>{"name": "f", "arguments": {"x": 1e999}}</tool_call>')
    result = validate_tool_calls(parsed, [schema])
    assert result.tool_calls == [] and len(result.invalid_tool_calls) == 1
    assert "finite" in result.invalid_tool_calls[0].error


def test_non_finite_number_is_reported_before_schema_errors():
    schema = {"name": "f", "parameters": {"type": "object", "properties": {"x": {"type": "number"}}}}
    for value in (float("inf"), float("nan")):
        result = validate_tool_calls(ParsedResponse("", [ToolCall("f", {"x": value}, id="i")]), [schema])
        assert result.tool_calls == []
        assert result.invalid_tool_calls[0].error == (
            "Arguments of tool 'f' hold a number that is not finite (NaN or infinity), which JSON cannot represent."
        )
        assert result.invalid_tool_calls[0].id == "i"


def test_validation_keeps_the_reasoning():
    parsed = ParsedResponse("text", [ToolCall("nope", {}, id="n")], reasoning="I should call nope.")
    result = validate_tool_calls(parsed, TOOLS)
    assert result.reasoning == "I should call nope." and result.content == "text"
    assert [bad.id for bad in result.invalid_tool_calls] == ["n"]
