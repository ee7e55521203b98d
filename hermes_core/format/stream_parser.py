"""Incremental parsing of Hermes tool calls from streamed text deltas.

:class:`ToolCallStreamParser` runs the same state machine as :func:`hermes_core.parse_tool_calls`, fed
piece by piece, so for any chunking of an output its final :meth:`~ToolCallStreamParser.result` equals
the whole-text parse (content exactly, calls and invalid attempts in order). Each character is scanned
once; only an undecided tail is kept between deltas.

Events:

- ``reasoning``: more of the reasoning block the reply opened with (``<think>``, ``<scratch_pad>``),
  whitespace at its start and end left out; the pieces concatenate to the final ``reasoning``. They
  all come before any other event: content and calls only start after the block.
- ``text``: prose certainly outside any call block. Held back are only a tail that could still begin
  ``<tool_call>`` or an end-of-turn token, the tag-plus-whitespace while it is undecided whether a call
  follows, and whitespace (released once non-whitespace prose follows, because trailing whitespace
  is trimmed and whitespace around removed blocks is merged). The text events concatenate to the
  final ``content``.
- ``tool_call_delta``: a call object has started (first delta: ``index`` and ``id``), its name became
  known (``name``, sent once), or its arguments grew (``arguments``, a piece of JSON text). For
  JSON calls, JSON with trailing commas or raw newlines in strings, and ordinary Python-dict calls,
  the argument pieces concatenate to JSON that decodes to the final ``arguments`` (see
  :mod:`hermes_core.format._call_tracker` for the exotic Python syntax where it may not). Arguments given as
  a JSON string, or missing, arrive as one piece when the call completes. A top-level list of calls
  is reported when the list closes: one delta (id, name, full arguments) per call.
- ``tool_call`` / ``invalid_tool_call``: the finished attempt, ``index`` as in its deltas, same ``id``
  (an id is drawn when the attempt starts and kept to the end; every attempt counts in ``index``).

After an end-of-turn token the parse is complete and further input is ignored.
"""

from __future__ import annotations

import json

from hermes_core.format._blocks import CHUNK, CROSS, DONE, START, TEXT, BlockSplitter, Item
from hermes_core.format._call_tracker import CallTracker
from hermes_core.format._content import ContentJoiner, end_of_turn_hold, find_end_of_turn
from hermes_core.format._reasoning import REASONING, ReasoningSplitter
from hermes_core.types import InvalidToolCall, ParsedResponse, StreamEvent, ToolCall, ToolCallDelta

_PROSE, _VALUE, _THINKING = 1, 2, 3


class ToolCallStreamParser:
    """Parses tool calls from text deltas; ``result()`` equals ``parse_tool_calls`` on the whole text."""

    def __init__(self) -> None:
        self._reasoning = ReasoningSplitter()
        self._reasoning_joiner = ContentJoiner()
        self._thoughts: list[str] = []
        self._splitter = BlockSplitter(track=True)
        self._joiner = ContentJoiner()
        self._hold = ""  # a tail that could begin an end-of-turn token
        self._finished = False
        self._content: list[str] = []
        self._calls: list[ToolCall] = []
        self._invalid: list[InvalidToolCall] = []
        self._tracker: CallTracker | None = None
        self._tracked_id = ""
        self._tracked_index = 0
        self._fast = 0  # which fast path of feed() applies now (0: none; none until the start is read)

    @property
    def finished(self) -> bool:
        """True once close() was called or an end-of-turn token was seen."""
        return self._finished

    def feed(self, delta: str) -> list[StreamEvent]:
        """Consume the next piece of model output and return the events it settles."""
        fast = self._fast
        if fast and "<" not in delta:
            # Fast paths, same outcome as the general one. Nothing is held back, and a delta without
            # "<" can neither begin a tag nor an end-of-turn token: in prose it is all prose, inside
            # the reasoning block all reasoning, and inside an open value it cannot end the value
            # unless it holds a closing bracket.
            if fast == _PROSE:
                piece = self._joiner.add(delta)
                if not piece:
                    return []
                self._content.append(piece)
                return [StreamEvent("text", text=piece)]
            if fast == _THINKING:
                return self._think(delta, [])
            if "}" not in delta and "]" not in delta:
                self._splitter.continue_value(delta)
                return self._progress(delta, [])
        if self._finished or not delta:
            return []
        text = self._hold + delta if self._hold else delta
        if "<" not in text:
            self._hold = ""
            events = self._run(text, False)
        else:
            end = find_end_of_turn(text)
            if end >= 0:
                self._hold = ""
                events = self._run(text[:end], True)
            else:
                cut = end_of_turn_hold(text)
                self._hold = text[cut:]
                events = self._run(text[:cut], False) if cut else []
        if self._finished or self._hold:
            self._fast = 0
        elif not self._reasoning.decided:
            self._fast = _THINKING if self._reasoning.inside else 0
        else:
            self._fast = (
                _PROSE if self._splitter.in_plain_text() else _VALUE if self._splitter.in_open_value() else 0
            )
        return events

    def close(self) -> list[StreamEvent]:
        """Signal the end of the output: settle everything still held back."""
        if self._finished:
            return []
        text, self._hold = self._hold, ""
        self._fast = 0
        return self._run(text, True)

    def result(self) -> ParsedResponse:
        """The parse so far; complete after close() or an end-of-turn token."""
        return ParsedResponse(
            content="".join(self._content),
            tool_calls=list(self._calls),
            invalid_tool_calls=list(self._invalid),
            reasoning="".join(self._thoughts) if self._reasoning.found else None,
        )

    def _think(self, text: str, events: list[StreamEvent]) -> list[StreamEvent]:
        piece = self._reasoning_joiner.add(text)
        if piece:
            self._thoughts.append(piece)
            events.append(StreamEvent("reasoning", text=piece))
        return events

    def _run(self, text: str, final: bool) -> list[StreamEvent]:
        if final:
            self._finished = True
        events: list[StreamEvent] = []
        if not self._reasoning.decided:
            reply = []
            for kind, piece in self._reasoning.push(text, final):
                if kind == REASONING:
                    self._think(piece, events)
                else:
                    reply.append(piece)
            text = "".join(reply)
            if not text and not final:
                return events
        for item in self._splitter.push(text, final):
            kind = item[0]
            if kind == TEXT:
                piece = self._joiner.add(item[1])
                if piece:
                    self._content.append(piece)
                    events.append(StreamEvent("text", text=piece))
            elif kind == CHUNK:
                self._progress(item[1], events)
            elif kind == START:
                self._tracker = CallTracker()
                self._tracked_index = item[1]
                self._tracked_id = item[2]
                events.append(_delta(item[1], item[2]))
            elif kind == CROSS:
                self._joiner.cross()
            else:
                self._finish(item, events)
        return events

    def _progress(self, text: str, events: list[StreamEvent]) -> list[StreamEvent]:
        tracker = self._tracker
        if tracker is not None:
            name, arguments = tracker.feed(text)
            if name is not None or arguments:
                events.append(_delta(self._tracked_index, self._tracked_id, name, arguments))
        return events

    def _finish(self, item: Item, events: list[StreamEvent]) -> None:
        assert item[0] == DONE
        index, calls = item[1], item[2]
        tracker, self._tracker = self._tracker, None
        for offset, call in enumerate(calls):
            at = index + offset
            if type(call) is ToolCall:
                if tracker is not None and call.id == self._tracked_id:
                    name = None if tracker.name_sent else call.name
                    if tracker.args_started:
                        arguments = tracker.close_args()
                    else:
                        arguments = json.dumps(call.arguments, ensure_ascii=False)
                else:
                    name, arguments = call.name, json.dumps(call.arguments, ensure_ascii=False)
                if name is not None or arguments:
                    events.append(_delta(at, call.id, name, arguments))
                self._calls.append(call)
                events.append(StreamEvent("tool_call", tool_call=call, index=at))
            else:
                self._invalid.append(call)
                events.append(StreamEvent("invalid_tool_call", invalid_tool_call=call, index=at))


def _delta(index: int, call_id: str, name: str | None = None, arguments: str = "") -> StreamEvent:
    return StreamEvent(
        "tool_call_delta",
        delta=ToolCallDelta(index=index, id=call_id, name=name, arguments=arguments),
        index=index,
    )
