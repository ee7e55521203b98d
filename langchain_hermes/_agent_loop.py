"""Rejected calls in LangGraph agent loops: stand-in calls that make the loop take another step.

LangGraph routes on ``AIMessage.tool_calls`` only (``tools_condition``, ``create_agent``): a reply whose
every call attempt was rejected would end the run, and ``ToolNode`` never reads ``invalid_tool_calls``.
So inside a LangGraph node such a reply also lists the core's stand-in calls
(``hermes_core.format.rejected_calls``): ``ToolNode`` answers them with an "unknown tool" error and the
next prompt shows the model its attempt and the real rejection error. Outside LangGraph the message
is left as is: rejected attempts appear only in ``invalid_tool_calls``.
"""

from __future__ import annotations

import json

from langchain_core.messages import AIMessage
from langchain_core.outputs import ChatGenerationChunk
from langchain_core.runnables.config import var_child_runnable_config

from hermes_core.format.rejected_calls import stand_in_calls
from hermes_core.types import GenerationResult, StreamEvent
from langchain_hermes._chunks import ChunkBuilder
from langchain_hermes._messages import to_lc_tool_call


def in_langgraph_node() -> bool:
    """Whether this model call runs inside a LangGraph node (LangGraph marks the node in the run config)."""
    config = var_child_runnable_config.get()
    metadata = (config or {}).get("metadata") or {}
    return "langgraph_node" in metadata


def with_stand_ins(message: AIMessage, result: GenerationResult) -> AIMessage:
    """``message`` with the stand-in calls of ``result``'s rejected attempts added to its ``tool_calls``."""
    stand_ins = stand_in_calls(result.tool_calls, result.invalid_tool_calls)
    if not stand_ins:
        return message
    return message.model_copy(
        update={"tool_calls": [*message.tool_calls, *(to_lc_tool_call(call) for call in stand_ins)]}
    )


class AgentChunkBuilder(ChunkBuilder):
    """A ``ChunkBuilder`` that can also stream the stand-in calls, so a streamed reply adds up to ``invoke``'s."""

    def stand_in_chunks(self, result: GenerationResult) -> list[ChatGenerationChunk]:
        """One chunk per stand-in call, indexed after every call attempt of the reply (emit before the last chunk)."""
        stand_ins = stand_in_calls(result.tool_calls, result.invalid_tool_calls)
        first = len(result.tool_calls) + len(result.invalid_tool_calls)
        return [
            self._call(call.name, json.dumps(call.arguments, ensure_ascii=False), call.id, first + offset)
            for offset, call in enumerate(stand_ins)
        ]

    def chunks(self, event: StreamEvent, agent_loop: bool) -> list[ChatGenerationChunk]:
        """The chunks of one stream event; in an agent loop the stand-in calls come before the last one."""
        ending = agent_loop and event.type == "end" and event.result is not None
        chunks = self.stand_in_chunks(event.result) if ending else []  # type: ignore[arg-type]
        chunk = self.chunk(event)
        return [*chunks, chunk] if chunk is not None else chunks
