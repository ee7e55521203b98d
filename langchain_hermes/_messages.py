"""LangChain <-> hermes_core message conversion: chat history in, ``AIMessage`` out.

Only types change here; rendering the prompt and parsing the reply are ``hermes_core``'s job.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.messages.ai import UsageMetadata
from langchain_core.messages.tool import invalid_tool_call, tool_call

from hermes_core.errors import UnsupportedOptionError
from hermes_core.format.rejected_calls import REJECTED_CALL_TOOL, UNKNOWN_REJECTION, stand_in_error
from hermes_core.types import GenerationResult, InvalidToolCall, Message, ToolCall, Usage, new_call_id

PROVIDER = "hermes"
# Hermes call delimiters (the format's, as in hermes_core.grammar, which is too heavy to import here).
_CALL_OPEN, _CALL_CLOSE = "<tool_call>", "</tool_call>"

_CHAT_ROLES = {
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "ai": "assistant",
    "system": "system",
    "developer": "system",
    "tool": "tool",
}


def to_core_messages(messages: Sequence[BaseMessage]) -> list[Message]:
    """Convert a LangChain chat history to core ``Message``s (roles, text, tool calls, tool results)."""
    return [_to_core_message(message) for message in messages]


def _to_core_message(message: BaseMessage) -> Message:
    """Convert one LangChain message; raise a clear error for kinds a text-only model cannot take."""
    if isinstance(message, SystemMessage):
        return Message("system", _plain_text(message, "system"))
    if isinstance(message, HumanMessage):
        return Message("user", _plain_text(message, "human"))
    if isinstance(message, AIMessage):
        return Message(
            "assistant",
            _ai_text(message),
            tool_calls=_core_tool_calls(message),
            invalid_tool_calls=_core_invalid_calls(message),
            reasoning=_ai_reasoning(message),
        )
    if isinstance(message, ToolMessage):
        return Message(
            "tool",
            _tool_content(message),
            tool_call_id=message.tool_call_id,
            name=message.name,
        )
    if isinstance(message, FunctionMessage):
        return Message("tool", _tool_value(message.content), name=message.name)
    if isinstance(message, ChatMessage):
        role = _CHAT_ROLES.get(message.role.lower())
        if role is None:
            raise UnsupportedOptionError(
                f"ChatMessage role {message.role!r} has no Hermes equivalent; use one of "
                f"{sorted(_CHAT_ROLES)} or a SystemMessage/HumanMessage/AIMessage/ToolMessage."
            )
        if role == "tool":
            return Message("tool", _tool_value(message.content))
        return Message(role, _plain_text(message, message.role))
    raise UnsupportedOptionError(
        f"ChatHermes cannot take a {type(message).__name__} in the conversation; pass "
        "SystemMessage, HumanMessage, AIMessage, ToolMessage or ChatMessage objects."
    )


def _plain_text(message: BaseMessage, kind: str) -> str:
    """Join the text blocks of a system/human message; other media are refused (text-only model)."""
    if isinstance(message.content, str):
        return message.content
    texts: list[str] = []
    for block in message.content_blocks:
        if block["type"] == "text":
            texts.append(block["text"])
        else:
            raise UnsupportedOptionError(
                f"ChatHermes runs text-only models, but a {kind} message holds a {block['type']!r} "
                "content block; remove it or describe it in a text block."
            )
    return "".join(texts)


def _ai_text(message: AIMessage) -> str:
    """The prose of an assistant turn, from string content or v0/v1 content blocks."""
    if isinstance(message.content, str):
        return message.content
    # Calls travel in ``tool_calls``; reasoning and provider-specific blocks are not replayed.
    return "".join(block["text"] for block in message.content_blocks if block["type"] == "text")


def _ai_reasoning(message: AIMessage) -> str | None:
    """An assistant turn's reasoning: ``additional_kwargs["reasoning_content"]``, else its reasoning blocks.

    Kept on the core message; the prompt leaves it out unless ``keep_reasoning=True`` is passed.
    """
    reasoning = message.additional_kwargs.get("reasoning_content")
    if isinstance(reasoning, str):
        return reasoning
    if isinstance(message.content, str):
        return None
    parts = [block.get("reasoning", "") for block in message.content_blocks if block["type"] == "reasoning"]
    return "".join(parts) if parts else None


def _core_tool_calls(message: AIMessage) -> list[ToolCall]:
    """The assistant's calls (stand-ins for rejected attempts included: the core leaves them out)."""
    calls = []
    for call in message.tool_calls:
        if call.get("id"):
            calls.append(ToolCall(name=call["name"], arguments=dict(call["args"]), id=call["id"]))
        else:
            calls.append(ToolCall(name=call["name"], arguments=dict(call["args"])))
    return calls


def _core_invalid_calls(message: AIMessage) -> list[InvalidToolCall]:
    """The assistant's rejected attempts, replayed to the model with their errors.

    ``args`` is the attempt as ``invalid_call_args`` wrapped it (or another provider's raw text). An
    error lost on the way (LangChain's chunk merge drops it) is taken from the attempt's stand-in call,
    else a generic one is used.
    """
    stand_in_errors = {
        call.get("id"): stand_in_error(call.get("args"))
        for call in message.tool_calls
        if call.get("name") == REJECTED_CALL_TOOL
    }
    attempts = []
    for bad in message.invalid_tool_calls:
        raw = bad.get("args") or ""
        if raw.startswith(_CALL_OPEN + "\n") and raw.endswith("\n" + _CALL_CLOSE):
            raw = raw[len(_CALL_OPEN) + 1 : -len(_CALL_CLOSE) - 1]
        call_id = bad.get("id") or new_call_id()
        error = bad.get("error") or stand_in_errors.get(call_id) or UNKNOWN_REJECTION
        attempts.append(InvalidToolCall(raw=raw, error=error, name=bad.get("name"), id=call_id))
    return attempts


def _tool_content(message: ToolMessage) -> Any:
    """A tool result as text or JSON data; a failed tool (``status="error"``) becomes ``{"error": ...}``."""
    content = _tool_value(message.content)
    if message.status == "error":
        return {"error": content}
    return content


def _tool_value(content: str | list[str | dict[str, Any]]) -> Any:
    """Text blocks join into one string; plain data (dicts that are not content blocks) stays JSON."""
    if isinstance(content, str):
        return content
    texts: list[str] = []
    values: list[Any] = []
    for item in content:
        if isinstance(item, str):
            texts.append(item)
            values.append(item)
        elif item.get("type") == "text" and isinstance(item.get("text"), str):
            texts.append(item["text"])
            values.append(item["text"])
        elif item.get("type") in {"image", "image_url", "audio", "input_audio", "video", "file"}:
            raise UnsupportedOptionError(
                f"ChatHermes runs text-only models, but a tool result holds a {item['type']!r} block; "
                "return text or JSON data from the tool instead."
            )
        else:
            values.append(item)
    if len(texts) == len(values):
        return "".join(texts)
    return values


def to_ai_message(result: GenerationResult) -> AIMessage:
    """Build the ``AIMessage`` for one finished generation (calls, invalid calls, usage, metadata).

    The reasoning block the reply opened with goes to ``additional_kwargs["reasoning_content"]``
    (where LangChain looks for it: ``content_blocks`` and ``output_version="v1"`` show it as a
    ``reasoning`` block first), never into ``content``.
    """
    return AIMessage(
        content=result.content,
        additional_kwargs=reasoning_kwargs(result.reasoning),
        tool_calls=[to_lc_tool_call(call) for call in result.tool_calls],
        invalid_tool_calls=[to_lc_invalid_tool_call(call) for call in result.invalid_tool_calls],
        usage_metadata=to_usage_metadata(result.usage),
        response_metadata=to_response_metadata(result),
    )


def reasoning_kwargs(reasoning: str | None) -> dict[str, Any]:
    """``{"reasoning_content": ...}`` for a non-empty reasoning, else nothing."""
    return {"reasoning_content": reasoning} if reasoning else {}


def to_lc_tool_call(call: ToolCall) -> Any:
    """A core call as a LangChain ``ToolCall`` dict (the core's id is kept: tool nodes need it)."""
    return tool_call(name=call.name, args=call.arguments, id=call.id)


def to_lc_invalid_tool_call(call: InvalidToolCall) -> Any:
    """A failed call attempt: ``args`` is the attempted call block, ``error`` says what is wrong."""
    return invalid_tool_call(name=call.name, args=invalid_call_args(call), id=call.id, error=call.error)


def invalid_call_args(call: InvalidToolCall) -> str:
    """The attempt as a Hermes call block around the core's raw call text.

    Not the bare raw JSON: LangChain re-parses streamed ``args`` leniently (repairing cut-off JSON),
    so a bare ``{"name": ...}`` would merge into a *valid* call; text starting with the tag never
    parses, so the streamed aggregate reports the attempt as invalid exactly like ``invoke``.
    """
    return f"{_CALL_OPEN}\n{call.raw}\n{_CALL_CLOSE}"


def tool_call_args_json(call: ToolCall) -> str:
    """The JSON text of a call's arguments, as streamed in ``tool_call_chunks``."""
    return json.dumps(call.arguments, ensure_ascii=False)


def to_usage_metadata(usage: Usage) -> UsageMetadata:
    """Token counts in LangChain's shape."""
    return UsageMetadata(
        input_tokens=usage.prompt_tokens,
        output_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
    )


INVALID_CALL_ERRORS = "invalid_tool_call_errors"
"""``response_metadata`` key: the reason for each invalid call, by call id (it survives adding up chunks)."""


def to_response_metadata(result: GenerationResult) -> dict[str, Any]:
    """Why generation stopped, which model answered, why each invalid call attempt was rejected; text
    appended to finish a cut-off reply, and generated text the reply left out, where there was any."""
    metadata: dict[str, Any] = {
        "finish_reason": result.finish_reason,
        "model_name": result.model_name,
        "model_provider": PROVIDER,
    }
    if result.invalid_tool_calls:
        metadata[INVALID_CALL_ERRORS] = {call.id: call.error for call in result.invalid_tool_calls}
    if result.appended_text:
        metadata["appended_text"] = result.appended_text
    if result.dropped:
        metadata["dropped"] = [{"text": d.text, "reason": d.reason} for d in result.dropped]
    return metadata


def restore_call_errors(message: AIMessage) -> AIMessage:
    """``message`` with each invalid call's ``error`` put back from its ``response_metadata``.

    LangChain rebuilds ``invalid_tool_calls`` from ``tool_call_chunks`` whenever chunks are added up,
    always with ``error=None``; the reasons travel in ``response_metadata["invalid_tool_call_errors"]``.
    Use it on a message you added up from ``stream``/``astream`` chunks yourself; ``ChatHermes`` applies
    it to what ``invoke``/``generate`` return when they stream internally (agents, ``streaming=True``).
    """
    errors = message.response_metadata.get(INVALID_CALL_ERRORS)
    if not isinstance(errors, dict):
        return message

    def fixed(item: Any) -> Any:
        if isinstance(item, dict) and item.get("error") is None and item.get("id") in errors:
            return {**item, "error": errors[item["id"]]}
        return item

    update: dict[str, Any] = {"invalid_tool_calls": [fixed(call) for call in message.invalid_tool_calls]}
    if isinstance(message.content, list):  # output_version="v1": invalid calls are content blocks too
        update["content"] = [
            fixed(block) if isinstance(block, dict) and block.get("type") == "invalid_tool_call" else block
            for block in message.content
        ]
    return message.model_copy(update=update)
