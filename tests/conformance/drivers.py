"""One small driver per way of calling the model: the bare engine (reference), ChatHermes, HermesLLM.

Each driver runs a ``Case`` (whole or streamed) and reduces the answer to an ``Outcome``: the text,
the valid calls as (name, arguments), how many call attempts were invalid, and the reasoning the reply
opened with (None when there was none, or it was empty).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.conformance.conversations import Case


@dataclass(frozen=True)
class Outcome:
    """What an adapter's answer means, independent of its framework's types."""

    text: str
    calls: list[tuple[str, dict[str, Any]]]
    n_invalid: int
    markup_in_deltas: bool = False
    reasoning: str | None = None


Driver = Callable[[Any, Case, bool], Outcome]


def run_engine(engine: Any, case: Case, stream: bool) -> Outcome:
    """The reference: ``HermesEngine`` itself, on core messages."""
    from hermes_core.types import Message, ToolCall

    messages = [
        Message(
            role=m["role"],
            content=m.get("content", ""),
            tool_calls=[ToolCall(c["name"], c["arguments"], c["id"]) for c in m.get("tool_calls", [])],
            tool_call_id=m.get("tool_call_id"),
        )
        for m in case.messages
    ]
    options = {
        "tools": case.tools or None,
        "tool_choice": case.tool_choice,
        "parallel_tool_calls": case.parallel_tool_calls,
        "response_format": case.response_format,
        **case.generation,
    }
    if stream:
        events = list(engine.stream(messages, **options))
        markup = any("<tool_call" in e.text for e in events if e.type == "text")
        result = events[-1].result
        assert "".join(e.text for e in events if e.type == "reasoning") == (result.reasoning or "")
    else:
        markup, result = False, engine.generate(messages, **options)
    calls = [(c.name, c.arguments) for c in result.tool_calls]
    return Outcome(result.content, calls, len(result.invalid_tool_calls), markup, result.reasoning or None)


def run_langchain(engine: Any, case: Case, stream: bool) -> Outcome:
    """``ChatHermes(engine=...)`` with ``bind_tools`` / ``bind(response_format=...)``."""
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

    from langchain_hermes import ChatHermes

    kinds = {"system": SystemMessage, "user": HumanMessage}
    messages: list[Any] = []
    for m in case.messages:
        if m["role"] == "assistant":
            calls = [
                {"name": c["name"], "args": c["arguments"], "id": c["id"]} for c in m.get("tool_calls", [])
            ]
            messages.append(AIMessage(content=m["content"], tool_calls=calls))
        elif m["role"] == "tool":
            messages.append(ToolMessage(content=m["content"], tool_call_id=m["tool_call_id"]))
        else:
            messages.append(kinds[m["role"]](content=m["content"]))
    model: Any = ChatHermes(engine=engine, **case.generation)
    if case.tools:
        model = model.bind_tools(
            case.tools, tool_choice=case.tool_choice, parallel_tool_calls=case.parallel_tool_calls
        )
    if case.response_format is not None:
        model = model.bind(response_format=case.response_format)
    markup = False
    if stream:
        message: Any = None
        for chunk in model.stream(messages):
            markup = markup or "<tool_call" in str(chunk.content)
            message = chunk if message is None else message + chunk
    else:
        message = model.invoke(messages)
    calls = [(c["name"], c["args"]) for c in message.tool_calls]
    reasoning = message.additional_kwargs.get("reasoning_content")
    blocks = [b["reasoning"] for b in message.content_blocks if b["type"] == "reasoning"]
    assert blocks == ([reasoning] if reasoning else [])  # LangChain's own view of it agrees
    return Outcome(str(message.content), calls, len(message.invalid_tool_calls), markup, reasoning)


def run_llama_index(engine: Any, case: Case, stream: bool) -> Outcome:
    """``HermesLLM(engine=...)`` through the FunctionCallingLLM API (``chat_with_tools``) or ``chat``."""
    from llama_index.core.base.llms.types import ChatMessage, TextBlock, ThinkingBlock, ToolCallBlock

    from llama_index_hermes import HermesLLM

    messages: list[ChatMessage] = []
    for m in case.messages:
        if m["role"] == "assistant":
            blocks: list[Any] = [TextBlock(text=m["content"])]
            blocks += [
                ToolCallBlock(tool_call_id=c["id"], tool_name=c["name"], tool_kwargs=c["arguments"])
                for c in m.get("tool_calls", [])
            ]
            messages.append(ChatMessage(role="assistant", blocks=blocks))
        elif m["role"] == "tool":
            extra = {"tool_call_id": m["tool_call_id"]}
            messages.append(ChatMessage(role="tool", content=m["content"], additional_kwargs=extra))
        else:
            messages.append(ChatMessage(role=m["role"], content=m["content"]))
    llm = HermesLLM(engine=engine, **case.generation)
    if case.tools:
        kwargs = {"chat_history": messages, "allow_parallel_tool_calls": case.parallel_tool_calls}
        if case.tool_choice is not None:
            kwargs["tool_choice"] = case.tool_choice
        if stream:
            chunks = list(llm.stream_chat_with_tools(case.tools, **kwargs))
        else:
            chunks = [llm.chat_with_tools(case.tools, **kwargs)]
    else:
        options = {"response_format": case.response_format} if case.response_format is not None else {}
        chunks = list(llm.stream_chat(messages, **options)) if stream else [llm.chat(messages, **options)]
    markup = stream and any("<tool_call" in (c.delta or "") for c in chunks)
    final = chunks[-1].message
    calls = [(b.tool_name, b.tool_kwargs) for b in final.blocks if isinstance(b, ToolCallBlock)]
    invalid = final.additional_kwargs.get("invalid_tool_calls", [])
    thinking = [b.content for b in final.blocks if isinstance(b, ThinkingBlock)]
    reasoning = thinking[0] if thinking else None
    if stream:  # the pieces agents see as AgentStream.thinking_delta add up to it
        assert "".join(c.additional_kwargs.get("thinking_delta", "") for c in chunks) == (reasoning or "")
    return Outcome(final.content or "", calls, len(invalid), markup, reasoning)


ADAPTERS: dict[str, Driver] = {"langchain": run_langchain, "llama_index": run_llama_index}
