"""LangChain -> core message conversion: roles, text, v1 content blocks, tool calls and tool results."""

from __future__ import annotations

import json

import pytest
from langchain_core.messages import (
    AIMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    RemoveMessage,
    SystemMessage,
    ToolMessage,
)

from hermes_core import Message, UnsupportedOptionError
from hermes_core.format.chatml import render_conversation
from langchain_hermes._messages import to_core_messages

CALL = {"name": "my_adder_tool", "args": {"a": 1, "b": 2}, "id": "abc123", "type": "tool_call"}


def test_roles_and_text_map_one_to_one():
    core = to_core_messages(
        [SystemMessage("be brief"), HumanMessage("hello"), AIMessage("hi there"), HumanMessage("how are you")]
    )
    assert [(m.role, m.content) for m in core] == [
        ("system", "be brief"),
        ("user", "hello"),
        ("assistant", "hi there"),
        ("user", "how are you"),
    ]


def test_human_text_blocks_are_joined_and_plain_strings_count_as_text():
    core = to_core_messages([HumanMessage([{"type": "text", "text": "What is "}, "1 + 2?"])])
    assert core[0].content == "What is 1 + 2?"


@pytest.mark.parametrize(
    "block",
    [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        {"type": "image", "base64": "AAAA", "mime_type": "image/png"},
        {"type": "audio", "base64": "AAAA", "mime_type": "audio/wav"},
        {"type": "file", "base64": "AAAA", "mime_type": "application/pdf"},
    ],
)
def test_media_in_a_human_message_is_refused_with_the_block_type(block):
    with pytest.raises(UnsupportedOptionError, match=r"text-only.*'(image|audio|file)'"):
        to_core_messages([HumanMessage([{"type": "text", "text": "describe"}, block])])


def test_ai_tool_calls_keep_their_ids_and_arguments():
    core = to_core_messages([AIMessage("", tool_calls=[CALL])])[0]
    assert core.role == "assistant"
    assert core.content == ""
    assert [(c.name, c.arguments, c.id) for c in core.tool_calls] == [
        ("my_adder_tool", {"a": 1, "b": 2}, "abc123")
    ]


def test_ai_message_in_v1_content_block_format_converts_text_and_calls_once():
    v1 = AIMessage(
        [
            {"type": "reasoning", "reasoning": "the user wants a sum"},
            {"type": "text", "text": "Let me add."},
            {"type": "tool_call", "id": "abc123", "name": "my_adder_tool", "args": {"a": 1, "b": 2}},
        ],
        tool_calls=[CALL],
        response_metadata={"output_version": "v1"},
    )
    core = to_core_messages([v1])[0]
    assert core.content == "Let me add."
    assert len(core.tool_calls) == 1
    assert core.tool_calls[0].id == "abc123"


def test_ai_message_with_anthropic_tool_use_blocks_keeps_text_only():
    msg = AIMessage(
        [
            {"type": "text", "text": "some text"},
            {"type": "tool_use", "id": "abc123", "name": "my_adder_tool", "input": {"a": 1, "b": 2}},
        ],
        tool_calls=[CALL],
    )
    core = to_core_messages([msg])[0]
    assert core.content == "some text"
    assert [c.id for c in core.tool_calls] == ["abc123"]


def test_tool_message_string_content_and_ids():
    core = to_core_messages(
        [ToolMessage(json.dumps({"result": 3}), name="my_adder_tool", tool_call_id="abc123")]
    )
    assert core == [Message("tool", '{"result": 3}', tool_call_id="abc123", name="my_adder_tool")]


def test_tool_message_with_error_status_is_marked_as_an_error():
    msg = ToolMessage("Error: Missing required argument 'b'.", tool_call_id="abc123", status="error")
    core = to_core_messages([msg])[0]
    assert core.content == {"error": "Error: Missing required argument 'b'."}


def test_tool_message_text_blocks_become_one_string():
    msg = ToolMessage([{"type": "text", "text": "sunny, "}, "21 C"], tool_call_id="1")
    assert to_core_messages([msg])[0].content == "sunny, 21 C"


def test_tool_message_with_data_items_stays_json_data():
    msg = ToolMessage([{"city": "Paris", "temp": 21}, {"city": "Oslo", "temp": 3}], tool_call_id="1")
    assert to_core_messages([msg])[0].content == [{"city": "Paris", "temp": 21}, {"city": "Oslo", "temp": 3}]


def test_tool_message_with_an_image_is_refused():
    msg = ToolMessage([{"type": "image", "base64": "AAAA", "mime_type": "image/png"}], tool_call_id="1")
    with pytest.raises(UnsupportedOptionError, match="tool result holds a 'image' block"):
        to_core_messages([msg])


def test_chat_message_roles_are_mapped_and_unknown_roles_refused():
    core = to_core_messages(
        [ChatMessage(role="developer", content="rules"), ChatMessage(role="human", content="hi")]
    )
    assert [(m.role, m.content) for m in core] == [("system", "rules"), ("user", "hi")]
    with pytest.raises(UnsupportedOptionError, match="role 'narrator'"):
        to_core_messages([ChatMessage(role="narrator", content="once upon a time")])


def test_function_message_becomes_a_named_tool_result():
    core = to_core_messages([FunctionMessage(name="lookup", content="42")])[0]
    assert (core.role, core.name, core.content) == ("tool", "lookup", "42")


def test_messages_that_cannot_be_prompted_are_refused_by_type():
    with pytest.raises(UnsupportedOptionError, match="RemoveMessage"):
        to_core_messages([RemoveMessage(id="x")])


def test_converted_tool_round_trip_renders_as_hermes_turns():
    """The converted history is something the core renders: call block, then a tool_response turn."""
    history = [
        HumanMessage("What is 1 + 2"),
        AIMessage("", tool_calls=[CALL]),
        ToolMessage(json.dumps({"result": 3}), tool_call_id="abc123"),
    ]
    text = render_conversation(to_core_messages(history)).text
    assert '<tool_call>\n{"name": "my_adder_tool", "arguments": {"a": 1, "b": 2}}\n</tool_call>' in text
    assert '<tool_response>\n{"name": "my_adder_tool", "content": {"result": 3}}\n</tool_response>' in text


def test_ai_message_reasoning_is_kept_on_the_core_message_not_in_its_text():
    """From additional_kwargs (how ChatHermes reports it) or a v1 reasoning block; the prompt drops it."""
    v0 = AIMessage("The sum is 3.", additional_kwargs={"reasoning_content": "1 + 2"})
    v1 = AIMessage(
        [{"type": "reasoning", "reasoning": "add them"}, {"type": "text", "text": "Let me add."}],
        response_metadata={"output_version": "v1"},
    )
    first, second, plain = to_core_messages([v0, v1, AIMessage("no reasoning")])
    assert (first.content, first.reasoning) == ("The sum is 3.", "1 + 2")
    assert (second.content, second.reasoning) == ("Let me add.", "add them")
    assert plain.reasoning is None
    prompt = render_conversation([Message("user", "1 + 2?"), first]).text
    assert "1 + 2?" in prompt and "The sum is 3." in prompt and "<think>" not in prompt
