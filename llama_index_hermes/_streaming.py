"""Turns the engine's stream events into LlamaIndex ``ChatResponse`` chunks.

Each chunk carries the whole message so far (reasoning, text and finished calls, ids fixed by the
core); ``delta`` is only prose the core has already separated from call markup. Reasoning (the
``<think>`` block a reply may open with) comes first: each piece grows the message's ``ThinkingBlock``
and is the chunk's ``additional_kwargs["thinking_delta"]``, where LlamaIndex agents look for it (their
``AgentStream.thinking_delta``). The last chunk is built from the engine's final result exactly as
the non-streaming path builds its response.
"""

from __future__ import annotations

from typing import Any

from llama_index.core.base.llms.types import ChatResponse

from hermes_core.types import InvalidToolCall, StreamEvent, ToolCall
from llama_index_hermes._messages import assistant_message, chat_response, invalid_call_dict, openai_tool_call


class ChunkBuilder:
    """Accumulates stream events; ``max_tool_calls=1`` drops calls after the first (no parallel calls)."""

    def __init__(self, *, max_tool_calls: int | None = None) -> None:
        self.max_tool_calls = max_tool_calls
        self.text = ""
        self.reasoning = ""
        self.tool_calls: list[ToolCall] = []
        self.invalid_tool_calls: list[InvalidToolCall] = []

    def _snapshot(self, delta: str, raw: dict[str, Any], extra: dict[str, Any] | None = None) -> ChatResponse:
        message = assistant_message(self.text, self.tool_calls, self.invalid_tool_calls, self.reasoning)
        return ChatResponse(message=message, delta=delta, raw=raw, additional_kwargs=extra or {})

    def feed(self, event: StreamEvent) -> ChatResponse | None:
        """The chunk to emit for ``event``, or None when it changes nothing a consumer can use yet."""
        if event.type == "reasoning" and event.text:
            self.reasoning += event.text
            raw = {"event": "reasoning", "reasoning": event.text}
            return self._snapshot("", raw, {"thinking_delta": event.text})
        if event.type == "text" and event.text:
            self.text += event.text
            return self._snapshot(event.text, {"event": "text", "text": event.text})
        if event.type == "tool_call" and event.tool_call is not None:
            if self.max_tool_calls is not None and len(self.tool_calls) >= self.max_tool_calls:
                return None
            self.tool_calls.append(event.tool_call)
            return self._snapshot("", {"event": "tool_call", "tool_call": openai_tool_call(event.tool_call)})
        if event.type == "invalid_tool_call" and event.invalid_tool_call is not None:
            self.invalid_tool_calls.append(event.invalid_tool_call)
            raw = {
                "event": "invalid_tool_call",
                "invalid_tool_call": invalid_call_dict(event.invalid_tool_call),
            }
            return self._snapshot("", raw)
        if event.type == "end" and event.result is not None:
            final = event.result.content
            delta = final[len(self.text) :] if final.startswith(self.text) else ""
            return chat_response(event.result, max_tool_calls=self.max_tool_calls, delta=delta)
        return None
