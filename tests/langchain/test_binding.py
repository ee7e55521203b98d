"""Construction, ``bind_tools`` and ``with_structured_output`` wiring: checked at bind time, no model loaded."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pytest
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.output_parsers.openai_tools import JsonOutputKeyToolsParser, PydanticToolsParser
from langchain_core.tools import tool
from pydantic import BaseModel, Field
from typing_extensions import TypedDict

from hermes_core import ToolSpecError, UnsupportedOptionError
from langchain_hermes import ChatHermes


@tool
def get_weather(city: str) -> str:
    """Get the weather for a city."""
    return f"sunny in {city}"


def get_time(tz: str) -> str:
    """Current time in a time zone.

    Args:
        tz: IANA time zone name.
    """
    return "12:00"


class Person(BaseModel):
    """A person to remember."""

    name: str = Field(description="full name")
    age: int


class Movie(TypedDict):
    """A movie."""

    title: Annotated[str, ..., "the title"]
    year: int


OPENAI_TOOL = {
    "type": "function",
    "function": {
        "name": "lookup",
        "description": "Look a word up.",
        "parameters": {"type": "object", "properties": {"word": {"type": "string"}}, "required": ["word"]},
    },
}
ALL_TOOLS = [get_weather, get_time, Person, Movie, OPENAI_TOOL]


def _bound_kwargs(runnable) -> dict:
    return runnable.kwargs if hasattr(runnable, "kwargs") else runnable.first.kwargs


def test_construction_does_not_load_a_model():
    llm = ChatHermes()
    assert llm._engine is None
    assert llm._get_ls_params()["ls_model_name"] == "SmolLM2-135M-Instruct"
    assert ChatHermes(max_tokens=7).max_new_tokens == 7
    assert ChatHermes(max_new_tokens=9).max_new_tokens == 9


def test_model_accepts_a_path_and_points_loaded_objects_to_engine():
    assert ChatHermes(model=Path("/models/hermes")).model == "/models/hermes"
    with pytest.raises(ValueError, match=r"engine=hermes_core.get_engine\(\(model, tokenizer\)\)"):
        ChatHermes(model=(object(), object()))


@pytest.mark.parametrize("key", ["api_key", "timeout", "max_retries", "dialect"])
def test_server_arguments_without_base_url_are_refused_with_the_reason(key):
    with pytest.raises(ValueError, match=f"'{key}' applies only with base_url.*Remove it"):
        ChatHermes(**{key: 1})


@pytest.mark.parametrize("key", ["quantization", "device_map", "torch_dtype"])
def test_load_options_with_base_url_are_refused_with_the_reason(key):
    with pytest.raises(ValueError, match=f"'{key}' applies only to a local model.*Remove it"):
        ChatHermes(base_url="http://127.0.0.1:8080", **{key: "auto"})


def test_base_url_selects_a_server_engine_without_connecting():
    llm = ChatHermes(
        base_url="http://127.0.0.1:8080", api_key="sk-x", timeout=5, max_retries=0, dialect="vllm"
    )
    assert llm._engine is None and "sk-x" not in repr(llm)
    assert llm._load_options() == {
        "base_url": "http://127.0.0.1:8080",
        "dialect": "vllm",
        "api_key": "sk-x",
        "timeout": 5,
        "max_retries": 0,
    }
    assert llm._identifying_params["base_url"] == "http://127.0.0.1:8080"


def test_unknown_constructor_arguments_are_named_with_the_supported_ones():
    with pytest.raises(ValueError, match=r"unknown argument\(s\) 'max_lenght'.*max_new_tokens"):
        ChatHermes(max_lenght=5)


@pytest.mark.parametrize(("field", "value"), [("temperature", -1), ("top_p", 1.5), ("max_tokens", 0)])
def test_out_of_range_sampling_settings_are_refused(field, value):
    with pytest.raises(ValueError, match=field.replace("max_tokens", "max_new_tokens|max_tokens")):
        ChatHermes(**{field: value})


def test_bind_tools_converts_every_tool_form_to_openai_dicts():
    bound = ChatHermes().bind_tools(ALL_TOOLS)
    specs = _bound_kwargs(bound)["tools"]
    assert [s["function"]["name"] for s in specs] == ["get_weather", "get_time", "Person", "Movie", "lookup"]
    assert all(s["type"] == "function" for s in specs)
    person = specs[2]["function"]["parameters"]
    assert person["required"] == ["name", "age"]
    assert specs[1]["function"]["parameters"]["properties"]["tz"]["description"] == "IANA time zone name."


@pytest.mark.parametrize(
    "choice",
    [
        "auto",
        "none",
        "any",
        "required",
        True,
        False,
        "get_weather",
        {"type": "function", "function": {"name": "lookup"}},
        {"type": "any"},
    ],
)
def test_every_tool_choice_form_is_accepted_and_passed_on(choice):
    bound = ChatHermes().bind_tools(ALL_TOOLS, tool_choice=choice)
    assert _bound_kwargs(bound)["tool_choice"] == choice


def test_unknown_tool_choice_name_fails_at_bind_time_naming_the_tools():
    with pytest.raises(UnsupportedOptionError, match=r"unknown tool 'get_wether'.*get_time, get_weather"):
        ChatHermes().bind_tools([get_weather, get_time], tool_choice="get_wether")


def test_malformed_tool_choice_fails_at_bind_time():
    with pytest.raises(UnsupportedOptionError, match="Unsupported tool_choice"):
        ChatHermes().bind_tools([get_weather], tool_choice={"type": "function"})


def test_forcing_a_call_without_tools_fails_at_bind_time():
    with pytest.raises(UnsupportedOptionError, match="requires at least one tool"):
        ChatHermes().bind_tools([], tool_choice="any")


def test_unconvertible_tool_is_named_by_position_in_one_line():
    with pytest.raises(
        ToolSpecError, match=r"tools\[1\] \(42\): an int is not a tool; pass a @tool"
    ) as caught:
        ChatHermes().bind_tools([get_weather, 42])
    assert "\n" not in str(caught.value)


def test_function_without_type_hints_is_refused_naming_the_parameter():
    def lookup(word):
        return word

    with pytest.raises(ToolSpecError, match=r"tools\[0\] \(lookup\): Parameter 'word' .* has no type hint"):
        ChatHermes().bind_tools([lookup])


def test_a_single_tool_not_in_a_list_is_refused_with_the_fix():
    with pytest.raises(ToolSpecError, match="wrap it in"):
        ChatHermes().bind_tools(get_weather)


def test_bind_tools_refuses_unknown_options_and_non_bool_flags():
    with pytest.raises(UnsupportedOptionError, match="does not support 'frequency_penalty'"):
        ChatHermes().bind_tools([get_weather], frequency_penalty=0.5)
    with pytest.raises(UnsupportedOptionError, match="parallel_tool_calls must be True, False or None"):
        ChatHermes().bind_tools([get_weather], parallel_tool_calls="yes")


def test_bind_tools_passes_parallel_and_generation_options():
    bound = ChatHermes().bind_tools([get_weather], parallel_tool_calls=False, temperature=0.3, strict=True)
    kwargs = _bound_kwargs(bound)
    assert kwargs["parallel_tool_calls"] is False
    assert kwargs["temperature"] == 0.3
    assert kwargs["tools"][0]["function"]["strict"] is True


def test_structured_output_json_schema_binds_the_schema_as_response_format():
    chain = ChatHermes().with_structured_output(Person)
    kwargs = _bound_kwargs(chain.first)
    assert kwargs["response_format"]["properties"].keys() == {"name", "age"}
    assert kwargs["ls_structured_output_format"]["kwargs"]["method"] == "json_schema"
    assert isinstance(chain.last, PydanticOutputParser)
    assert isinstance(ChatHermes().with_structured_output(Movie).last, JsonOutputParser)


def test_structured_output_json_schema_dict_is_used_as_given():
    schema = {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}
    chain = ChatHermes().with_structured_output(schema)
    assert _bound_kwargs(chain.first)["response_format"] == schema


def test_structured_output_function_calling_forces_the_schema_tool():
    chain = ChatHermes().with_structured_output(Person, method="function_calling")
    kwargs = _bound_kwargs(chain.first)
    assert kwargs["tool_choice"] == "Person"
    assert kwargs["parallel_tool_calls"] is False
    assert isinstance(chain.last, PydanticToolsParser)
    assert isinstance(
        ChatHermes().with_structured_output(Movie, method="function_calling").last, JsonOutputKeyToolsParser
    )


def test_structured_output_json_mode_uses_a_given_schema_else_any_json_object():
    chain = ChatHermes().with_structured_output(Person, method="json_mode")
    assert _bound_kwargs(chain.first)["response_format"]["properties"].keys() == Person.model_fields.keys()
    schemaless = ChatHermes().with_structured_output(None, method="json_mode")
    assert _bound_kwargs(schemaless.first)["response_format"] == {"type": "json_object"}
    assert ChatHermes().with_structured_output(None, method="json_mode") is not None


def test_structured_output_errors_name_the_problem():
    with pytest.raises(UnsupportedOptionError, match="Unknown structured output method 'xml'"):
        ChatHermes().with_structured_output(Person, method="xml")
    with pytest.raises(UnsupportedOptionError, match="needs a schema"):
        ChatHermes().with_structured_output(None)
    with pytest.raises(UnsupportedOptionError, match="does not take 'tools'"):
        ChatHermes().with_structured_output(Person, tools=[])


def test_model_can_be_given_positionally():
    assert ChatHermes("NousResearch/Hermes-2-Pro-Llama-3-8B", quantization="4bit").model == (
        "NousResearch/Hermes-2-Pro-Llama-3-8B"
    )
    with pytest.raises(ValueError, match="model twice"):
        ChatHermes("a", model="b")


def test_pydantic_v1_models_still_convert_through_langchain():
    from pydantic import v1

    class OldPerson(v1.BaseModel):
        """A person, pydantic 1 style."""

        name: str

    spec = _bound_kwargs(ChatHermes().bind_tools([OldPerson]))["tools"][0]["function"]
    assert spec["name"] == "OldPerson" and spec["parameters"]["required"] == ["name"]
    schema = _bound_kwargs(ChatHermes().with_structured_output(OldPerson).first)["response_format"]
    assert schema["properties"].keys() == {"name"}
