"""Rejected calls go back to the model in LlamaIndex: stand-in selections keep ``FunctionAgent`` looping."""

from __future__ import annotations

import json
from typing import Any

import pytest
from llama_index.core.agent.workflow import FunctionAgent, ToolCallResult
from llama_index.core.base.llms.types import ChatMessage, MessageRole, TextBlock, ToolCallBlock
from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.tools import FunctionTool

from hermes_core.format.chatml import render_conversation
from hermes_core.format.rejected_calls import REJECTED_CALL_TOOL
from llama_index_hermes import HermesLLM
from llama_index_hermes._messages import to_core_messages

ASK = [ChatMessage(role="user", content="What is the weather in Paris?")]


def test_a_reply_of_rejected_calls_yields_stand_in_selections(tiny_llm, weather_tools) -> None:
    # Cut off inside a forced call: a real rejected attempt, with the grammar on.
    response = tiny_llm.chat_with_tools(weather_tools, chat_history=ASK, tool_required=True, max_new_tokens=8)
    [attempt] = response.message.additional_kwargs["invalid_tool_calls"]
    assert not [
        b for b in response.message.blocks if isinstance(b, ToolCallBlock)
    ]  # the message is unchanged
    [stand_in] = tiny_llm.get_tool_calls_from_response(response, error_on_no_tool_call=False)
    assert stand_in.tool_name == REJECTED_CALL_TOOL and stand_in.tool_id == attempt["id"]
    assert stand_in.tool_kwargs == {"tool": attempt["name"], "error": attempt["error"]}
    with pytest.raises(ValueError, match="failed validation"):  # callers that need a call still get told why
        tiny_llm.get_tool_calls_from_response(response, error_on_no_tool_call=True)
    valid = tiny_llm.chat_with_tools(weather_tools, chat_history=ASK, tool_required=True)
    assert [s.tool_name for s in tiny_llm.get_tool_calls_from_response(valid)] != [REJECTED_CALL_TOOL]


def test_the_next_prompt_shows_the_attempt_and_its_error_instead_of_the_agents_reply() -> None:
    attempt = {
        "id": "call_bad",
        "name": "get_weather",
        "raw": '{"name": "get_weather", "arguments": {"town": "Paris"}}',
        "error": "Invalid arguments for tool 'get_weather': argument 'city' is required.",
    }
    history = [
        *ASK,
        ChatMessage(
            role="assistant", blocks=[TextBlock(text="")], additional_kwargs={"invalid_tool_calls": [attempt]}
        ),
        ChatMessage(
            role="tool",
            content=f"Tool {REJECTED_CALL_TOOL} not found. Please select a tool that is available.",
            additional_kwargs={"tool_call_id": "call_bad"},
        ),
    ]
    prompt = render_conversation(to_core_messages(history)).text
    assert f"<tool_call>\n{attempt['raw']}\n</tool_call>" in prompt
    assert json.dumps({"name": "get_weather", "content": {"error": attempt["error"]}}) in prompt
    assert REJECTED_CALL_TOOL not in prompt


def get_forecast(city: str, days: int) -> str:
    """Weather forecast for a city for a number of days."""
    return f"Sunny for the next {days} days in {city}."


class DrivenLLM(HermesLLM):
    """Drives a 135M model's choices only: the first reply unconstrained (so it can be invalid); after a
    rejection the grammar makes the retry one valid call. Records the messages of every request."""

    _sent: list[list[ChatMessage]] = PrivateAttr(default_factory=list)

    def _prepare_chat_with_tools(self, tools: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
        prepared = super()._prepare_chat_with_tools(tools, *args, **kwargs)
        messages = prepared["messages"]
        self._sent.append(list(messages))
        rejected = {
            item["id"] for m in messages for item in m.additional_kwargs.get("invalid_tool_calls") or []
        }
        if (
            messages[-1].role == MessageRole.TOOL
            and messages[-1].additional_kwargs.get("tool_call_id") in rejected
        ):
            prepared.update(constrained=True, tool_choice="required")
        return prepared


REJECTED_LOOP_HISTORY = [
    # An earlier call that leaves out `days` (now required): the model imitates it, and that is invalid.
    ChatMessage(role="user", content="Forecast for Rome?"),
    ChatMessage(
        role="assistant",
        blocks=[
            TextBlock(text=""),
            ToolCallBlock(tool_call_id="call_rome", tool_name="get_forecast", tool_kwargs={"city": "Rome"}),
        ],
    ),
]


@pytest.mark.slow
async def test_function_agent_shows_the_model_why_its_call_was_rejected() -> None:
    llm = DrivenLLM(max_new_tokens=48, constrained=False)
    # return_direct: the run ends once the forecast is in (the 135M model would call it again and again)
    tool = FunctionTool.from_defaults(get_forecast, return_direct=True)
    agent = FunctionAgent(tools=[tool], llm=llm, allow_parallel_tool_calls=False)
    handler = agent.run(
        user_msg="Forecast for Paris?", chat_history=list(REJECTED_LOOP_HISTORY), max_iterations=6
    )
    results = [event async for event in handler.stream_events() if isinstance(event, ToolCallResult)]
    output = await handler

    rejected, retried = results[0], results[1]
    assert rejected.tool_name == REJECTED_CALL_TOOL and rejected.tool_output.is_error  # the agent's own reply
    error = rejected.tool_kwargs["error"]
    assert "'days' is required" in error

    # the next request's prompt shows the attempt and the rejection error, not the agent's "not found"
    prompt = render_conversation(to_core_messages(llm._sent[1])).text
    attempt = json.dumps({"name": "get_forecast", "arguments": {"city": "Paris"}})
    assert prompt.count(attempt) == 1 and json.dumps(error)[1:-1] in prompt
    assert REJECTED_CALL_TOOL not in prompt

    assert retried.tool_name == "get_forecast" and not retried.tool_output.is_error
    kwargs = retried.tool_kwargs
    assert retried.tool_output.content == f"Sunny for the next {kwargs['days']} days in {kwargs['city']}."
    assert len(results) == 2 and len(llm._sent) == 2  # return_direct ended the run after the tool
    assert output.tool_calls[-1].tool_name == "get_forecast"
