"""``ChatHermes`` end to end on the tiny random model: invoke/stream/async, tool_choice, callbacks, options.

The tiny model's weights are random, so it never makes a valid call on its own (see the
``tool_choice="none"`` test); every valid call below is the grammar enforcing ``tool_choice``.
"""

from __future__ import annotations

import os
from typing import Any, Literal

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage
from langchain_core.tools import tool
from pydantic import BaseModel

from hermes_core import UnsupportedOptionError, get_engine
from langchain_hermes import ChatHermes
from tests.loop_ticks import ticks_while


@tool
def get_weather(city: str) -> str:
    """Get the weather for a city."""
    return f"sunny in {city}"


@tool
def get_time(tz: str) -> str:
    """Current time in a time zone."""
    return "12:00"


TOOLS = [get_weather, get_time]
ASK = "What is the weather in Paris?"
# Greedy decoding on the random model writes only newlines; sampling with a seed writes varied text.
SAMPLED = {"temperature": 1.0, "seed": 3}


def _without_ids(message: AIMessage) -> dict[str, Any]:
    """What two separate generations can share: everything but the fresh call ids."""
    return {
        "content": message.content,
        "calls": [(c["name"], c["args"]) for c in message.tool_calls],
        "invalid": [(c["name"], c["args"]) for c in message.invalid_tool_calls],
        "usage": message.usage_metadata,
        "metadata": message.response_metadata,
    }


def _sum(chunks: list[AIMessageChunk]) -> AIMessageChunk:
    total = chunks[0]
    for chunk in chunks[1:]:
        total = total + chunk
    return total


def test_invoke_reports_usage_finish_reason_and_model_name(tiny_llm, tiny_path):
    message = tiny_llm.invoke("Hello")
    assert isinstance(message, AIMessage)
    usage = message.usage_metadata
    assert usage["input_tokens"] > 0 and 0 < usage["output_tokens"] <= 40
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert message.response_metadata["finish_reason"] in ("stop", "length")
    assert message.response_metadata["model_name"] == os.path.basename(tiny_path)
    assert "<|im_end|>" not in message.content


def test_engine_is_loaded_once_and_shared_by_bound_copies_and_new_instances(tiny_llm, tiny_path):
    from hermes_core.engines.local import hermes_engine as engine_module

    tiny_llm.invoke("Hello", max_tokens=2)
    engine = tiny_llm._engine
    loaded = dict(engine_module._LOADED)
    tiny_llm.bind_tools(TOOLS, tool_choice="any").invoke(ASK, max_tokens=4)
    tiny_llm.with_structured_output({"type": "object", "properties": {}}).invoke("x", max_tokens=4)
    fresh = ChatHermes(model=tiny_path, max_tokens=3)
    fresh.invoke("Hello")
    assert tiny_llm._engine is engine
    assert fresh._engine is engine
    assert engine_module._LOADED == loaded


def test_a_ready_made_engine_is_used_as_given(tiny_path):
    engine = get_engine(tiny_path)
    llm = ChatHermes(engine=engine, max_tokens=3)
    assert llm.invoke("Hello").response_metadata["model_name"] == engine.model_name
    assert llm._get_ls_params()["ls_model_name"] == engine.model_name


@pytest.mark.parametrize(
    ("choice", "expected_name"),
    [
        ("any", None),
        ("required", None),
        (True, None),
        ({"type": "any"}, None),
        ("get_time", "get_time"),
        ({"type": "function", "function": {"name": "get_time"}}, "get_time"),
        ({"name": "get_weather"}, "get_weather"),
    ],
)
def test_forcing_tool_choices_make_the_grammar_produce_a_valid_call(tiny_llm, choice, expected_name):
    message = tiny_llm.bind_tools(TOOLS, tool_choice=choice).invoke(ASK)
    assert message.tool_calls, message
    assert all(c["id"].startswith("call_") and c["type"] == "tool_call" for c in message.tool_calls)
    assert {c["name"] for c in message.tool_calls} <= {"get_weather", "get_time"}
    if expected_name is not None:
        assert {c["name"] for c in message.tool_calls} == {expected_name}
    assert message.response_metadata["finish_reason"] == "tool_calls"


@pytest.mark.parametrize("choice", ["none", False, "auto", None])
def test_none_and_auto_leave_the_random_model_without_a_valid_call(tiny_llm, choice):
    message = tiny_llm.bind_tools(TOOLS, tool_choice=choice).invoke(ASK, max_tokens=12)
    assert message.tool_calls == []


def test_parallel_tool_calls_false_allows_at_most_one_call(tiny_llm):
    bound = tiny_llm.bind_tools(TOOLS, tool_choice="required", parallel_tool_calls=False)
    for seed in range(3):
        message = bound.invoke(ASK, temperature=1.0, seed=seed, max_tokens=60)
        assert len(message.tool_calls) + len(message.invalid_tool_calls) <= 1


def test_stream_adds_up_to_invoke_for_the_same_greedy_generation(tiny_llm):
    bound = tiny_llm.bind_tools(TOOLS, tool_choice="get_weather")
    whole = bound.invoke(ASK)
    chunks = list(bound.stream(ASK))
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    streamed = _sum(chunks)
    assert _without_ids(streamed) == _without_ids(whole)
    assert streamed.tool_calls[0]["id"].startswith("call_")


def test_sampling_with_a_seed_is_reproducible(tiny_llm):
    first = tiny_llm.invoke("Hello", temperature=1.0, seed=11, max_tokens=12)
    again = tiny_llm.invoke("Hello", temperature=1.0, seed=11, max_tokens=12)
    other = tiny_llm.invoke("Hello", temperature=1.0, seed=12, max_tokens=12)
    assert first.content and first.content == again.content
    assert other.content != first.content


async def test_async_invoke_and_stream_match_sync_without_blocking_the_loop(tiny_llm):
    bound = tiny_llm.bind_tools(TOOLS, tool_choice="any")

    async def both():
        return await bound.ainvoke(ASK), [chunk async for chunk in bound.astream(ASK)]

    (whole, chunks), ticks = await ticks_while(both())
    assert ticks > 5
    assert _without_ids(whole) == _without_ids(bound.invoke(ASK))
    assert _without_ids(_sum(chunks)) == _without_ids(whole)


class _Tokens(BaseCallbackHandler):
    def __init__(self) -> None:
        self.tokens: list[str] = []

    def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
        self.tokens.append(token)


def test_callbacks_see_every_streamed_chunk_exactly_once(tiny_llm):
    handler = _Tokens()
    chunks = list(tiny_llm.stream("Hello", config={"callbacks": [handler]}, max_tokens=12, **SAMPLED))
    assert len(handler.tokens) == len(chunks) > 2
    assert "".join(handler.tokens) == "".join(c.content for c in chunks)


def test_streaming_true_makes_invoke_report_tokens_to_callbacks(tiny_path):
    handler = _Tokens()
    llm = ChatHermes(model=tiny_path, max_tokens=12, streaming=True, **SAMPLED)
    message = llm.invoke("Hello", config={"callbacks": [handler]})
    assert len(handler.tokens) > 2
    assert "".join(handler.tokens) == message.content


def test_stop_sequences_from_the_call_and_from_the_instance_cut_the_text(tiny_llm, tiny_path):
    text = tiny_llm.invoke("Hello", max_tokens=30, **SAMPLED).content
    assert len(text) > 8, "the check needs some text to cut"
    stop = text[5:8]
    cut = tiny_llm.invoke("Hello", stop=[stop], max_tokens=30, **SAMPLED)
    assert cut.content == text[: text.index(stop)].strip()
    assert cut.response_metadata["finish_reason"] == "stop"
    instance_stop = ChatHermes(model=tiny_path, max_tokens=30, stop=[stop], **SAMPLED).invoke("Hello")
    assert instance_stop.content == cut.content


def test_get_token_ids_uses_the_models_own_tokenizer(tiny_llm):
    engine = get_engine(tiny_llm.model)
    assert tiny_llm.get_token_ids("<tool_call> hello") == engine.encode("<tool_call> hello")
    assert tiny_llm.get_num_tokens("hello world") == engine.count_tokens("hello world")


def test_unknown_per_call_options_are_refused_by_name(tiny_llm):
    with pytest.raises(UnsupportedOptionError, match="does not support 'logprobs'"):
        tiny_llm.invoke("Hello", logprobs=True)


def test_bad_option_values_reach_the_user_as_the_engines_clear_errors(tiny_llm):
    with pytest.raises(UnsupportedOptionError, match="temperature must be a finite number >= 0"):
        tiny_llm.invoke("Hello", temperature=-2)


def test_per_call_model_override_uses_that_model_without_loading_the_default(tiny_path):
    llm = ChatHermes(max_tokens=3)  # the embedded model: must stay unloaded here
    message = llm.invoke("Hello", model=tiny_path)
    assert message.response_metadata["model_name"] == os.path.basename(tiny_path)
    assert llm._engine is None
    assert llm._get_ls_params(model=tiny_path)["ls_model_name"] == tiny_path


def test_tool_round_trip_history_with_an_error_result_is_accepted(tiny_llm):
    history = [
        HumanMessage("What is 1 + 2"),
        AIMessage("", tool_calls=[{"name": "get_weather", "args": {"city": "x"}, "id": "abc123"}]),
        ToolMessage("Error: no such city.", tool_call_id="abc123", status="error"),
    ]
    message = tiny_llm.bind_tools(TOOLS).invoke(history, max_tokens=6)
    assert isinstance(message, AIMessage)


class Pet(BaseModel):
    """A pet (no numbers: the random model writes endless digits)."""

    name: str
    kind: Literal["cat", "dog"]
    indoor: bool


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_structured_output_methods_return_the_schema_type(tiny_llm, method):
    result = tiny_llm.with_structured_output(Pet, method=method).invoke("Invent a pet.", max_tokens=80)
    assert isinstance(result, Pet)


def test_structured_output_json_mode_returns_a_json_object(tiny_llm):
    result = tiny_llm.with_structured_output(None, method="json_mode").invoke("Invent a pet.", max_tokens=60)
    assert isinstance(result, dict)


def test_structured_output_include_raw_reports_parsing_errors(tiny_path):
    ok = (
        ChatHermes(model=tiny_path, max_tokens=80)
        .with_structured_output(Pet, include_raw=True)
        .invoke("A pet?")
    )
    assert isinstance(ok["raw"], AIMessage) and isinstance(ok["parsed"], Pet) and ok["parsing_error"] is None
    # cut off after 3 tokens: the JSON cannot parse, the raw message is still returned
    cut = (
        ChatHermes(model=tiny_path, max_tokens=3)
        .with_structured_output(Pet, include_raw=True)
        .invoke("A pet?")
    )
    assert cut["parsed"] is None and cut["parsing_error"] is not None
    assert cut["raw"].response_metadata["finish_reason"] == "length"
