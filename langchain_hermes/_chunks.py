"""Core ``StreamEvent``s -> LangChain ``ChatGenerationChunk``s.

Chunks are designed so that adding them up (``chunk1 + chunk2 + ...``) gives the same message
as ``invoke`` for the same generation:

- prose arrives token by token as ``content``; call markup never appears in it;
- each call arrives as ONE ``tool_call_chunk`` once the core has finished and validated it.
  LangChain merges ``tool_call_chunks`` by concatenating ``args`` and re-parses them leniently,
  so a call streamed piece by piece could not be taken back if it later turned out truncated or
  schema-violating; the core's ``tool_call_delta`` events are therefore not forwarded;
- an invalid attempt arrives as a chunk whose ``args`` are the attempted call block (see
  ``invalid_call_args``), which LangChain reports under ``invalid_tool_calls``. LangChain's chunk
  merge cannot carry the ``error`` text (it is ``None`` in the aggregate; ``invoke`` keeps it);
- the last chunk carries usage, ``finish_reason`` and ``model_name`` (once, so merging neither
  sums nor concatenates them twice) and ``chunk_position="last"``.
"""

from __future__ import annotations

from langchain_core.messages import AIMessageChunk
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.outputs import ChatGenerationChunk

from hermes_core.types import StreamEvent
from langchain_hermes._messages import (
    invalid_call_args,
    to_response_metadata,
    to_usage_metadata,
    tool_call_args_json,
)


def event_to_chunk(event: StreamEvent) -> ChatGenerationChunk | None:
    """The chunk to emit for one core stream event, or None when the event adds nothing."""
    if event.type == "text":
        if not event.text:
            return None
        return ChatGenerationChunk(message=AIMessageChunk(content=event.text), text=event.text)
    if event.type == "tool_call" and event.tool_call is not None:
        call = event.tool_call
        piece = tool_call_chunk(name=call.name, args=tool_call_args_json(call), id=call.id, index=event.index)
        return ChatGenerationChunk(message=AIMessageChunk(content="", tool_call_chunks=[piece]))
    if event.type == "invalid_tool_call" and event.invalid_tool_call is not None:
        bad = event.invalid_tool_call
        piece = tool_call_chunk(name=bad.name, args=invalid_call_args(bad), id=bad.id, index=event.index)
        return ChatGenerationChunk(message=AIMessageChunk(content="", tool_call_chunks=[piece]))
    if event.type == "end" and event.result is not None:
        result = event.result
        message = AIMessageChunk(
            content="",
            usage_metadata=to_usage_metadata(result.usage),
            response_metadata=to_response_metadata(result),
            chunk_position="last",
        )
        return ChatGenerationChunk(message=message)
    return None  # tool_call_delta: see the module docstring
