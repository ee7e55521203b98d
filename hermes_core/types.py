"""Neutral, framework-free data types shared by the parser, the engine and both adapters.

Adapters map these to their framework's own types at their boundary; nothing in here knows
about LangChain or LlamaIndex.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "tool_calls"]
StreamEventType = Literal["text", "reasoning", "tool_call_delta", "tool_call", "invalid_tool_call", "end"]


def new_call_id() -> str:
    """A fresh, unique tool-call id (``call_`` + 24 random hex digits)."""
    return "call_" + secrets.token_hex(12)


@dataclass
class ToolCall:
    """A well-formed call the model made: a tool name and its decoded JSON arguments."""

    name: str
    arguments: dict[str, Any]
    id: str = field(default_factory=new_call_id)


@dataclass
class InvalidToolCall:
    """A call attempt that could not be used; ``error`` says why, ready to show the model."""

    raw: str
    error: str
    name: str | None = None
    id: str = field(default_factory=new_call_id)


@dataclass
class ParsedResponse:
    """Model output split into prose (``content``), valid calls and invalid call attempts.

    ``reasoning`` is the text of the ``<think>`` / ``<scratch_pad>`` block the reply opened with
    (surrounding whitespace dropped), or None when it opened with none; it is never part of ``content``.
    """

    content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    invalid_tool_calls: list[InvalidToolCall] = field(default_factory=list)
    reasoning: str | None = None


@dataclass
class ToolCallDelta:
    """Incremental progress of the call at ``index`` (0-based, counting every call attempt).

    The first delta of a call carries ``id`` and, once known, ``name``; later ones append
    ``arguments`` text. Concatenating all ``arguments`` pieces of a valid call gives a JSON
    rendering of its final arguments object.
    """

    index: int
    id: str
    name: str | None = None
    arguments: str = ""


@dataclass
class Usage:
    """Token counts for one generation."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


DropReason = Literal["duplicate_call", "cut_off_call", "over_budget"]


@dataclass
class DroppedText:
    """Generated text a reply leaves out, and why: a repeated call that ended the turn, a further call
    the token budget cut off, or a last token that left too little budget to finish the reply."""

    text: str
    reason: DropReason


@dataclass
class GenerationResult:
    """What one generation returns: the parsed response plus why it stopped and what it cost.

    ``appended_text`` is text the frontend added to finish a constrained reply the token budget cut off
    (``finish_reason`` is then ``length``); ``dropped`` lists generated text the reply leaves out.
    """

    response: ParsedResponse
    finish_reason: FinishReason
    usage: Usage
    raw_text: str = ""
    model_name: str = ""
    appended_text: str = ""
    dropped: list[DroppedText] = field(default_factory=list)

    @property
    def content(self) -> str:
        return self.response.content

    @property
    def tool_calls(self) -> list[ToolCall]:
        return self.response.tool_calls

    @property
    def invalid_tool_calls(self) -> list[InvalidToolCall]:
        return self.response.invalid_tool_calls

    @property
    def reasoning(self) -> str | None:
        return self.response.reasoning


@dataclass
class StreamEvent:
    """One event of a streamed parse or generation.

    - ``text``: ``text`` holds prose that is certainly outside any call block.
    - ``reasoning``: ``text`` holds more of the reasoning block the reply opened with; these pieces
      concatenate to the final ``reasoning``.
    - ``tool_call_delta``: ``delta`` shows a call's name/arguments as they grow.
    - ``tool_call`` / ``invalid_tool_call``: a finished call attempt (``index`` as in deltas).
    - ``end`` (engine streams only, always last): ``result`` holds the whole generation result.
    """

    type: StreamEventType
    text: str = ""
    tool_call: ToolCall | None = None
    invalid_tool_call: InvalidToolCall | None = None
    delta: ToolCallDelta | None = None
    index: int | None = None
    result: GenerationResult | None = None


@dataclass
class Message:
    """One conversation turn in neutral form.

    ``content`` is text for system/user/assistant turns; a tool result (``role="tool"``) may
    also hold any JSON-serialisable value. ``tool_calls`` are the calls an assistant turn made;
    ``tool_call_id``/``name`` identify which call a tool result answers. ``invalid_tool_calls``
    are an assistant turn's rejected call attempts: the prompt shows them with their errors.
    ``reasoning`` is an assistant turn's reasoning, replayed into the prompt only when asked
    (``keep_reasoning``).
    """

    role: Role
    content: Any = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_id: str | None = None
    name: str | None = None
    invalid_tool_calls: list[InvalidToolCall] = field(default_factory=list)
    reasoning: str | None = None
