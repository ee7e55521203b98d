"""Streamed chunks add up to the ``invoke`` message of the same generation: text, calls, invalid calls, usage.

Event sequences come from the real engine (tiny model) or from the real stream parser fed crafted
model text; ``event_to_chunk`` turns them into chunks and LangChain's own ``+`` aggregates them.
"""

from __future__ import annotations

import json

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk

from hermes_core import GenerationResult, Message, ToolCallStreamParser, Usage, get_engine
from langchain_hermes import restore_call_errors
from langchain_hermes._chunks import ChunkBuilder, event_to_chunk
from langchain_hermes._messages import to_ai_message

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the weather.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
# The grammar does not enforce "not"; greedy decoding on the tiny model writes city " ", which
# validation then rejects: a real schema-violating call.
PICKY_WEATHER = json.loads(
    json.dumps(WEATHER).replace('{"type": "string"}', '{"type": "string", "not": {"const": " "}}')
)
ASK = [Message("user", "What is the weather in Paris?")]


def _aggregate(events) -> AIMessageChunk:
    chunks = [c.message for c in (event_to_chunk(e) for e in events) if c is not None]
    total = chunks[0]
    for chunk in chunks[1:]:
        total = total + chunk
    return total


def _same_message(streamed: AIMessageChunk, whole: AIMessage) -> None:
    """Everything invoke reports; the error text of invalid calls comes back with ``restore_call_errors``."""
    assert streamed.content == whole.content
    assert streamed.tool_calls == whole.tool_calls
    assert restore_call_errors(streamed).invalid_tool_calls == whole.invalid_tool_calls
    assert streamed.usage_metadata == whole.usage_metadata
    assert streamed.response_metadata == whole.response_metadata


def _crafted_events(text: str, piece: int = 3) -> list:
    """Stream-parser events for ``text`` fed in ``piece``-character deltas, closed by an end event."""
    parser = ToolCallStreamParser()
    events = []
    for start in range(0, len(text), piece):
        events += parser.feed(text[start : start + piece])
    events += parser.close()
    parsed = parser.result()
    reason = "tool_calls" if parsed.tool_calls else "stop"
    result = GenerationResult(parsed, reason, Usage(prompt_tokens=30, completion_tokens=12), text, "crafted")
    return [*events, _end(result)]


def _end(result: GenerationResult):
    from hermes_core import StreamEvent

    return StreamEvent("end", result=result)


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    return get_engine(str(tiny_model_dir))


@pytest.mark.parametrize(
    ("tools", "choice", "budget"),
    [
        ([WEATHER], "required", 40),  # a valid call
        ([WEATHER], "required", 8),  # cut off mid-call: invalid, not a "repaired" partial call
        ([PICKY_WEATHER], "required", 40),  # well-formed but schema-violating: invalid
        (None, None, 12),  # plain text
    ],
)
def test_engine_stream_chunks_add_up_to_the_message_of_the_same_generation(engine, tools, choice, budget):
    events = list(engine.stream(ASK, tools=tools, tool_choice=choice, max_new_tokens=budget))
    whole = to_ai_message(events[-1].result)
    _same_message(_aggregate(events), whole)


def test_schema_violating_and_cut_off_calls_really_are_invalid(engine):
    picky = list(engine.stream(ASK, tools=[PICKY_WEATHER], tool_choice="required", max_new_tokens=40))
    cut = list(engine.stream(ASK, tools=[WEATHER], tool_choice="required", max_new_tokens=8))
    for events in (picky, cut):
        streamed = _aggregate(events)
        assert streamed.tool_calls == []
        assert len(streamed.invalid_tool_calls) == 1
        assert streamed.invalid_tool_calls[0]["args"].startswith("<tool_call>\n{")
        assert to_ai_message(events[-1].result).invalid_tool_calls[0]["error"]


def test_parallel_calls_and_text_stream_in_order_with_ids_and_indexes():
    text = (
        "Checking both.\n<tool_call>\n"
        '{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n<tool_call>\n'
        '{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
    )
    events = _crafted_events(text)
    streamed = _aggregate(events)
    whole = to_ai_message(events[-1].result)
    _same_message(streamed, whole)
    assert [c["args"] for c in streamed.tool_calls] == [{"city": "Paris"}, {"city": "Oslo"}]
    assert len({c["id"] for c in streamed.tool_calls}) == 2
    assert [tc["index"] for tc in streamed.tool_call_chunks] == [0, 1]
    assert streamed.content == "Checking both."


def test_malformed_call_between_valid_ones_stays_invalid_in_the_aggregate():
    text = (
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": Oslo}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Rome"}}\n</tool_call>'
    )
    events = _crafted_events(text, piece=5)
    streamed = _aggregate(events)
    _same_message(streamed, to_ai_message(events[-1].result))
    assert [c["args"]["city"] for c in streamed.tool_calls] == ["Paris", "Rome"]
    assert len(streamed.invalid_tool_calls) == 1


def test_text_never_shows_markup_and_metadata_comes_once_on_the_last_chunk():
    text = 'Sure.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    chunks = [c.message for c in (event_to_chunk(e) for e in _crafted_events(text, piece=2)) if c is not None]
    assert all("<tool_call" not in c.content and "</tool_call" not in c.content for c in chunks)
    assert [c.chunk_position for c in chunks].count("last") == 1 and chunks[-1].chunk_position == "last"
    assert [bool(c.usage_metadata) for c in chunks].count(True) == 1 and chunks[-1].usage_metadata
    assert [c.response_metadata.get("model_name") for c in chunks[:-1]] == [None] * (len(chunks) - 1)
    assert chunks[-1].response_metadata["finish_reason"] == "tool_calls"
    # every tool_call_chunk is final: its args parse to the call's arguments on their own
    assert [json.loads(tc["args"]) for c in chunks for tc in c.tool_call_chunks] == [{"city": "Paris"}]


def test_deltas_are_not_forwarded():
    text = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    events = _crafted_events(text, piece=2)
    assert any(e.type == "tool_call_delta" for e in events)
    assert [event_to_chunk(e) for e in events if e.type == "tool_call_delta"] == [None] * sum(
        e.type == "tool_call_delta" for e in events
    )


def test_v1_blocks_of_text_and_calls_never_merge_into_each_other():
    """With ``output_version="v1"`` LangChain turns each chunk into content blocks and merges them by index."""
    text = (
        'Sure.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>\nDone.'
    )
    events = _crafted_events(text, piece=4)
    builder = ChunkBuilder(v1=True)
    total = None
    for event in events:
        chunk = builder.chunk(event)
        if chunk is None:
            continue
        # what LangChain does to every chunk of a v1 stream
        message = chunk.message.model_copy(
            update={"content": chunk.message.content_blocks, "response_metadata": {"output_version": "v1"}}
        )
        total = message if total is None else total + message
    blocks = [(b["type"], b.get("text"), (b.get("args") or {}).get("city")) for b in total.content_blocks]
    assert blocks == [
        ("text", "Sure.", None),
        ("tool_call", None, "Paris"),
        ("tool_call", None, "Oslo"),
        ("text", "\nDone.", None),
    ]
    assert [c["args"]["city"] for c in total.tool_calls] == ["Paris", "Oslo"]


def test_reasoning_adds_up_to_the_reasoning_content_invoke_reports():
    events = _crafted_events(
        '<think>\nPlan: call get_weather.\n</think>\nSure.\n<tool_call>{"name": "get_weather"}', 2
    )
    whole = to_ai_message(events[-1].result)
    streamed = _aggregate(events)
    _same_message(streamed, whole)
    assert (
        streamed.additional_kwargs
        == whole.additional_kwargs
        == {"reasoning_content": "Plan: call get_weather."}
    )
    assert whole.content == "Sure." and [c["name"] for c in whole.tool_calls] == ["get_weather"]
    assert [b["type"] for b in whole.content_blocks] == ["reasoning", "text", "tool_call"]
