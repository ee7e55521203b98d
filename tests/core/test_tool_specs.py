"""Tool specs from functions, pydantic models, TypedDicts and OpenAI dicts, and their error messages."""

from __future__ import annotations

import copy
import json
from enum import Enum
from typing import Annotated, Any, Literal, NotRequired, Optional, TypedDict, Union

import jsonschema
import pytest
from pydantic import BaseModel, Field

from hermes_core.errors import ToolSpecError
from hermes_core.format._docstrings import parse_docstring
from hermes_core.format.tool_specs import to_tool_spec, to_tool_specs


class Unit(Enum):
    CELSIUS = "celsius"
    FAHRENHEIT = "fahrenheit"


class Location(BaseModel):
    """A place on Earth."""

    city: str = Field(description="City name")
    country: str = "FR"


class Tree(BaseModel):
    """A recursive tree."""

    value: int
    children: list[Tree] = []


def get_weather(
    location: Location,
    unit: Unit = Unit.CELSIUS,
    days: Optional[int] = None,  # noqa: UP045 - testing the typing spelling
    mode: Literal["fast", "exact"] = "fast",
    counts: dict[str, int] | None = None,
    stops: list[Location] | None = None,
    limit: Union[int, str] = 3,  # noqa: UP007 - testing the typing spelling
) -> str:
    """Get the weather forecast.

    Uses a made-up service.

    Args:
        location: Where to look,
            described over two lines.
        unit (Unit): The temperature unit.
        days: How many days.

    Returns:
        str: the forecast.
    """
    return ""


def _walk(node: Any):
    """Every dict inside a JSON value."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


def _assert_valid_object_schema(spec: dict[str, Any]) -> dict[str, Any]:
    params = spec["function"]["parameters"]
    jsonschema.Draft202012Validator.check_schema(params)
    assert params["type"] == "object"
    json.dumps(spec)  # the prompt writes it with json.dumps
    return params


def test_function_spec_shape_description_and_arg_docs():
    spec = to_tool_spec(get_weather)
    assert list(spec) == ["type", "function"]
    assert spec["type"] == "function"
    assert list(spec["function"]) == ["name", "description", "parameters"]
    assert spec["function"]["name"] == "get_weather"
    assert spec["function"]["description"] == "Get the weather forecast.\n\nUses a made-up service."
    props = _assert_valid_object_schema(spec)["properties"]
    assert list(props) == ["location", "unit", "days", "mode", "counts", "stops", "limit"]
    assert props["location"]["description"] == "Where to look, described over two lines."
    assert props["unit"]["description"] == "The temperature unit."
    assert props["days"]["description"] == "How many days."
    assert "description" not in props["mode"]


def test_function_required_and_defaults():
    params = to_tool_spec(get_weather)["function"]["parameters"]
    assert params["required"] == ["location"]
    props = params["properties"]
    assert props["unit"]["default"] == "celsius"
    assert props["days"]["default"] is None
    assert props["mode"]["default"] == "fast"
    assert props["limit"]["default"] == 3


def test_function_types_enum_literal_optional_union_dict_list():
    props = to_tool_spec(get_weather)["function"]["parameters"]["properties"]
    assert props["unit"]["enum"] == ["celsius", "fahrenheit"]
    assert props["mode"]["enum"] == ["fast", "exact"]
    assert props["days"]["anyOf"] == [{"type": "integer"}, {"type": "null"}]
    assert props["limit"]["anyOf"] == [{"type": "integer"}, {"type": "string"}]
    assert props["counts"]["anyOf"][0] == {"additionalProperties": {"type": "integer"}, "type": "object"}
    stops = props["stops"]["anyOf"][0]
    assert stops["type"] == "array"
    assert stops["items"]["properties"]["city"] == {"description": "City name", "type": "string"}


def test_nested_models_are_inlined_without_titles():
    params = to_tool_spec(get_weather)["function"]["parameters"]
    assert "$defs" not in params
    for node in _walk(params):
        assert "$ref" not in node
        assert not isinstance(node.get("title"), str)
    location = params["properties"]["location"]
    assert location["type"] == "object"
    assert location["required"] == ["city"]
    assert location["properties"]["country"] == {"default": "FR", "type": "string"}


def test_inlined_schema_accepts_and_rejects_like_the_function_would():
    validator = jsonschema.Draft202012Validator(to_tool_spec(get_weather)["function"]["parameters"])
    assert validator.is_valid({"location": {"city": "Paris"}, "unit": "fahrenheit", "counts": {"a": 1}})
    assert not validator.is_valid({"location": {"country": "FR"}})
    assert not validator.is_valid({"location": {"city": "Paris"}, "unit": "kelvin"})
    assert not validator.is_valid({"location": {"city": "Paris"}, "counts": {"a": "x"}})


def test_property_named_title_is_kept():
    class Book(BaseModel):
        """A book."""

        title: str
        author: str = Field(title="Custom", description="Who wrote it")

    params = to_tool_spec(Book)["function"]["parameters"]
    assert params["properties"]["title"] == {"type": "string"}
    assert params["properties"]["author"] == {"description": "Who wrote it", "type": "string"}
    assert params["required"] == ["title", "author"]


def test_recursive_model_keeps_defs_and_stays_valid():
    params = to_tool_spec(Tree)["function"]["parameters"]
    _assert_valid_object_schema(to_tool_spec(Tree))
    assert "$defs" in params
    validator = jsonschema.Draft202012Validator(params)
    assert validator.is_valid({"value": 1, "children": [{"value": 2, "children": []}]})
    assert not validator.is_valid({"value": 1, "children": [{"value": "x"}]})


def test_pydantic_model_spec_uses_class_name_and_own_docstring():
    spec = to_tool_spec(Location)
    assert spec["function"]["name"] == "Location"
    assert spec["function"]["description"] == "A place on Earth."
    assert spec["function"]["parameters"] == {
        "type": "object",
        "properties": {
            "city": {"description": "City name", "type": "string"},
            "country": {"default": "FR", "type": "string"},
        },
        "required": ["city"],
    }

    class NoDoc(BaseModel):
        x: int

    assert to_tool_spec(NoDoc)["function"]["description"] == ""


def test_pydantic_model_attributes_section_describes_fields():
    class Order(BaseModel):
        """Place an order.

        Attributes:
            item: What to buy.
            qty: How many.
        """

        item: str
        qty: int = Field(1, description="Explicit wins")

    spec = to_tool_spec(Order)
    assert spec["function"]["description"] == "Place an order."
    props = spec["function"]["parameters"]["properties"]
    assert props["item"]["description"] == "What to buy."
    assert props["qty"]["description"] == "Explicit wins"


def test_typeddict_spec():
    class Search(TypedDict, total=False):
        """Search the web.

        Args:
            query: What to search for.
        """

        query: str
        limit: int

    spec = to_tool_spec(Search)
    assert spec["function"]["name"] == "Search"
    assert spec["function"]["description"] == "Search the web."
    params = _assert_valid_object_schema(spec)
    assert params["properties"] == {
        "query": {"type": "string", "description": "What to search for."},
        "limit": {"type": "integer"},
    }
    assert "required" not in params


def test_typeddict_required_keys_and_nested_model():
    class Booking(TypedDict):
        where: Location
        nights: NotRequired[int]

    params = _assert_valid_object_schema(to_tool_spec(Booking))
    assert params["required"] == ["where"]
    assert params["properties"]["nights"] == {"type": "integer"}
    assert params["properties"]["where"]["properties"]["city"]["type"] == "string"


def test_parameter_names_that_clash_with_pydantic_still_work():
    def odd(model_config: str, json: int, _private: bool = False) -> None:
        """Odd names."""

    params = to_tool_spec(odd)["function"]["parameters"]
    assert list(params["properties"]) == ["model_config", "json", "_private"]
    assert params["required"] == ["model_config", "json"]


def test_annotated_constraints_and_descriptions_are_kept():
    def count(
        n: Annotated[int, Field(ge=1, description="How many")] = 2,
        label: Annotated[str, Field(max_length=5)] = "x",
    ) -> None:
        """Count.

        Args:
            n: Loses to the explicit Field description.
            label: Docstring text.
        """

    props = to_tool_spec(count)["function"]["parameters"]["properties"]
    assert props["n"] == {"default": 2, "description": "How many", "minimum": 1, "type": "integer"}
    assert props["label"] == {
        "default": "x",
        "description": "Docstring text.",
        "maxLength": 5,
        "type": "string",
    }


def test_function_without_docstring_or_parameters():
    def ping() -> str:
        return "pong"

    assert to_tool_spec(ping) == {
        "type": "function",
        "function": {"name": "ping", "description": "", "parameters": {"type": "object", "properties": {}}},
    }


def test_openai_dict_is_validated_copied_and_passed_through():
    tool = {
        "type": "function",
        "function": {
            "name": "get_time",
            "description": "Current time.",
            "parameters": {
                "type": "object",
                "properties": {"tz": {"type": "string", "title": "Tz"}},
                "required": ["tz"],
            },
        },
    }
    original = copy.deepcopy(tool)
    spec = to_tool_spec(tool)
    assert spec == original
    assert tool == original
    spec["function"]["parameters"]["properties"]["tz"]["type"] = "integer"
    assert tool == original


def test_flat_dict_is_wrapped_and_missing_parameters_filled():
    spec = to_tool_spec({"name": "noop", "description": "Nothing."})
    assert spec == {
        "type": "function",
        "function": {
            "name": "noop",
            "description": "Nothing.",
            "parameters": {"type": "object", "properties": {}},
        },
    }
    flat = {"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "integer"}}}}
    assert to_tool_spec(flat)["function"]["parameters"] == flat["parameters"]


@pytest.mark.parametrize(
    ("tool", "fragment"),
    [
        ({"name": "bad name", "parameters": {"type": "object"}}, "^[a-zA-Z0-9_-]{1,64}$"),
        ({"name": "x" * 65}, "rename it"),
        ({"name": "f", "parameters": {"type": "array", "items": {}}}, "must be an object schema"),
        (
            {"name": "f", "parameters": {"type": "object", "properties": {"a": {"type": "nope"}}}},
            "not a valid JSON schema at properties/a/type",
        ),
        ({"name": "f", "parameters": "object"}, "must be a JSON schema dict"),
        ({"type": "function"}, "not an OpenAI tool"),
        ({"name": "f", "description": 3}, "description must be a string"),
    ],
)
def test_bad_dicts_raise_clear_errors(tool, fragment):
    with pytest.raises(ToolSpecError) as info:
        to_tool_spec(tool)
    assert fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_function_without_hints_names_the_parameter_and_fix():
    def add(a, b: int) -> int:
        return b

    with pytest.raises(ToolSpecError, match=r"Parameter 'a' of function 'add' has no type hint; annotate it"):
        to_tool_spec(add)


@pytest.mark.parametrize("star", ["args", "kwargs"])
def test_variadic_signatures_are_rejected(star):
    def with_args(*args: int) -> None:
        """Nope."""

    def with_kwargs(x: int, **kwargs: int) -> None:
        """Nope."""

    fn = with_args if star == "args" else with_kwargs
    with pytest.raises(
        ToolSpecError, match=rf"Function '{fn.__name__}' takes \*+{star}.*explicit, typed parameters"
    ):
        to_tool_spec(fn)


class Opaque:
    """Not a JSON type."""


def test_unschematic_type_names_parameter():
    def use(thing: Opaque) -> None:
        """Uses a thing."""

    with pytest.raises(ToolSpecError, match=r"Parameter 'thing' of function 'use' has type .*no JSON schema"):
        to_tool_spec(use)


def test_unsupported_objects_and_bad_names():
    with pytest.raises(ToolSpecError, match="pass a function, a pydantic BaseModel class"):
        to_tool_spec(42)
    with pytest.raises(ToolSpecError, match="class 'Unit'"):
        to_tool_spec(Unit)
    with pytest.raises(ToolSpecError, match="Invalid tool name '<lambda>'"):
        to_tool_spec(lambda x: x)
    assert issubclass(ToolSpecError, ValueError)


def test_bound_method_skips_self():
    class Api:
        def lookup(self, key: str) -> str:
            """Look a key up."""
            return key

    params = to_tool_spec(Api().lookup)["function"]["parameters"]
    assert list(params["properties"]) == ["key"]


def test_to_tool_specs_mixes_kinds_and_rejects_duplicates():
    specs = to_tool_specs([get_weather, Location, {"name": "noop"}])
    assert [s["function"]["name"] for s in specs] == ["get_weather", "Location", "noop"]
    assert to_tool_specs(None) == []
    with pytest.raises(ToolSpecError, match=r"Duplicate tool name 'noop' \(tools #0 and #2\)"):
        to_tool_specs([{"name": "noop"}, Location, {"name": "noop", "description": "again"}])


def test_docstring_parser_sections_and_types():
    doc = parse_docstring(
        """Summary line.

        More detail.

        Args:
            a (int): First.
            b: Second,
                continued.
            *rest: Ignored star.

        Raises:
            ValueError: never an argument.
        """
    )
    assert doc.summary == "Summary line.\n\nMore detail."
    assert doc.args == {"a": "First.", "b": "Second, continued.", "rest": "Ignored star."}
    assert parse_docstring(None).summary == ""


def test_specs_are_cached_but_returned_as_fresh_copies():
    first = to_tool_spec(get_weather)
    first["function"]["parameters"]["properties"]["unit"]["enum"].append("kelvin")
    second = to_tool_spec(get_weather)
    assert second["function"]["parameters"]["properties"]["unit"]["enum"] == ["celsius", "fahrenheit"]
    assert second is not first


def test_unhashable_objects_still_work_or_fail_clearly():
    class Unhashable:
        __hash__ = None  # type: ignore[assignment]

        def run(self, q: str) -> str:
            """Run a query."""
            return q

    assert to_tool_spec(Unhashable().run)["function"]["name"] == "run"
    with pytest.raises(ToolSpecError, match="pass a function"):
        to_tool_spec([1, 2])


def test_unresolvable_type_hints_are_named_for_functions_and_typeddicts() -> None:
    def find(item: UndefinedHint) -> str:  # noqa: F821
        """Find an item."""
        return ""

    class Query(TypedDict):
        """A query."""

        item: UndefinedHint  # noqa: F821

    with pytest.raises(ToolSpecError, match=r"type hints of 'find' \(.*UndefinedHint.*\); import the hinted"):
        to_tool_spec(find)
    with pytest.raises(ToolSpecError, match=r"type hints of TypedDict 'Query' \(.*UndefinedHint.*\); import"):
        to_tool_spec(Query)
