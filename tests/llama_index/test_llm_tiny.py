"""HermesLLM end to end on the tiny random model: every endpoint, tools, streaming, async, JSON mode.

The tiny model's words are random, so these tests assert structure (grammar-enforced calls,
schema-valid arguments, stream == non-stream, usage, callbacks), never wording.
"""

from __future__ import annotations

import json

import jsonschema
import pytest
from llama_index.core.base.llms.types import ChatMessage, ChatResponse, CompletionResponse, ToolCallBlock
from llama_index.core.callbacks import CallbackManager, CBEventType, LlamaDebugHandler

from hermes_core.errors import UnsupportedOptionError
from llama_index_hermes import HermesLLM
from tests.loop_ticks import ticks_while

USER = [ChatMessage(role="user", content="What is the weather in Paris?")]
# The tiny model's greedy free text is only newlines (which the core trims away); seeded sampling
# gives it real, reproducible text to stream.
SAMPLED = {"temperature": 1.0, "seed": 1}


def _calls(response: ChatResponse) -> list[tuple[str, dict]]:
    return [(b.tool_name, b.tool_kwargs) for b in response.message.blocks if isinstance(b, ToolCallBlock)]


def _ids(response: ChatResponse) -> list[str | None]:
    return [b.tool_call_id for b in response.message.blocks if isinstance(b, ToolCallBlock)]


def _schema(tools, name: str) -> dict:
    return next(t.metadata.get_parameters_dict() for t in tools if t.metadata.name == name)


def test_metadata_is_cheap_then_exact(tiny_model_dir, tiny_engine) -> None:
    llm = HermesLLM(model=str(tiny_model_dir), max_new_tokens=7)
    before = llm.metadata
    assert llm._engine is None  # reading metadata loaded nothing
    assert (before.is_chat_model, before.is_function_calling_model, before.num_output) == (True, True, 7)
    assert llm.engine is tiny_engine  # the process-level cache is shared
    after = llm.metadata
    assert after.context_window == tiny_engine.context_window == before.context_window == 2048
    assert after.model_name == tiny_engine.model_name == before.model_name


def test_engine_options_select_the_shared_engine(tiny_model_dir) -> None:
    from hermes_core import get_engine

    llm = HermesLLM(model=str(tiny_model_dir), prefix_cache=False)
    assert llm.engine is get_engine(str(tiny_model_dir), prefix_cache=False)
    assert llm.engine.prefix_cache is None


async def test_first_async_call_loads_the_engine_off_the_loop(tiny_model_dir, tiny_engine) -> None:
    llm = HermesLLM(model=str(tiny_model_dir), max_new_tokens=4)
    assert llm._engine is None
    response = await llm.achat(USER)
    assert llm._engine is tiny_engine and response.raw["usage"]["completion_tokens"] <= 4


def test_server_options_need_base_url_and_load_options_need_a_local_model() -> None:
    from hermes_core.errors import UnsupportedOptionError

    with pytest.raises(UnsupportedOptionError, match="'api_key' applies only with base_url"):
        HermesLLM(api_key="sk-x")
    with pytest.raises(UnsupportedOptionError, match="'quantization' applies only to a local model"):
        HermesLLM(base_url="http://127.0.0.1:8080", quantization="4bit")
    llm = HermesLLM(base_url="http://127.0.0.1:8080", api_key="sk-x", timeout=5)
    assert llm._engine is None and "sk-x" not in repr(llm)
    assert llm._load_options() == {"base_url": "http://127.0.0.1:8080", "api_key": "sk-x", "timeout": 5}


def test_context_window_override_before_loading(tiny_model_dir) -> None:
    assert HermesLLM(model=str(tiny_model_dir), context_window=512).metadata.context_window == 512


def test_required_tool_call_is_schema_valid_with_stable_ids(tiny_llm, weather_tools) -> None:
    response = tiny_llm.chat_with_tools(weather_tools, chat_history=USER, tool_required=True)
    selections = tiny_llm.get_tool_calls_from_response(response)
    assert len(selections) == 1  # allow_parallel_tool_calls defaults to False
    [selection] = selections
    jsonschema.validate(selection.tool_kwargs, _schema(weather_tools, selection.tool_name))
    assert [selection.tool_id] == _ids(response)
    mirrored = response.message.additional_kwargs["tool_calls"]
    assert [(c["id"], c["function"]["name"]) for c in mirrored] == [(selection.tool_id, selection.tool_name)]
    assert "<tool_call" not in (response.message.content or "")
    assert response.raw["finish_reason"] == "tool_calls"
    assert json.loads(json.dumps(response.raw)) == response.raw
    usage = response.raw["usage"]
    assert (
        response.additional_kwargs == usage
        and usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    )
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0


def test_tool_choice_by_name_forces_that_tool(tiny_llm, weather_tools) -> None:
    response = tiny_llm.chat_with_tools(weather_tools, chat_history=USER, tool_choice="set_mode")
    assert [name for name, _ in _calls(response)] == ["set_mode"]
    jsonschema.validate(_calls(response)[0][1], _schema(weather_tools, "set_mode"))


def test_tool_choice_none_makes_no_call(tiny_llm, weather_tools) -> None:
    response = tiny_llm.chat_with_tools(
        weather_tools, chat_history=USER, tool_choice="none", max_new_tokens=12
    )
    assert _calls(response) == []
    assert tiny_llm.get_tool_calls_from_response(response, error_on_no_tool_call=False) == []
    with pytest.raises(ValueError, match="Expected at least one tool call"):
        tiny_llm.get_tool_calls_from_response(response)


def test_parallel_calls_only_when_allowed(tiny_llm, weather_tools) -> None:
    single = tiny_llm.chat_with_tools(
        weather_tools, chat_history=USER, tool_required=True, max_new_tokens=160
    )
    assert len(_calls(single)) == 1
    streamed = list(
        tiny_llm.stream_chat_with_tools(
            weather_tools, chat_history=USER, tool_required=True, max_new_tokens=160
        )
    )
    assert all(len(_calls(chunk)) <= 1 for chunk in streamed) and len(_calls(streamed[-1])) == 1


def test_stream_chat_matches_chat(tiny_llm, weather_tools) -> None:
    kwargs = {
        "chat_history": USER,
        "tool_required": True,
        "allow_parallel_tool_calls": True,
        "max_new_tokens": 96,
    }
    whole = tiny_llm.chat_with_tools(weather_tools, **kwargs)
    chunks = list(tiny_llm.stream_chat_with_tools(weather_tools, **kwargs))
    assert chunks, "stream produced no chunks"
    deltas = [chunk.delta or "" for chunk in chunks]
    assert not any("<tool_call" in d or "</tool_call" in d for d in deltas)
    assert "".join(deltas) == chunks[-1].message.content
    final = chunks[-1]
    assert final.message.content == whole.message.content
    assert _calls(final) == _calls(whole)
    seen: dict[int, str | None] = {}
    for chunk in chunks:  # once a call appears, it keeps its position and id
        for position, call_id in enumerate(_ids(chunk)):
            assert seen.setdefault(position, call_id) == call_id
    assert final.raw["finish_reason"] == whole.raw["finish_reason"]
    assert final.additional_kwargs == whole.additional_kwargs


def test_plain_chat_stream_text_accumulates(tiny_llm) -> None:
    chunks = list(tiny_llm.stream_chat(USER, max_new_tokens=16, **SAMPLED))
    whole = tiny_llm.chat(USER, max_new_tokens=16, **SAMPLED)
    assert len(chunks) > 2 and whole.message.content
    running = ""
    for chunk in chunks:
        running += chunk.delta or ""
        assert chunk.message.content == running
    assert chunks[-1].message.content == whole.message.content == running


async def test_async_endpoints_match_sync(tiny_llm, weather_tools) -> None:
    kwargs = {"chat_history": USER, "tool_required": True, "max_new_tokens": 96}
    whole = tiny_llm.chat_with_tools(weather_tools, **kwargs)
    awaited = await tiny_llm.achat_with_tools(weather_tools, **kwargs)
    assert (awaited.message.content, _calls(awaited)) == (whole.message.content, _calls(whole))
    chunks = [chunk async for chunk in await tiny_llm.astream_chat_with_tools(weather_tools, **kwargs)]
    assert not any("<tool_call" in (c.delta or "") for c in chunks)
    assert (chunks[-1].message.content, _calls(chunks[-1])) == (whole.message.content, _calls(whole))


async def test_async_never_blocks_the_loop(tiny_llm) -> None:
    response, ticks = await ticks_while(tiny_llm.achat(USER, max_new_tokens=48, **SAMPLED))
    assert isinstance(response, ChatResponse) and ticks > 3

    async def consume() -> list[ChatResponse]:
        return [chunk async for chunk in await tiny_llm.astream_chat(USER, max_new_tokens=48, **SAMPLED)]

    chunks, ticks = await ticks_while(consume())
    assert chunks and ticks > 3


def test_closing_a_stream_stops_generation(tiny_llm, tiny_engine) -> None:
    stream = tiny_llm.stream_chat(USER, max_new_tokens=400, **SAMPLED)
    next(stream)
    stream.close()
    assert tiny_engine.stats.last_completion_tokens < 400
    assert tiny_llm.chat(USER, max_new_tokens=4).raw["usage"]["completion_tokens"] <= 4


async def test_closing_an_async_stream_stops_generation(tiny_llm, tiny_engine) -> None:
    stream = await tiny_llm.astream_chat(USER, max_new_tokens=400, **SAMPLED)
    await stream.__anext__()
    await stream.aclose()
    assert tiny_engine.stats.last_completion_tokens < 400


def test_completion_endpoints_derive_from_chat(tiny_llm) -> None:
    prompt = "Say something."
    chat = tiny_llm.chat([ChatMessage(role="user", content=prompt)], max_new_tokens=12, **SAMPLED)
    completion = tiny_llm.complete(prompt, max_new_tokens=12, **SAMPLED)
    assert isinstance(completion, CompletionResponse)
    assert completion.text and completion.text == chat.message.content
    assert completion.additional_kwargs["total_tokens"] == chat.additional_kwargs["total_tokens"]
    assert completion.raw == chat.raw
    streamed = list(tiny_llm.stream_complete(prompt, max_new_tokens=12, **SAMPLED))
    assert "".join(c.delta or "" for c in streamed) == streamed[-1].text == completion.text


async def test_async_completion_endpoints(tiny_llm) -> None:
    completion = tiny_llm.complete("Hi", max_new_tokens=12, **SAMPLED)
    assert (await tiny_llm.acomplete("Hi", max_new_tokens=12, **SAMPLED)).text == completion.text
    chunks = [c async for c in await tiny_llm.astream_complete("Hi", max_new_tokens=12, **SAMPLED)]
    assert len(chunks) > 1 and chunks[-1].text == completion.text


def test_tool_result_turn_is_accepted_and_answered(tiny_llm, weather_tools) -> None:
    first = tiny_llm.chat_with_tools(weather_tools, chat_history=USER, tool_required=True)
    [selection] = tiny_llm.get_tool_calls_from_response(first)
    result = ChatMessage(
        role="tool", content="18 degrees", additional_kwargs={"tool_call_id": selection.tool_id}
    )
    follow_up = tiny_llm.chat([*USER, first.message, result], max_new_tokens=8)
    transcript = tiny_llm.chat([*USER, first.message], max_new_tokens=8)
    assert follow_up.raw["usage"]["prompt_tokens"] > transcript.raw["usage"]["prompt_tokens"]


def test_json_mode_output_matches_the_schema(tiny_llm) -> None:
    schema = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}, "mode": {"enum": ["fast", "slow"]}},
        "required": ["ok", "mode"],
        "additionalProperties": False,
    }
    response = tiny_llm.chat(USER, response_format=schema, max_new_tokens=48)
    jsonschema.validate(json.loads(response.message.content), schema)
    assert _calls(response) == []


def test_callbacks_see_chat_and_stream(tiny_engine) -> None:
    handler = LlamaDebugHandler()
    llm = HermesLLM(engine=tiny_engine, max_new_tokens=8, callback_manager=CallbackManager([handler]))
    llm.chat(USER)
    list(llm.stream_chat(USER))
    llm.complete("hi")
    pairs = handler.get_event_pairs(CBEventType.LLM)
    assert len(pairs) >= 3 and all(len(pair) == 2 for pair in pairs)


def test_bad_options_are_clear_errors(tiny_llm, tiny_engine, weather_tools) -> None:
    with pytest.raises(
        UnsupportedOptionError, match=r"does not support 'frequency_penalty'.*per-call options"
    ):
        tiny_llm.chat(USER, frequency_penalty=1.0)
    with pytest.raises(UnsupportedOptionError, match="either engine= or the model"):
        HermesLLM("some/model", engine=tiny_engine)
    with pytest.raises(UnsupportedOptionError, match="unknown tool 'nope'"):
        tiny_llm.chat_with_tools(weather_tools, chat_history=USER, tool_choice="nope")
    with pytest.raises(UnsupportedOptionError, match="contradicts"):
        tiny_llm.chat_with_tools(weather_tools, chat_history=USER, tool_choice="none", tool_required=True)
