"""A LangChain/LangGraph agent completes a real tool round trip on the embedded SmolLM2-135M."""

from __future__ import annotations

import pytest
from langchain.agents import create_agent
from langchain.agents.middleware import wrap_model_call
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool

from langchain_hermes import ChatHermes


@wrap_model_call
def call_one_tool_then_answer(request, handler):
    """Before any tool result: exactly one tool call; after it: a plain answer.

    SmolLM2-135M rarely decides to call a tool by itself, keeps adding calls once it does, and
    with the tools still offered after a result it imitates a tool turn instead of answering.
    ``tool_choice`` makes the grammar enforce each step, the realistic way to drive such a model.
    """
    if any(isinstance(m, ToolMessage) for m in request.messages):
        request = request.override(tool_choice="none")
    else:
        request = request.override(tool_choice="any", model_settings={"parallel_tool_calls": False})
    return handler(request)


@pytest.mark.slow
def test_create_agent_runs_a_real_tool_and_answers():
    ran: list[str] = []

    @tool
    def get_weather(city: str) -> str:
        """Get the current weather for a city."""
        ran.append(city)
        return f"It is sunny and 21 C in {city}."

    agent = create_agent(
        ChatHermes(max_tokens=40), tools=[get_weather], middleware=[call_one_tool_then_answer]
    )
    state = agent.invoke(
        {"messages": [HumanMessage("What is the weather in Paris?")]}, {"recursion_limit": 8}
    )
    messages = state["messages"]

    assert ran, "the tool never ran"
    call_message = messages[1]
    assert isinstance(call_message, AIMessage)
    assert len(call_message.tool_calls) == 1 and not call_message.invalid_tool_calls
    call = call_message.tool_calls[0]
    assert call["name"] == "get_weather" and call["id"].startswith("call_")
    result = messages[2]
    assert isinstance(result, ToolMessage) and result.tool_call_id == call["id"]
    assert result.content == f"It is sunny and 21 C in {call['args']['city']}."
    assert ran == [call["args"]["city"]]
    final = messages[-1]
    assert isinstance(final, AIMessage) and not final.tool_calls
    assert final.response_metadata["finish_reason"] == "stop"
    assert "sunny" in final.content.lower(), final.content  # the answer used the tool's result
