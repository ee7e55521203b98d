"""A streaming caller sees the same invalid-call error text as a non-streaming one."""

from __future__ import annotations

import contextlib

from langchain.agents import create_agent
from langchain.agents.middleware import wrap_model_call
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.errors import GraphRecursionError

from langchain_hermes import ChatHermes, restore_call_errors

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the weather.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def _cut_off(tiny_model_dir, **settings) -> ChatHermes:
    """A forced call with a budget of 8 tokens: the tiny model's call is always cut off (invalid)."""
    return ChatHermes(model=str(tiny_model_dir), max_tokens=8, **settings)


def _error(message: AIMessage) -> str:
    (invalid,) = message.invalid_tool_calls
    return invalid["error"]


def test_invoke_that_streams_internally_keeps_the_error(tiny_model_dir):
    whole = _cut_off(tiny_model_dir).bind_tools([WEATHER], tool_choice="any").invoke("Weather in Paris?")
    assert "cut off" in _error(whole)
    streamed = _cut_off(tiny_model_dir, streaming=True).bind_tools([WEATHER], tool_choice="any")
    assert _error(streamed.invoke("Weather in Paris?")) == _error(whole)


async def test_ainvoke_that_streams_internally_keeps_the_error(tiny_model_dir):
    whole = (
        await _cut_off(tiny_model_dir).bind_tools([WEATHER], tool_choice="any").ainvoke("Weather in Paris?")
    )
    streamed = _cut_off(tiny_model_dir, streaming=True).bind_tools([WEATHER], tool_choice="any")
    assert _error(await streamed.ainvoke("Weather in Paris?")) == _error(whole)


async def test_chunks_added_up_carry_the_errors_for_restore_call_errors(tiny_model_dir):
    llm = _cut_off(tiny_model_dir).bind_tools([WEATHER], tool_choice="any")
    whole = llm.invoke("Weather in Paris?")
    total = None
    async for chunk in llm.astream("Weather in Paris?"):
        total = chunk if total is None else total + chunk
    assert total.invalid_tool_calls[0]["error"] is None  # what LangChain's merge leaves
    restored = restore_call_errors(total)
    assert total.response_metadata["invalid_tool_call_errors"] == {
        restored.invalid_tool_calls[0]["id"]: _error(whole)
    }
    assert _error(restored) == _error(whole)


@wrap_model_call
def force_a_call(request, handler):
    return handler(request.override(tool_choice="any"))


def _first_reply(agent, question, stream_mode):
    """The agent's first AIMessage and how many token chunks streamed before the recursion limit.

    Inside LangGraph a rejected call also gets a stand-in call, so the agent goes round again (and the
    tiny model is cut off again) until the limit: the first reply is the one under test.
    """
    first, tokens = None, 0
    with contextlib.suppress(GraphRecursionError):
        for mode, data in agent.stream(question, {"recursion_limit": 4}, stream_mode=stream_mode):
            if mode == "values":
                replies = [m for m in data["messages"] if isinstance(m, AIMessage)]
                first = first or (replies[0] if replies else None)
            else:
                tokens += 1
    return first, tokens


def test_streamed_agent_sees_the_same_error_as_an_invoked_one(tiny_model_dir):
    def get_weather(city: str) -> str:
        """Get the weather."""
        return "sunny"

    agent = create_agent(_cut_off(tiny_model_dir), tools=[get_weather], middleware=[force_a_call])
    question = {"messages": [HumanMessage("Weather in Paris?")]}
    invoked, tokens = _first_reply(agent, question, ["values"])
    assert tokens == 0 and "cut off" in _error(invoked)
    streamed, tokens = _first_reply(agent, question, ["messages", "values"])
    assert tokens and isinstance(streamed, AIMessage)  # the model really streamed
    assert _error(streamed) == _error(invoked)
