"""The LlamaIndex <-> core conversion layer: messages in, responses out (no model needed)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from llama_index.core.base.llms.types import (
    ChatMessage,
    ImageBlock,
    MessageRole,
    TextBlock,
    ThinkingBlock,
    ToolCallBlock,
)

from hermes_core.errors import UnsupportedOptionError
from hermes_core.format.chatml import render_conversation
from hermes_core.types import GenerationResult, InvalidToolCall, Message, ParsedResponse, ToolCall, Usage
from llama_index_hermes._messages import chat_response, to_core_messages


def _result(
    content: str = "", calls: list[ToolCall] | None = None, invalid=None, reason="stop"
) -> GenerationResult:
    parsed = ParsedResponse(content=content, tool_calls=calls or [], invalid_tool_calls=invalid or [])
    return GenerationResult(parsed, reason, Usage(11, 7), raw_text="raw text", model_name="m")


def test_roles_map_to_core_roles() -> None:
    messages = [
        ChatMessage(role=MessageRole.SYSTEM, content="sys"),
        ChatMessage(role=MessageRole.DEVELOPER, content="dev"),
        ChatMessage(role="user", content="hi"),
        ChatMessage(role=MessageRole.ASSISTANT, content="hello"),
    ]
    assert [(m.role, m.content) for m in to_core_messages(messages)] == [
        ("system", "sys"),
        ("system", "dev"),
        ("user", "hi"),
        ("assistant", "hello"),
    ]


def test_text_blocks_join_and_thinking_is_dropped() -> None:
    message = ChatMessage(
        role="assistant", blocks=[ThinkingBlock(content="hmm"), TextBlock(text="a"), TextBlock(text="b")]
    )
    assert to_core_messages([message])[0].content == "a\nb"


def test_tool_call_blocks_become_core_calls_and_tool_results_get_the_name() -> None:
    assistant = ChatMessage(
        role="assistant",
        blocks=[
            TextBlock(text=""),
            ToolCallBlock(tool_call_id="call_1", tool_name="get_weather", tool_kwargs={"city": "Paris"}),
            ToolCallBlock(tool_call_id="call_2", tool_name="get_time", tool_kwargs='{"tz": "CET"}'),
        ],
    )
    result = ChatMessage(role="tool", content="18C", additional_kwargs={"tool_call_id": "call_1"})
    named = ChatMessage(
        role="tool", content="12:00", additional_kwargs={"tool_call_id": "call_2", "name": "clock"}
    )
    core = to_core_messages([ChatMessage(role="user", content="q"), assistant, result, named])
    assert core[1] == Message(
        role="assistant",
        content="",
        tool_calls=[
            ToolCall("get_weather", {"city": "Paris"}, "call_1"),
            ToolCall("get_time", {"tz": "CET"}, "call_2"),
        ],
    )
    assert core[2] == Message(role="tool", content="18C", tool_call_id="call_1", name=None)
    assert core[3].name == "clock"
    rendered = render_conversation(core).text
    assert '<tool_response>\n{"name": "get_weather", "content": "18C"}\n</tool_response>' in rendered
    assert '{"name": "clock", "content": "12:00"}' in rendered


def test_legacy_openai_tool_calls_in_additional_kwargs_are_read() -> None:
    sdk_like = SimpleNamespace(id="c2", function=SimpleNamespace(name="g", arguments='{"y": 2}'))
    message = ChatMessage(
        role="assistant",
        content="",
        additional_kwargs={
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}},
                sdk_like,
            ]
        },
    )
    calls = to_core_messages([message])[0].tool_calls
    assert calls == [ToolCall("f", {"x": 1}, "c1"), ToolCall("g", {"y": 2}, "c2")]


def test_unknown_tool_result_name_stays_none() -> None:
    core = to_core_messages(
        [ChatMessage(role="tool", content="x", additional_kwargs={"tool_call_id": "nope"})]
    )
    assert core[0].tool_call_id == "nope" and core[0].name is None


def test_non_text_block_is_a_clear_error() -> None:
    message = ChatMessage(
        role="user", blocks=[TextBlock(text="look"), ImageBlock(url="https://example.com/a.png")]
    )
    with pytest.raises(UnsupportedOptionError, match=r"message 0 \(user\) contains a ImageBlock"):
        to_core_messages([message])


def test_bad_tool_call_arguments_are_a_clear_error() -> None:
    message = ChatMessage(role="assistant", blocks=[ToolCallBlock(tool_name="f", tool_kwargs="{not json")])
    with pytest.raises(UnsupportedOptionError, match="not valid JSON"):
        to_core_messages([message])
    listed = ChatMessage(role="assistant", blocks=[ToolCallBlock(tool_name="f", tool_kwargs="[1, 2]")])
    with pytest.raises(UnsupportedOptionError, match="must be a JSON object"):
        to_core_messages([listed])


def test_non_chat_message_input_is_a_clear_error() -> None:
    with pytest.raises(UnsupportedOptionError, match="not a ChatMessage"):
        to_core_messages([{"role": "user", "content": "hi"}])  # type: ignore[list-item]


def test_chat_response_carries_blocks_kwargs_usage_and_json_safe_raw() -> None:
    calls = [ToolCall("f", {"x": 1}, "call_a"), ToolCall("g", {}, "call_b")]
    bad = [InvalidToolCall(raw='{"name": "h"', error="truncated JSON", name="h", id="call_c")]
    response = chat_response(_result("thinking...", calls, bad, "tool_calls"))
    message = response.message
    assert message.role == MessageRole.ASSISTANT
    assert message.content == "thinking..."
    blocks = [b for b in message.blocks if isinstance(b, ToolCallBlock)]
    assert [(b.tool_call_id, b.tool_name, b.tool_kwargs) for b in blocks] == [
        ("call_a", "f", {"x": 1}),
        ("call_b", "g", {}),
    ]
    mirrored = message.additional_kwargs["tool_calls"]
    assert [(c["id"], c["function"]["name"], json.loads(c["function"]["arguments"])) for c in mirrored] == [
        ("call_a", "f", {"x": 1}),
        ("call_b", "g", {}),
    ]
    assert message.additional_kwargs["invalid_tool_calls"][0]["error"] == "truncated JSON"
    assert response.additional_kwargs == {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
    assert json.loads(json.dumps(response.raw)) == response.raw
    assert response.raw["finish_reason"] == "tool_calls" and response.raw["text"] == "raw text"


def test_chat_response_without_calls_has_plain_text_and_no_tool_calls_key() -> None:
    response = chat_response(_result("hello"))
    assert response.message.content == "hello"
    assert "tool_calls" not in response.message.additional_kwargs


def test_max_tool_calls_keeps_only_the_first() -> None:
    calls = [ToolCall("f", {}, "c1"), ToolCall("g", {}, "c2")]
    response = chat_response(_result("", calls, reason="tool_calls"), max_tool_calls=1)
    assert [b.tool_call_id for b in response.message.blocks if isinstance(b, ToolCallBlock)] == ["c1"]
    assert [c["id"] for c in response.message.additional_kwargs["tool_calls"]] == ["c1"]


def test_response_round_trips_into_the_next_prompt() -> None:
    response = chat_response(_result("", [ToolCall("f", {"q": "x"}, "call_z")], reason="tool_calls"))
    tool_result = ChatMessage(role="tool", content="42", additional_kwargs={"tool_call_id": "call_z"})
    core = to_core_messages([response.message, tool_result])
    assert core[0].tool_calls == [ToolCall("f", {"q": "x"}, "call_z")]
    rendered = render_conversation([Message(role="user", content="go"), *core]).text
    assert '<tool_call>\n{"name": "f", "arguments": {"q": "x"}}\n</tool_call>' in rendered
    assert '<tool_response>\n{"name": "f", "content": "42"}\n</tool_response>' in rendered


def test_reasoning_becomes_a_thinking_block_first_and_back() -> None:
    parsed = ParsedResponse(content="Done.", tool_calls=[ToolCall("f", {}, id="c")], reasoning="Plan it.")
    response = chat_response(GenerationResult(parsed, "tool_calls", Usage(1, 2), model_name="m"))
    blocks = response.message.blocks
    assert isinstance(blocks[0], ThinkingBlock) and blocks[0].content == "Plan it."
    assert response.message.content == "Done."  # reasoning is never content
    assert response.raw["reasoning"] == "Plan it."
    back = to_core_messages([response.message])[0]
    assert (back.content, back.reasoning, [c.id for c in back.tool_calls]) == ("Done.", "Plan it.", ["c"])
    for empty in (None, ""):  # no block, or an empty one: no ThinkingBlock
        parsed = ParsedResponse(content="Hi.", reasoning=empty)
        message = chat_response(GenerationResult(parsed, "stop", Usage(1, 2))).message
        assert not any(isinstance(block, ThinkingBlock) for block in message.blocks)
