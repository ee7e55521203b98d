"""Rejected call attempts in agent loops: the stand-in calls that keep a loop going, and what the model sees.

Stock agent loops (LangGraph's ``ToolNode`` / ``create_agent``, LlamaIndex's ``FunctionAgent``) take
another step only when a reply holds a tool call, and ignore invalid ones; a reply whose every call
attempt was rejected (schema violation, unknown tool, cut off, malformed) would end the run with no
answer and the model would never learn why. So:

- ``stand_in_calls``: for such a reply the adapters give the agent one stand-in call per rejected
  attempt, named ``REJECTED_CALL_TOOL`` (no real tool has that name, so the agent runs nothing and
  answers it with its own "unknown tool" error), with the attempt's id and ``{"tool", "error"}`` as
  arguments. A reply with at least one valid call gets none: the agent loops anyway.
- The ChatML renderer (``chatml.render_conversation``) writes an assistant turn's rejected attempts
  back as the model wrote them and answers each with ``rejection_response``: whatever tool message
  answers the attempt's id (the agent's "unknown tool" text, LangChain's generic "could not be
  executed" patch) is replaced by the rejection error, and an attempt no tool message answers gets
  that response anyway. The next prompt therefore always shows the model its attempt and why it failed.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from hermes_core.types import InvalidToolCall, ToolCall

REJECTED_CALL_TOOL = "rejected_tool_call"
"""Name of the stand-in calls; reserved (a tool with this name is never run by the stand-ins' design)."""

UNKNOWN_REJECTION = "The call could not be used (malformed, cut off or not matching the tool's schema)."
"""Error shown for an attempt whose reason was lost (e.g. a framework dropped it); adapters fall back to it."""


def stand_in_calls(
    tool_calls: Sequence[ToolCall], invalid_tool_calls: Sequence[InvalidToolCall]
) -> list[ToolCall]:
    """One stand-in per rejected attempt when a reply made attempts and none was valid, else none."""
    if tool_calls:
        return []
    return [
        ToolCall(name=REJECTED_CALL_TOOL, arguments={"tool": bad.name, "error": bad.error}, id=bad.id)
        for bad in invalid_tool_calls
    ]


def is_stand_in(call: ToolCall, rejected_ids: Collection[str]) -> bool:
    """Whether ``call`` is the stand-in of one of the rejected attempts ``rejected_ids`` of the same turn."""
    return call.name == REJECTED_CALL_TOOL and call.id in rejected_ids


def stand_in_error(arguments: Any) -> str | None:
    """The rejection error a stand-in's arguments carry (None when they carry none)."""
    error = arguments.get("error") if isinstance(arguments, dict) else None
    return error if isinstance(error, str) and error else None


def rejection_response(attempt: InvalidToolCall) -> dict[str, Any]:
    """The tool response the model sees for a rejected attempt: the tool it tried and the error."""
    return {"name": attempt.name, "content": {"error": attempt.error or UNKNOWN_REJECTION}}
