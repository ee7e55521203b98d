"""What a turn keeps of repeated and cut-off tool calls, applied while the reply streams.

Small models given ``tool_choice="required"`` and parallel calls tend to repeat the call they just made
until the token budget runs out, the last copy cut off. The policy, for any model and engine:

- A call identical to one already made in the same turn (same name, equal arguments) ends the turn and
  is dropped (``duplicate_tool_calls="end_turn"``, the default); ``"keep"`` keeps repeats, for tools
  where calling twice is meant (rolling a die twice).
- Once the turn has a finished call, a further call block cut off by the token budget is dropped
  rather than reported as an invalid call (one whose JSON object is whole, only its close tag cut,
  is a finished call and is kept).

``CallGate`` wraps a ``ToolCallStreamParser``: after the first finished call it holds back the parser's
events for text that may still become another call, and releases them once that call finishes (or the
text turns out to be prose); a dropped block never reaches the parser's result, so streamed events and
the final result agree. Dropped text is listed in ``dropped``.
"""

from __future__ import annotations

import copy
import json
import re
from typing import Literal

from hermes_core.format.reply_completion import CALL_OPEN
from hermes_core.format.stream_parser import ToolCallStreamParser
from hermes_core.types import DroppedText, DropReason, StreamEvent, ToolCall

DuplicateToolCalls = Literal["end_turn", "keep"]
DUPLICATE_TOOL_CALLS: tuple[str, ...] = ("end_turn", "keep")


def check_duplicate_tool_calls(value: str) -> DuplicateToolCalls:
    """``value`` if it is a known duplicate-call policy; otherwise a one-line error naming the choices."""
    if value not in DUPLICATE_TOOL_CALLS:
        from hermes_core.errors import UnsupportedOptionError

        raise UnsupportedOptionError(
            f"duplicate_tool_calls must be 'end_turn' (a repeated call ends the turn and is dropped) or "
            f"'keep' (repeats are kept), got {value!r}."
        )
    return value  # type: ignore[return-value]


def _call_key(call: ToolCall) -> str:
    """Name and arguments as canonical JSON: equal for the same call whatever the key order."""
    return json.dumps([call.name, call.arguments], sort_keys=True, ensure_ascii=False, default=repr)


_SPLIT_AFTER = re.compile(r"[^>}]*(?:[>}]|\Z)")


def _split_after(text: str) -> list[str]:
    """``text`` cut after every ``>`` and ``}``, the characters at which a call block can finish."""
    if ">" not in text and "}" not in text:
        return [text] if text else []
    return [part for part in _SPLIT_AFTER.findall(text) if part]


def _could_be_call(held: str) -> bool:
    """True while the text after a finished call may still be (the start of) another call block."""
    head = held.lstrip()
    return head.startswith(CALL_OPEN) or CALL_OPEN.startswith(head)


class CallGate:
    """A ``ToolCallStreamParser`` that applies the repeated/cut-off call policy (see the module doc)."""

    def __init__(self, parser: ToolCallStreamParser, duplicates: DuplicateToolCalls = "end_turn") -> None:
        self.parser = parser
        self.duplicates = duplicates
        self.dropped: list[DroppedText] = []
        self._made: set[str] = set()
        self._finished = 0  # finished call attempts (valid or not)
        self._snapshot: ToolCallStreamParser | None = None  # the parser right after the last finished call
        self._held: list[StreamEvent] = []
        self._held_text = ""

    @property
    def has_call(self) -> bool:
        """True once a call of this turn has finished."""
        return self._finished > 0

    def feed(self, text: str) -> tuple[list[StreamEvent], bool]:
        """Events released for ``text``, and whether the turn ends here (a repeated call was dropped)."""
        events: list[StreamEvent] = []
        # A call can only finish at a ">" (its close tag) or a "}": feeding up to each of them separately
        # puts the snapshot right where a call ends, even when one piece ends a call and starts another.
        for part in _split_after(text):
            released, ended = self._feed_part(part)
            events += released
            if ended:
                return events, True
        return events, False

    def _feed_part(self, text: str) -> tuple[list[StreamEvent], bool]:
        events = self.parser.feed(text)
        if self._snapshot is None:
            self._note(events)
            return events, False
        self._held += events
        self._held_text += text
        finished = [e for e in events if e.type in ("tool_call", "invalid_tool_call")]
        if finished:
            call = finished[0].tool_call
            if call is not None and self.duplicates == "end_turn" and _call_key(call) in self._made:
                self._drop("duplicate_call")
                return [], True
            return self._release(), False
        if not _could_be_call(self._held_text):
            return self._release(), False
        return [], False

    def close(self, cut_off: bool) -> list[StreamEvent]:
        """Events settling the end of the reply; ``cut_off``: the token budget ended it."""
        if cut_off and self._held_text.strip() and _could_be_call(self._held_text):
            self._drop("cut_off_call")
            return self.parser.close()
        held, self._held, self._held_text = self._held, [], ""
        return held + self.parser.close()

    def _note(self, events: list[StreamEvent]) -> None:
        """Record finished calls; after one, take the snapshot that a dropped block returns to."""
        for event in events:
            if event.type in ("tool_call", "invalid_tool_call"):
                self._finished += 1
                if event.tool_call is not None:
                    self._made.add(_call_key(event.tool_call))
        if self._finished:
            self._snapshot = copy.deepcopy(self.parser)

    def _release(self) -> list[StreamEvent]:
        held, self._held, self._held_text = self._held, [], ""
        self._note(held)
        return held

    def _drop(self, reason: DropReason) -> None:
        assert self._snapshot is not None
        self.dropped.append(DroppedText(self._held_text, reason))
        self.parser = self._snapshot
        self._snapshot = copy.deepcopy(self.parser)
        self._held, self._held_text = [], ""
