"""Type conversion at the LlamaIndex boundary: ``ChatMessage`` <-> core ``Message``, result -> ``ChatResponse``.

Nothing here renders prompts or parses model text; the core does both. This module only maps
LlamaIndex's message shapes (content blocks, ``additional_kwargs``) to the neutral types and back.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from llama_index.core.base.llms.types import (
    CachePoint,
    ChatMessage,
    ChatResponse,
    CitableBlock,
    CitationBlock,
    MessageRole,
    TextBlock,
    ThinkingBlock,
    ToolCallBlock,
)

from hermes_core.errors import UnsupportedOptionError
from hermes_core.format.rejected_calls import UNKNOWN_REJECTION
from hermes_core.types import GenerationResult, InvalidToolCall, Message, Role, ToolCall, Usage, new_call_id

_ROLES: dict[MessageRole, Role] = {
    MessageRole.SYSTEM: "system",
    MessageRole.DEVELOPER: "system",
    MessageRole.USER: "user",
    MessageRole.ASSISTANT: "assistant",
    MessageRole.MODEL: "assistant",
    MessageRole.CHATBOT: "assistant",
    MessageRole.TOOL: "tool",
    MessageRole.FUNCTION: "tool",
}


def _block_text(block: Any, index: int, role: str) -> str | None:
    """Text a content block contributes to the prompt; None for blocks that carry no prompt text."""
    if isinstance(block, TextBlock):
        return block.text
    if isinstance(block, CitableBlock):
        return "\n".join(_block_text(inner, index, role) or "" for inner in block.content)
    if isinstance(block, CitationBlock):
        return _block_text(block.cited_content, index, role)
    if isinstance(block, (ToolCallBlock, ThinkingBlock, CachePoint)):
        return None
    raise UnsupportedOptionError(
        f"HermesLLM is text-only, but message {index} ({role}) contains a {type(block).__name__}; "
        "remove non-text blocks (images, audio, video, documents) or describe them in text."
    )


def _message_text(message: ChatMessage, index: int) -> str:
    """Join a message's text blocks the way ``ChatMessage.content`` does (newline-separated)."""
    pieces = [_block_text(block, index, message.role.value) for block in message.blocks]
    return "\n".join(piece for piece in pieces if piece is not None)


def _arguments(value: Any, where: str) -> dict[str, Any]:
    """Tool-call arguments as a dict; JSON text is decoded, anything else is a clear error."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except json.JSONDecodeError as exc:
            raise UnsupportedOptionError(
                f"{where}: tool-call arguments are not valid JSON ({exc}); pass a dict or a JSON object string."
            ) from exc
    if not isinstance(value, dict):
        raise UnsupportedOptionError(
            f"{where}: tool-call arguments must be a JSON object, got {type(value).__name__}."
        )
    return dict(value)


def _legacy_tool_call(raw: Any, where: str) -> ToolCall:
    """One OpenAI-style entry of ``additional_kwargs["tool_calls"]`` (a dict or an SDK object)."""
    function = raw.get("function") if isinstance(raw, dict) else getattr(raw, "function", None)
    call_id = raw.get("id") if isinstance(raw, dict) else getattr(raw, "id", None)
    name = function.get("name") if isinstance(function, dict) else getattr(function, "name", None)
    arguments = (
        function.get("arguments") if isinstance(function, dict) else getattr(function, "arguments", None)
    )
    if not isinstance(name, str) or not name:
        raise UnsupportedOptionError(
            f"{where}: additional_kwargs['tool_calls'] entry {raw!r} has no function name; "
            "use ToolCallBlock(tool_name=..., tool_kwargs=..., tool_call_id=...) blocks instead."
        )
    return ToolCall(name=name, arguments=_arguments(arguments or {}, where), id=call_id or new_call_id())


def _assistant_tool_calls(message: ChatMessage, index: int) -> list[ToolCall]:
    """Calls an assistant turn made: its ``ToolCallBlock``s, else legacy ``additional_kwargs["tool_calls"]``."""
    where = f"message {index} (assistant)"
    blocks = [block for block in message.blocks if isinstance(block, ToolCallBlock)]
    if blocks:
        return [
            ToolCall(
                name=block.tool_name,
                arguments=_arguments(block.tool_kwargs, where),
                id=block.tool_call_id or new_call_id(),
            )
            for block in blocks
        ]
    return [_legacy_tool_call(raw, where) for raw in message.additional_kwargs.get("tool_calls") or []]


def rejected_attempts(message: ChatMessage) -> list[InvalidToolCall]:
    """An assistant turn's rejected call attempts (``invalid_call_dict`` records), replayed with their errors."""
    records = message.additional_kwargs.get("invalid_tool_calls") or []
    return [
        InvalidToolCall(
            raw=str(item.get("raw") or ""),
            error=str(item.get("error") or UNKNOWN_REJECTION),
            name=item.get("name"),
            id=item.get("id") or new_call_id(),
        )
        for item in records
        if isinstance(item, dict)
    ]


def _reasoning(message: ChatMessage) -> str | None:
    """An assistant turn's ``ThinkingBlock`` text (replayed only with ``keep_reasoning=True``)."""
    parts = [block.content or "" for block in message.blocks if isinstance(block, ThinkingBlock)]
    return "".join(parts) if parts else None


def to_core_messages(messages: Sequence[ChatMessage]) -> list[Message]:
    """Convert a LlamaIndex conversation to core messages.

    A tool result's name comes from ``additional_kwargs["name"]``/``["tool_name"]`` when given;
    otherwise the core finds it from the assistant call its ``tool_call_id`` answers.
    """
    converted: list[Message] = []
    for index, message in enumerate(messages):
        if not isinstance(message, ChatMessage):
            raise UnsupportedOptionError(
                f"message {index} is a {type(message).__name__}, not a ChatMessage; "
                "build messages with llama_index.core.llms.ChatMessage(role=..., content=...)."
            )
        role = _ROLES.get(message.role)
        if role is None:
            raise UnsupportedOptionError(f"message {index} has unsupported role {message.role.value!r}.")
        text = _message_text(message, index)
        if role == "assistant":
            converted.append(
                Message(
                    role="assistant",
                    content=text,
                    tool_calls=_assistant_tool_calls(message, index),
                    invalid_tool_calls=rejected_attempts(message),
                    reasoning=_reasoning(message),
                )
            )
        elif role == "tool":
            extra = message.additional_kwargs
            name = extra.get("name") or extra.get("tool_name")
            converted.append(
                Message(role="tool", content=text, tool_call_id=extra.get("tool_call_id"), name=name)
            )
        else:
            converted.append(Message(role=role, content=text))
    return converted


def openai_tool_call(call: ToolCall) -> dict[str, Any]:
    """A call in the OpenAI shape LlamaIndex still reads from ``additional_kwargs["tool_calls"]``."""
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": json.dumps(call.arguments, ensure_ascii=False)},
    }


def invalid_call_dict(call: InvalidToolCall) -> dict[str, Any]:
    """A JSON-safe record of a call attempt the core rejected, with the reason."""
    return {"id": call.id, "name": call.name, "raw": call.raw, "error": call.error}


def usage_dict(usage: Usage) -> dict[str, int]:
    """Token counts under the keys other LlamaIndex LLMs use in ``additional_kwargs``."""
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def assistant_message(
    content: str,
    tool_calls: Sequence[ToolCall],
    invalid_tool_calls: Sequence[InvalidToolCall] = (),
    reasoning: str | None = None,
) -> ChatMessage:
    """An assistant ``ChatMessage``: the reasoning as a ``ThinkingBlock`` (first, when there is any), a
    text block, one ``ToolCallBlock`` per call, calls mirrored in kwargs."""
    blocks: list[Any] = [ThinkingBlock(content=reasoning)] if reasoning else []
    blocks.append(TextBlock(text=content))
    blocks += [
        ToolCallBlock(tool_call_id=call.id, tool_name=call.name, tool_kwargs=dict(call.arguments))
        for call in tool_calls
    ]
    extra: dict[str, Any] = {}
    if tool_calls:
        extra["tool_calls"] = [openai_tool_call(call) for call in tool_calls]
    if invalid_tool_calls:
        extra["invalid_tool_calls"] = [invalid_call_dict(call) for call in invalid_tool_calls]
    return ChatMessage(role=MessageRole.ASSISTANT, blocks=blocks, additional_kwargs=extra)


def raw_dict(result: GenerationResult, tool_calls: Sequence[ToolCall]) -> dict[str, Any]:
    """JSON-safe ``raw`` payload: generated text, finish reason, usage and any rejected calls."""
    return {
        "model": result.model_name,
        "text": result.raw_text,
        "content": result.content,
        "reasoning": result.reasoning,
        "finish_reason": result.finish_reason,
        "usage": usage_dict(result.usage),
        "tool_calls": [openai_tool_call(call) for call in tool_calls],
        "invalid_tool_calls": [invalid_call_dict(call) for call in result.invalid_tool_calls],
        "appended_text": result.appended_text,
        "dropped": [{"text": d.text, "reason": d.reason} for d in result.dropped],
    }


def chat_response(
    result: GenerationResult, *, max_tool_calls: int | None = None, delta: str | None = None
) -> ChatResponse:
    """The ``ChatResponse`` for a finished generation (``max_tool_calls=1`` keeps only the first call)."""
    calls = (
        list(result.tool_calls)[:max_tool_calls] if max_tool_calls is not None else list(result.tool_calls)
    )
    return ChatResponse(
        message=assistant_message(result.content, calls, result.invalid_tool_calls, result.reasoning),
        raw=raw_dict(result, calls),
        delta=delta,
        additional_kwargs=usage_dict(result.usage),
    )
