"""Rejected calls in LlamaIndex agent loops: stand-in ``ToolSelection``s so ``FunctionAgent`` takes another step.

``FunctionAgent`` continues only while ``get_tool_calls_from_response`` returns calls. For a reply whose
every call attempt was rejected it returns the core's stand-in calls
(``hermes_core.format.rejected_calls``): the agent finds no tool of that name and answers with its own
"not found" error, and the next prompt shows the model its attempt and the real rejection error (the
attempts travel in the assistant message's ``additional_kwargs["invalid_tool_calls"]``). The message
itself is unchanged: its ``ToolCallBlock``s stay the valid calls only.
"""

from __future__ import annotations

from llama_index.core.base.llms.types import ChatResponse
from llama_index.core.llms.llm import ToolSelection

from hermes_core.format.rejected_calls import stand_in_calls
from llama_index_hermes._messages import rejected_attempts


def stand_in_selections(response: ChatResponse, selections: list[ToolSelection]) -> list[ToolSelection]:
    """Stand-ins for ``response``'s rejected attempts when it has no valid call (``selections``), else none."""
    if selections:
        return []
    return [
        ToolSelection(tool_id=call.id, tool_name=call.name, tool_kwargs=call.arguments)
        for call in stand_in_calls([], rejected_attempts(response.message))
    ]
