"""LangChain's agent contract: profile, ``create_agent`` structured output, rejected calls in LangGraph loops."""

from __future__ import annotations

import json
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain.agents.middleware import wrap_model_call
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.graph import END, START, MessagesState, StateGraph
from pydantic import BaseModel, Field

from hermes_core import UnsupportedOptionError, get_engine
from hermes_core.format.chatml import render_conversation
from hermes_core.format.rejected_calls import REJECTED_CALL_TOOL
from langchain_hermes import ChatHermes
from langchain_hermes._messages import to_core_messages


@tool
def get_weather(city: str) -> str:
    """Get the current weather for a city."""
    return f"It is sunny and 21 C in {city}."


class Report(BaseModel):
    """A weather report (bounded so the random tiny model finishes it)."""

    city: str = Field(max_length=8)
    sunny: bool


class BoundFormat(BaseCallbackHandler):
    """Records what each model call was bound with, and the messages it was sent."""

    def __init__(self) -> None:
        self.params: list[dict[str, Any]] = []
        self.messages: list[list[Any]] = []

    def on_chat_model_start(self, serialized: Any, messages: Any, **kwargs: Any) -> None:
        self.params.append(kwargs.get("invocation_params") or {})
        self.messages.append(list(messages[0]))


@wrap_model_call
def answer_once_a_tool_replied(request: Any, handler: Any) -> Any:
    """One call at a time; after a tool result no tools (the reply is then the structured answer)."""
    settings = dict(request.model_settings)
    if any(isinstance(m, ToolMessage) for m in request.messages):
        settings["tool_choice"] = "none"
    else:
        settings["parallel_tool_calls"] = False
    return handler(request.override(model_settings=settings))


# ------------------------------------------------------------------------------------ profile


def test_profile_declares_tool_calling_tool_choice_and_native_structured_output():
    profile = ChatHermes().profile  # nothing is loaded for this
    assert profile["tool_calling"] and profile["tool_choice"] and profile["structured_output"]
    assert profile["tool_call_streaming"] and profile["text_inputs"] and profile["text_outputs"]
    assert not profile["reasoning_output"] and not profile["image_inputs"]
    assert "max_input_tokens" not in profile  # unknown until the weights are loaded


def test_profile_token_limits_come_from_the_loaded_model(tiny_path):
    engine = get_engine(tiny_path)
    given = ChatHermes(engine=engine).profile
    assert given["max_input_tokens"] == given["max_output_tokens"] == engine.context_window
    lazy = ChatHermes(model=tiny_path, max_tokens=2)
    assert "max_input_tokens" not in lazy.profile
    lazy.invoke("Hi")
    assert lazy.profile["max_input_tokens"] == engine.context_window
    assert lazy.profile["structured_output"]
    mine = ChatHermes(
        model=tiny_path, max_tokens=2, profile={"max_input_tokens": 7, "structured_output": False}
    )
    mine.invoke("Hi")
    assert mine.profile["max_input_tokens"] == 7 and mine.profile["structured_output"] is False
    partial = ChatHermes(model=tiny_path, max_tokens=2, profile={"max_output_tokens": 5})
    partial.invoke("Hi")
    assert partial.profile == {"max_input_tokens": engine.context_window, "max_output_tokens": 5}


# --------------------------------------------------------------------------------- bind_tools


def test_bind_tools_takes_response_format_and_strict_as_create_agent_passes_them():
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": "Report", "schema": Report.model_json_schema(), "strict": True},
    }
    bound = ChatHermes().bind_tools([get_weather], response_format=response_format, strict=True)
    assert bound.kwargs["response_format"] == response_format
    assert [t["function"]["name"] for t in bound.kwargs["tools"]] == ["get_weather"]
    assert ChatHermes().bind_tools([], response_format=response_format).kwargs["tools"] == []
    with pytest.raises(UnsupportedOptionError, match=r"json_schema\.schema"):
        ChatHermes().bind_tools([get_weather], response_format={"type": "json_schema", "json_schema": {}})
    with pytest.raises(UnsupportedOptionError, match="response_format"):
        ChatHermes().bind_tools([get_weather], response_format="json")


def test_a_reply_with_tools_and_response_format_is_calls_or_json_for_the_schema(tiny_path):
    bound = ChatHermes(model=tiny_path, max_tokens=60).bind_tools([get_weather], response_format=Report)
    kinds = set()
    for seed in range(6):
        message = bound.invoke("Weather in Paris?", temperature=1.0, seed=seed)
        if message.tool_calls:
            kinds.add("calls")
            assert message.content == "" and not message.invalid_tool_calls
        else:
            kinds.add("answer")
            Report.model_validate_json(message.content)
    assert kinds == {"calls", "answer"}


# ------------------------------------------------------------------------------- create_agent


def test_create_agent_takes_the_provider_strategy(tiny_path):
    bound = BoundFormat()
    agent = create_agent(
        ChatHermes(model=tiny_path, max_tokens=60),
        tools=[get_weather],
        response_format=Report,
        middleware=[answer_once_a_tool_replied],
    )
    state = agent.invoke({"messages": [HumanMessage("Weather in Paris?")]}, {"callbacks": [bound]})
    assert isinstance(state["structured_response"], Report)
    # provider strategy: the schema is bound as response_format on every call, never offered as a tool
    for params in bound.params:
        assert params["response_format"]["type"] == "json_schema"
        assert params["response_format"]["json_schema"]["name"] == "Report"
        assert "Report" not in [t["function"]["name"] for t in params.get("tools") or []]
    final = state["messages"][-1]
    assert isinstance(final, AIMessage) and not final.tool_calls
    assert Report.model_validate_json(final.content) == state["structured_response"]
    assert not any(
        isinstance(m, ToolMessage) and "structured response" in str(m.content) for m in state["messages"]
    )


# ----------------------------------------------------------------- rejected calls in LangGraph


def _one_node_graph(node: Any) -> Any:
    graph = StateGraph(MessagesState)
    graph.add_node("model", node)
    graph.add_edge(START, "model")
    graph.add_edge("model", END)
    return graph.compile()


def test_inside_a_langgraph_node_a_reply_of_rejected_calls_carries_stand_in_calls(tiny_path):
    # Cut off inside a forced call: a real rejected attempt, with the grammar on.
    bound = ChatHermes(model=tiny_path, max_tokens=8).bind_tools([get_weather], tool_choice="any")
    outside = bound.invoke("Weather in Paris?")
    assert outside.tool_calls == [] and len(outside.invalid_tool_calls) == 1

    def invoke_node(state: MessagesState) -> dict:
        return {"messages": [bound.invoke(state["messages"])]}

    def stream_node(state: MessagesState) -> dict:
        chunks = list(bound.stream(state["messages"]))
        total = chunks[0]
        for chunk in chunks[1:]:
            total = total + chunk
        return {
            "messages": [
                AIMessage(**total.model_dump(exclude={"type", "tool_call_chunks", "chunk_position"}))
            ]
        }

    for node in (invoke_node, stream_node):
        message = _one_node_graph(node).invoke({"messages": [HumanMessage("Weather in Paris?")]})["messages"][
            -1
        ]
        [attempt] = message.invalid_tool_calls
        [stand_in] = message.tool_calls
        assert stand_in["name"] == REJECTED_CALL_TOOL and stand_in["id"] == attempt["id"]
        assert stand_in["args"]["tool"] == attempt["name"] and "cut off" in stand_in["args"]["error"]
        # the core renders the attempt and its error, never the stand-in
        prompt = render_conversation(to_core_messages([HumanMessage("Weather in Paris?"), message])).text
        assert REJECTED_CALL_TOOL not in prompt and "cut off" in prompt


def test_a_reply_with_a_valid_call_gets_no_stand_ins_inside_a_graph(tiny_path):
    bound = ChatHermes(model=tiny_path, max_tokens=40).bind_tools([get_weather], tool_choice="any")

    def node(state: MessagesState) -> dict:
        return {"messages": [bound.invoke(state["messages"])]}

    message = _one_node_graph(node).invoke({"messages": [HumanMessage("Weather in Paris?")]})["messages"][-1]
    assert [call["name"] for call in message.tool_calls] == ["get_weather"] and not message.invalid_tool_calls


def test_rejected_attempts_are_replayed_with_their_error_even_when_a_stream_lost_it():
    attempt_args = '<tool_call>\n{"name": "get_weather", "arguments": {"town": "Oslo"}}\n</tool_call>'
    message = AIMessageChunk(
        content="",
        tool_call_chunks=[
            {"name": "get_weather", "args": attempt_args, "id": "bad", "index": 0, "type": "tool_call_chunk"},
            {
                "name": REJECTED_CALL_TOOL,
                "args": json.dumps({"tool": "get_weather", "error": "argument 'city' is required"}),
                "id": "bad",
                "index": 1,
                "type": "tool_call_chunk",
            },
        ],
    )
    assert message.invalid_tool_calls[0]["error"] is None  # LangChain's chunk parsing has no error text
    [core] = to_core_messages([message])
    [replayed] = core.invalid_tool_calls
    assert replayed.raw == '{"name": "get_weather", "arguments": {"town": "Oslo"}}'
    assert replayed.error == "argument 'city' is required" and replayed.id == "bad"


# ------------------------------------------------------------------ embedded model (slow)


@pytest.mark.slow
def test_create_agent_with_response_format_returns_a_structured_response_on_the_embedded_model():
    class WeatherReport(BaseModel):
        """The weather in one city."""

        city: str = Field(max_length=40)
        temperature_c: int = Field(ge=-60, le=60)
        sunny: bool

    bound = BoundFormat()
    agent = create_agent(
        ChatHermes(max_tokens=64),
        tools=[get_weather],
        response_format=WeatherReport,
        middleware=[answer_once_a_tool_replied],
    )
    state = agent.invoke(
        {"messages": [HumanMessage("What is the weather in Paris?")]},
        {"recursion_limit": 10, "callbacks": [bound]},
    )
    report = state["structured_response"]
    assert isinstance(report, WeatherReport)
    assert all(p["response_format"]["json_schema"]["name"] == "WeatherReport" for p in bound.params)
    assert all("WeatherReport" not in [t["function"]["name"] for t in p["tools"]] for p in bound.params)
    assert WeatherReport.model_validate_json(state["messages"][-1].content) == report


# return_direct: the run ends once the forecast is in (the 135M model would call it again and again)
@tool(return_direct=True)
def get_forecast(city: str, days: int) -> str:
    """Weather forecast for a city for a number of days."""
    return f"Sunny for the next {days} days in {city}."


@wrap_model_call
def retry_with_the_grammar(request: Any, handler: Any) -> Any:
    """The first reply is unconstrained (so it can be invalid); after a rejection the grammar makes the
    retry one valid call. Only drives a 135M model's choices; the error reaches the model regardless."""
    last = request.messages[-1]
    if isinstance(last, ToolMessage) and last.name == REJECTED_CALL_TOOL:
        settings = {**request.model_settings, "constrained": True, "parallel_tool_calls": False}
        request = request.override(tool_choice="any", model_settings=settings)
    return handler(request)


REJECTED_LOOP_HISTORY = [
    # An earlier call that leaves out `days` (now required): the model imitates it, and that is invalid.
    HumanMessage("Forecast for Rome?"),
    AIMessage("", tool_calls=[{"name": "get_forecast", "args": {"city": "Rome"}, "id": "call_rome"}]),
    HumanMessage("Forecast for Paris?"),
]


@pytest.mark.slow
def test_create_agent_shows_the_model_why_its_call_was_rejected():
    seen = BoundFormat()
    agent = create_agent(
        ChatHermes(max_tokens=48, constrained=False), [get_forecast], middleware=[retry_with_the_grammar]
    )
    state = agent.invoke({"messages": REJECTED_LOOP_HISTORY}, {"recursion_limit": 10, "callbacks": [seen]})
    messages = state["messages"][len(REJECTED_LOOP_HISTORY) :]

    first = messages[0]
    assert isinstance(first, AIMessage) and len(first.invalid_tool_calls) == 1
    error = first.invalid_tool_calls[0]["error"]
    assert "'days' is required" in error
    assert [c["name"] for c in first.tool_calls] == [REJECTED_CALL_TOOL]  # what kept the loop going
    answer = messages[1]
    assert isinstance(answer, ToolMessage) and answer.tool_call_id == first.invalid_tool_calls[0]["id"]
    assert answer.status == "error"  # ToolNode's own "not a valid tool" reply to the stand-in

    # the next model call's prompt shows the attempt and the rejection error, not ToolNode's text
    prompt = render_conversation(to_core_messages(seen.messages[1])).text
    attempt = json.dumps({"name": "get_forecast", "arguments": {"city": "Paris"}})
    assert prompt.count(attempt) == 1 and json.dumps(error)[1:-1] in prompt
    assert REJECTED_CALL_TOOL not in prompt

    retry = messages[2]
    assert [c["name"] for c in retry.tool_calls] == ["get_forecast"] and not retry.invalid_tool_calls
    result = messages[3]
    assert messages[-1] is result and isinstance(result, ToolMessage)  # the tool ran; return_direct ends it
    args = retry.tool_calls[0]["args"]
    assert result.content == f"Sunny for the next {args['days']} days in {args['city']}."
