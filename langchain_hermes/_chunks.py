"""Core ``StreamEvent``s -> LangChain ``ChatGenerationChunk``s.

Chunks are designed so that adding them up (``chunk1 + chunk2 + ...``) gives the same message
as ``invoke`` for the same generation:

- reasoning (the ``<think>`` block a reply may open with) arrives first, piece by piece, in
  ``additional_kwargs["reasoning_content"]`` (concatenated by the merge, as ``invoke`` reports it;
  with ``output_version="v1"`` also as a ``reasoning`` content block numbered 0);
- prose arrives token by token as ``content``; call markup never appears in it;
- each call arrives as ONE ``tool_call_chunk`` once the core has finished and validated it.
  LangChain merges ``tool_call_chunks`` by concatenating ``args`` and re-parses them leniently,
  so a call streamed piece by piece could not be taken back if it later turned out truncated or
  schema-violating; the core's ``tool_call_delta`` events are therefore not forwarded;
- an invalid attempt arrives as a chunk whose ``args`` are the attempted call block (see
  ``invalid_call_args``), which LangChain reports under ``invalid_tool_calls``. LangChain's chunk
  merge rebuilds those with ``error=None``, so the reasons also travel, by call id, in the last
  chunk's ``response_metadata["invalid_tool_call_errors"]``; ``restore_call_errors`` puts them back
  (``ChatHermes`` does so itself when ``invoke`` streams internally, as in a streamed agent);
- the last chunk carries usage, ``finish_reason``, ``model_name`` and those errors (once, so merging
  neither sums nor concatenates them twice) and ``chunk_position="last"``;
- with ``output_version="v1"`` content blocks are numbered here (text run, call, call, text run:
  0, 1, 2, 3; a call's ``tool_call_chunks`` index is its block number). LangChain would otherwise
  number text blocks itself, a text block could share its number with a call, and the two would
  merge into one broken block.
"""

from __future__ import annotations

from langchain_core.messages import AIMessageChunk
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.outputs import ChatGenerationChunk

from hermes_core.types import StreamEvent
from langchain_hermes._messages import (
    invalid_call_args,
    reasoning_kwargs,
    to_response_metadata,
    to_usage_metadata,
    tool_call_args_json,
)


class ChunkBuilder:
    """Turns the core events of one stream into chunks (stateful only for v1 block numbering)."""

    def __init__(self, *, v1: bool = False) -> None:
        self._v1 = v1
        self._block = -1
        self._in_text = False
        self._reasoning_block: int | None = None

    def chunk(self, event: StreamEvent) -> ChatGenerationChunk | None:
        """The chunk to emit for one event, or None when the event adds nothing."""
        if event.type == "text":
            return self._text(event.text) if event.text else None
        if event.type == "reasoning":
            return self._reasoning(event.text) if event.text else None
        if event.type == "tool_call" and event.tool_call is not None:
            call = event.tool_call
            return self._call(call.name, tool_call_args_json(call), call.id, event.index)
        if event.type == "invalid_tool_call" and event.invalid_tool_call is not None:
            bad = event.invalid_tool_call
            return self._call(bad.name, invalid_call_args(bad), bad.id, event.index)
        if event.type == "end" and event.result is not None:
            message = AIMessageChunk(
                content=[] if self._v1 else "",
                usage_metadata=to_usage_metadata(event.result.usage),
                response_metadata=to_response_metadata(event.result),
                chunk_position="last",
            )
            return ChatGenerationChunk(message=message)
        return None  # tool_call_delta: see the module docstring

    def _reasoning(self, text: str) -> ChatGenerationChunk:
        extra = reasoning_kwargs(text)
        if not self._v1:
            return ChatGenerationChunk(message=AIMessageChunk(content="", additional_kwargs=extra))
        if self._reasoning_block is None:  # the reasoning comes before any other block
            self._block += 1
            self._reasoning_block = self._block
        block = {"type": "reasoning", "reasoning": text, "index": self._reasoning_block}
        return ChatGenerationChunk(message=AIMessageChunk(content=[block], additional_kwargs=extra))

    def _text(self, text: str) -> ChatGenerationChunk:
        if not self._v1:
            return ChatGenerationChunk(message=AIMessageChunk(content=text))
        if not self._in_text:
            self._block += 1
            self._in_text = True
        block = {"type": "text", "text": text, "index": self._block}
        return ChatGenerationChunk(message=AIMessageChunk(content=[block]))

    def _call(self, name: str | None, args: str, call_id: str, index: int | None) -> ChatGenerationChunk:
        if self._v1:  # LangChain turns the chunk into a content block carrying this index
            self._block += 1
            self._in_text = False
            index = self._block
        piece = tool_call_chunk(name=name, args=args, id=call_id, index=index)
        content: str | list = [] if self._v1 else ""
        return ChatGenerationChunk(message=AIMessageChunk(content=content, tool_call_chunks=[piece]))


def event_to_chunk(event: StreamEvent) -> ChatGenerationChunk | None:
    """The chunk for one event of a default (string-content) stream."""
    return ChunkBuilder().chunk(event)
