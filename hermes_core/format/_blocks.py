"""The one state machine that splits model output into prose and tool-call blocks.

:func:`hermes_core.parse_tool_calls` pushes the whole text at once; :class:`ToolCallStreamParser` pushes
deltas. Both therefore make the same decisions. Every decision depends only on text already seen, and
when the text so far cannot decide (a possible partial tag, whitespace after ``<tool_call>``, an open
JSON value) the machine waits, keeping only the undecided tail; nothing is ever scanned twice except
that short tail, so the work is linear in the output length.

It emits items (tuples, cheap to build):

- ``(TEXT, str)``: prose outside any block;
- ``(CROSS,)``: a call block starts here (prose on both sides is joined around it);
- ``(START, index, id)``: a call object begins (only when tracking, for streaming deltas);
- ``(CHUNK, str)``: more text of that value (only when tracking);
- ``(DONE, index, calls)``: an attempt finished: a list of ToolCall / InvalidToolCall.
"""

from __future__ import annotations

import re
from typing import Any

from hermes_core.format._json_scan import CLOSE_TAG, END, MORE, ValueScanner
from hermes_core.format._tool_json import (
    DIRECT_DECODE,
    UNDECIDED,
    DecodeError,
    decode_prefix,
    decode_spanning_value,
    decode_value,
    invalid,
    make_calls,
)
from hermes_core.types import InvalidToolCall, ToolCall, new_call_id

TAG = "<tool_call>"
FENCE = "```"

TEXT, CROSS, START, CHUNK, DONE = range(5)
_IN_TEXT, _AFTER_TAG, _IN_VALUE, _AFTER_VALUE = range(4)

_skip_ws = re.compile(r"\s*").match
_json_after_tag = re.compile(r"\s*[{\[]").match  # the common case of _after_tag, decided at once
_close_after_value = re.compile(r"\s*</tool_call>").match  # the common case of _after_value
_skip_fence_info = re.compile(r"[\w+.\-]*").match  # a fence's language label, on the fence's own line
_skip_blanks = re.compile(r"[ \t]*").match
_FENCE_OPENED, _AFTER_LABEL, _IN_LABEL = 1, 2, 3  # stages of _after_tag after a fence (0: none yet)

Item = tuple[Any, ...]


class BlockSplitter:
    """Splits text into prose and call attempts; ``track`` adds START/CHUNK items for streaming."""

    __slots__ = (
        "call_id",
        "close_at",
        "close_hinted",
        "close_tried",
        "fenced",
        "held",
        "index",
        "mode",
        "out",
        "parts",
        "pending",
        "scanner",
        "stage",
        "track",
    )

    def __init__(self, track: bool = False) -> None:
        self.track = track
        self.mode = _IN_TEXT
        self.pending = ""  # a possibly partial token (< 12 chars), pushed again before the next text
        self.held: list[str] = []  # text read while undecided after a tag or a value (see below)
        self.stage = 0  # sub-state of _AFTER_TAG / _AFTER_VALUE (fence handling)
        self.fenced = False  # the current block opened with a Markdown fence line
        self.scanner: ValueScanner | None = None
        self.parts: list[str] = []  # text of the open value seen so far
        self.call_id = ""
        self.close_at = -2  # position of the next </tool_call> in the current text (-1: none, -2: unknown)
        self.close_tried = -1  # a </tool_call> position the shortcut already failed for
        self.close_hinted = -1  # a </tool_call> position already used as a decode window's end
        self.index = 0  # index of the next call attempt
        self.out: list[Item] = []

    def push(self, text: str, final: bool) -> list[Item]:
        """Consume ``text`` (``final``: nothing follows it) and return the items it settles."""
        out = self.out = []
        self.close_at = -2
        self.close_tried = -1
        self.close_hinted = -1
        if self.pending:
            text = self.pending + text
            self.pending = ""
        pos = 0
        while pos >= 0:
            mode = self.mode
            if mode == _IN_TEXT:
                pos = self._text(text, pos, final)
            elif mode == _IN_VALUE:
                pos = self._value(text, pos, final)
            elif mode == _AFTER_VALUE:
                pos = self._after_value(text, pos, final)
            else:
                pos = self._after_tag(text, pos, final)
        return out

    def in_plain_text(self) -> bool:
        """True in prose with no undecided tail: text without "<" would simply be prose."""
        return self.mode == _IN_TEXT and not self.pending

    def in_open_value(self) -> bool:
        """True inside a value being scanned, with no undecided tail."""
        return self.mode == _IN_VALUE and self.scanner is not None and not self.pending

    def continue_value(self, text: str) -> None:
        """Fast path for ``push`` inside an open value: ``text`` has no "<", "}" or "]" so cannot end it.

        The caller passes the same text on to its tracker (what a CHUNK item would carry).
        """
        self.scanner.scan(text, 0, False)
        self.parts.append(text)

    def _text(self, s: str, pos: int, final: bool) -> int:
        i = s.find(TAG, pos)
        if i < 0:
            n = len(s)
            if not final:
                k = s.rfind("<", max(pos, n - len(TAG) + 1))
                if k >= 0 and TAG.startswith(s[k:]):
                    if k > pos:
                        self.out.append((TEXT, s[pos:k]))
                    self.pending = s[k:]
                    return -1
            if n > pos:
                self.out.append((TEXT, s[pos:]))
            return -1
        if i > pos:
            self.out.append((TEXT, s[pos:i]))
        m = _json_after_tag(s, i + len(TAG))
        if m is not None:  # what _after_tag would decide: whitespace, then "{" or "["
            self.out.append((CROSS,))
            self.fenced = False
            self.mode = _IN_VALUE
            self.scanner = None
            return m.end() - 1
        self.mode = _AFTER_TAG
        self.stage = 0
        self.held = [TAG]
        return i + len(TAG)

    def _after_tag(self, s: str, pos: int, final: bool) -> int:
        """Decide whether the ``<tool_call>`` just read starts a call attempt or is prose.

        ``held`` has the tag and what followed it so far (whitespace, repeated tags, a fence line). The
        stage records how far into a fence line the text got, so a delta may end anywhere in it (even
        inside the label) and the next one resumes exactly where a whole-text scan would be.
        """
        n = len(s)
        j = pos
        stage = self.stage
        while True:
            # Stages: 0 before any fence; 1 just after an opening fence (blanks before its label);
            # 3 inside the label, e.g. "json" (it may go on in the next delta); 2 after the label.
            if stage == _FENCE_OPENED:
                j = _skip_blanks(s, j).end()
                if j >= n:
                    break
                stage = _IN_LABEL
            if stage == _IN_LABEL:
                j = _skip_fence_info(s, j).end()
                if j >= n:
                    break
                stage = _AFTER_LABEL
            j = _skip_ws(s, j).end()
            if j >= n:
                break
            c = s[j]
            if c == "{" or c == "[":
                self.held = []
                self.out.append((CROSS,))
                self.fenced = stage == _AFTER_LABEL
                self.mode = _IN_VALUE
                self.scanner = None
                return j
            if stage == 0:
                if c == "<":
                    if s.startswith(TAG, j):  # a repeated marker counts once
                        j += len(TAG)
                        continue
                    if n - j < len(TAG) and TAG.startswith(s[j:]):
                        break
                elif c == "`":
                    if s.startswith(FENCE, j):
                        j += len(FENCE)
                        stage = _FENCE_OPENED
                        continue
                    if n - j < len(FENCE) and not final:
                        break
            # Anything else: the tag (and any repeats) is prose; rescanning would decide the same.
            self.held.append(s[pos:j])
            self.out.append((TEXT, "".join(self.held)))
            self.held = []
            self.mode = _IN_TEXT
            return j
        self.held.append(s[pos:j])
        if final:
            self.held.append(s[j:])
            self._truncated_tag("".join(self.held))
            self.held = []
            return -1
        self.pending = s[j:]
        self.stage = stage
        return -1

    def _truncated_tag(self, raw: str) -> None:
        self.out.append((CROSS,))
        error = "tool call was cut off right after <tool_call>: no JSON followed"
        self._done([InvalidToolCall(raw=raw, error=error)])

    def _value(self, s: str, pos: int, final: bool) -> int:
        """Scan the JSON value starting (or continuing) at ``pos``."""
        scanner = self.scanner
        if scanner is None:
            call_id = self.call_id = new_call_id()
            if self.track and s[pos] == "{":
                self.out.append((START, self.index, call_id))
            try:
                hint = self._window_hint(s, pos) if pos > DIRECT_DECODE else 0
                value, end = decode_prefix(s, pos, hint)
            except (ValueError, RecursionError):
                value, end = self._value_before_close_tag(s, pos)
            if end >= 0:  # decoded without scanning; the same value and end the scanner would find
                raw = s[pos:end]
                if self.track:
                    self.out.append((CHUNK, raw))
                self._done(make_calls(value, raw, call_id))
                return self._value_ended(s, end)
            scanner = self.scanner = ValueScanner()
            self.parts = []
        status, j = scanner.scan(s, pos, final)
        if j > pos:
            piece = s[pos:j]
            self.parts.append(piece)
            if self.track:
                self.out.append((CHUNK, piece))
        if status == MORE:
            if final:
                self.scanner = None
                self.mode = _IN_TEXT
                raw = "".join(self.parts)
                error = f"tool call JSON was cut off before it ended ({scanner.describe_open()})"
                self._done([invalid(raw, error, self.call_id)])
            elif j < len(s):
                self.pending = s[j:]
            return -1
        self.scanner = None
        raw = "".join(self.parts)
        if status == END:
            self._done(self._decode(raw, raw, scanner))
            return self._value_ended(s, j)
        self._done(self._repair(raw, scanner))
        self.mode = _IN_TEXT
        return j + len(CLOSE_TAG)

    def _decode(self, text: str, raw: str, scanner: ValueScanner) -> list[ToolCall | InvalidToolCall]:
        try:
            value = decode_value(text, scanner.max_depth)
        except DecodeError as exc:
            return [invalid(raw, str(exc), self.call_id)]
        return make_calls(value, raw, self.call_id)

    def _repair(self, raw: str, scanner: ValueScanner) -> list[ToolCall | InvalidToolCall]:
        """The one repair: an object missing only closing braces, followed by ``</tool_call>``."""
        if not scanner.only_braces_open():
            error = "tool call JSON has an unclosed list before </tool_call>"
            return [invalid(raw, error, self.call_id)]
        try:
            value = decode_value(raw.rstrip() + "}" * len(scanner.stack), scanner.max_depth)
        except DecodeError:
            error = (
                "tool call JSON is missing closing braces before </tool_call> and is broken even with them"
            )
            return [invalid(raw, error, self.call_id)]
        return make_calls(value, raw, self.call_id)

    def _next_close_tag(self, s: str, pos: int) -> int:
        """Position of the first ``</tool_call>`` at or after ``pos`` (-1: none); each search is cached."""
        close = self.close_at
        if close == -2 or 0 <= close < pos:
            close = self.close_at = s.find(CLOSE_TAG, pos)
        return close

    def _window_hint(self, s: str, pos: int) -> int:
        """How much text to decode the value at ``pos`` from first: up to the next ``</tool_call>``.

        A value usually ends just before that tag, so one decode suffices. Each tag serves as a hint
        once; the stretches up to distinct tags do not overlap, so the hints cost linear work in all.
        """
        close = self._next_close_tag(s, pos)
        if close < 0 or close == self.close_hinted:
            return 0
        self.close_hinted = close
        return close - pos

    def _value_before_close_tag(self, s: str, pos: int) -> tuple[Any, int]:
        """Decode a non-JSON value that spans everything up to the next ``</tool_call>``, if it does.

        Returns ``(value, end)``, or ``(None, -1)`` when the scanner must decide.
        """
        close = self._next_close_tag(s, pos)
        if close < 0 or close == self.close_tried:  # at most one try per tag keeps the work linear
            return None, -1
        candidate = s[pos:close].rstrip()
        value = decode_spanning_value(candidate)
        if value is UNDECIDED:
            self.close_tried = close
            return None, -1
        return value, pos + len(candidate)

    def _value_ended(self, s: str, end: int) -> int:
        m = _close_after_value(s, end)
        if m is not None:  # what _after_value would decide: whitespace, then </tool_call>
            self.mode = _IN_TEXT
            return m.end()
        self.mode = _AFTER_VALUE
        self.stage = 0
        self.held = []
        return end

    def _after_value(self, s: str, pos: int, final: bool) -> int:
        """After a value: another value, the closing fence/tag, or the block is over and prose resumes.

        ``held`` has the whitespace read so far: prose if the block turns out to be over.
        """
        n = len(s)
        j = pos
        stage = self.stage
        while True:
            j = _skip_ws(s, j).end()
            if j >= n:
                if final:
                    return self._block_over(pos)
                break
            c = s[j]
            if stage == 0 and (c == "{" or c == "["):  # several values in one block
                self.held = []
                self.mode = _IN_VALUE
                return j
            if stage == 0 and (c == "}" or c == "]"):  # a stray extra closer is part of the block
                self.held = []
                pos = j = j + 1
                continue
            if c == "<":
                if s.startswith(CLOSE_TAG, j):
                    self.held = []
                    self.mode = _IN_TEXT
                    return j + len(CLOSE_TAG)
                if n - j < len(CLOSE_TAG) and CLOSE_TAG.startswith(s[j:]):
                    if not final:
                        break
                    if n - j >= 2:  # "</tool_ca" cut off at the very end still closes the block
                        self.held = []
                        self.mode = _IN_TEXT
                        return n
            elif c == "`" and self.fenced and stage == 0:
                if s.startswith(FENCE, j):
                    self.held = []
                    pos = j = j + len(FENCE)
                    stage = 1
                    continue
                if n - j < len(FENCE) and not final:
                    break
            return self._block_over(pos)
        self.held.append(s[pos:j])
        self.pending = s[j:]
        self.stage = stage
        return -1

    def _block_over(self, pos: int) -> int:
        """The block ended without (more of) a closing tag: held whitespace and ``s[pos:]`` are prose."""
        if self.held:
            self.out.append((TEXT, "".join(self.held)))
            self.held = []
        self.mode = _IN_TEXT
        return pos

    def _done(self, calls: list[ToolCall | InvalidToolCall]) -> None:
        self.out.append((DONE, self.index, calls))
        self.index += len(calls)
