"""Tool specs, tool_choice mapping, ToolSelection extraction and stream-chunk building (no model needed)."""

from __future__ import annotations

import pytest
from llama_index.core.base.llms.types import ToolCallBlock
from llama_index.core.tools import FunctionTool

from hermes_core.errors import UnsupportedOptionError
from hermes_core.types import (
    GenerationResult,
    InvalidToolCall,
    ParsedResponse,
    StreamEvent,
    ToolCall,
    ToolCallDelta,
    Usage,
)
from llama_index_hermes._messages import chat_response
from llama_index_hermes._streaming import ChunkBuilder
from llama_index_hermes._tools import (
    first_tool_call_only,
    resolve_tool_choice,
    to_openai_tools,
    tool_selections,
)


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def _result(content: str, calls: list[ToolCall], invalid=None) -> GenerationResult:
    parsed = ParsedResponse(content=content, tool_calls=calls, invalid_tool_calls=invalid or [])
    return GenerationResult(
        parsed, "tool_calls" if calls else "stop", Usage(3, 4), raw_text="r", model_name="m"
    )


def test_function_tool_becomes_an_openai_tool_dict() -> None:
    spec = to_openai_tools([FunctionTool.from_defaults(add)])[0]
    assert spec["type"] == "function"
    assert spec["function"]["name"] == "add"
    assert spec["function"]["parameters"]["properties"].keys() == {"a", "b"}
    assert spec["function"]["parameters"]["required"] == ["a", "b"]


def test_long_descriptions_are_allowed_and_dicts_pass_through() -> None:
    long_tool = FunctionTool.from_defaults(add, description="x" * 2000)
    raw = {"type": "function", "function": {"name": "n", "parameters": {"type": "object"}}}
    specs = to_openai_tools([long_tool, raw])
    assert len(specs[0]["function"]["description"]) == 2000 and specs[1] is raw


def test_non_tool_is_a_clear_one_line_error() -> None:
    with pytest.raises(
        UnsupportedOptionError, match=r"tools\[0\] \(add\) is a function, not a LlamaIndex tool; wrap"
    ):
        to_openai_tools([add])  # type: ignore[list-item]
    with pytest.raises(
        UnsupportedOptionError, match=r"tools\[1\] \(42\) is an int, not a LlamaIndex tool"
    ) as caught:
        to_openai_tools([FunctionTool.from_defaults(add), 42])  # type: ignore[list-item]
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("choice", "required", "expected"),
    [
        (None, False, "auto"),
        (None, True, "required"),
        ("auto", True, "required"),
        ("add", False, "add"),
        ("add", True, "add"),
        ("none", False, "none"),
        (
            {"type": "function", "function": {"name": "add"}},
            True,
            {"type": "function", "function": {"name": "add"}},
        ),
    ],
)
def test_resolve_tool_choice(choice, required, expected) -> None:
    assert resolve_tool_choice(choice, required) == expected


def test_resolve_tool_choice_accepts_a_tool_and_rejects_contradictions() -> None:
    assert resolve_tool_choice(FunctionTool.from_defaults(add), False) == "add"
    with pytest.raises(UnsupportedOptionError, match="contradicts"):
        resolve_tool_choice("none", True)


def test_tool_selections_match_blocks_and_ids() -> None:
    response = chat_response(_result("", [ToolCall("add", {"a": 1, "b": 2}, "call_1")]))
    [selection] = tool_selections(response)
    assert (selection.tool_id, selection.tool_name, selection.tool_kwargs) == (
        "call_1",
        "add",
        {"a": 1, "b": 2},
    )


def test_no_tool_call_errors_with_the_rejected_attempts_or_returns_empty() -> None:
    bad = InvalidToolCall(raw="{}", error="missing required property 'a'", name="add")
    response = chat_response(_result("plain", [], [bad]))
    with pytest.raises(ValueError, match="missing required property 'a'"):
        tool_selections(response)
    assert tool_selections(response, error_on_no_tool_call=False) == []


def test_first_tool_call_only_trims_blocks_and_kwargs() -> None:
    response = chat_response(_result("t", [ToolCall("add", {}, "c1"), ToolCall("add", {}, "c2")]))
    trimmed = first_tool_call_only(response)
    assert [b.tool_call_id for b in trimmed.message.blocks if isinstance(b, ToolCallBlock)] == ["c1"]
    assert [c["id"] for c in trimmed.message.additional_kwargs["tool_calls"]] == ["c1"]
    assert trimmed.message.content == "t"
    assert (
        len([b for b in response.message.blocks if isinstance(b, ToolCallBlock)]) == 2
    )  # original untouched


def _events(calls: list[ToolCall]) -> list[StreamEvent]:
    events = [StreamEvent("text", text="Let me "), StreamEvent("text", text="check.")]
    for index, call in enumerate(calls):
        events.append(
            StreamEvent("tool_call_delta", delta=ToolCallDelta(index, call.id, call.name), index=index)
        )
        events.append(StreamEvent("tool_call", tool_call=call, index=index))
    events.append(StreamEvent("end", result=_result("Let me check.", calls)))
    return events


def test_chunks_accumulate_text_and_calls_with_stable_ids() -> None:
    calls = [ToolCall("add", {"a": 1, "b": 2}, "call_x"), ToolCall("add", {"a": 3, "b": 4}, "call_y")]
    builder = ChunkBuilder()
    chunks = [c for c in (builder.feed(e) for e in _events(calls)) if c is not None]
    assert [c.delta for c in chunks] == ["Let me ", "check.", "", "", ""]
    assert [c.message.content for c in chunks[:2]] == ["Let me ", "Let me check."]
    ids = [[b.tool_call_id for b in c.message.blocks if isinstance(b, ToolCallBlock)] for c in chunks]
    assert ids == [[], [], ["call_x"], ["call_x", "call_y"], ["call_x", "call_y"]]
    final = chunks[-1]
    expected = chat_response(_result("Let me check.", calls))
    assert final.message == expected.message and final.raw == expected.raw
    assert final.additional_kwargs["total_tokens"] == 7


def test_chunks_respect_a_single_call_limit() -> None:
    calls = [ToolCall("add", {}, "c1"), ToolCall("add", {}, "c2")]
    builder = ChunkBuilder(max_tool_calls=1)
    chunks = [c for c in (builder.feed(e) for e in _events(calls)) if c is not None]
    for chunk in chunks:
        assert [b.tool_call_id for b in chunk.message.blocks if isinstance(b, ToolCallBlock)] in ([], ["c1"])
    assert chunks[-1].message.additional_kwargs["tool_calls"][0]["id"] == "c1"


def test_final_chunk_delta_completes_the_text_when_the_result_extends_it() -> None:
    builder = ChunkBuilder()
    builder.feed(StreamEvent("text", text="Hel"))
    final = builder.feed(StreamEvent("end", result=_result("Hello", [])))
    assert final is not None and final.delta == "lo" and final.message.content == "Hello"


def test_reasoning_streams_as_thinking_deltas_into_a_thinking_block() -> None:
    from llama_index.core.base.llms.types import ThinkingBlock

    from hermes_core import ToolCallStreamParser

    parser = ToolCallStreamParser()
    events = [e for piece in ("<think>Plan", ": add.</th", "ink>Sure.") for e in parser.feed(piece)]
    events += parser.close()
    result = GenerationResult(parser.result(), "stop", Usage(1, 2))
    events.append(StreamEvent("end", result=result))
    builder = ChunkBuilder()
    chunks = [c for c in (builder.feed(e) for e in events) if c is not None]
    thinking = [c.additional_kwargs.get("thinking_delta", "") for c in chunks]
    assert "".join(thinking) == "Plan: add." == result.reasoning
    assert all(c.delta == "" for c in chunks if c.additional_kwargs.get("thinking_delta"))
    assert "".join(c.delta or "" for c in chunks) == "Sure."
    for chunk in chunks:
        first = chunk.message.blocks[0]
        assert isinstance(first, ThinkingBlock) and result.reasoning.startswith(first.content)
    assert chunks[-1].message.blocks[0].content == "Plan: add."
