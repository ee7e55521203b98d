"""Splits the reasoning block a reply may open with (``<think>...</think>``, ``<scratch_pad>...</scratch_pad>``).

Hermes 4, DeepHermes and Qwen3 think in ``<think>``; Hermes 3 may plan in ``<scratch_pad>``. Both the
whole-text and the streaming parser push the reply through :class:`ReasoningSplitter` before the call
parser, so they split it the same way:

- Only a block at the very start counts (after optional whitespace). A tag anywhere else is prose.
- The block ends at its own closing tag (``</think>`` for ``<think>``); everything inside, tags and
  ``<tool_call>`` blocks included, is reasoning text and never a call.
- A block the reply ends inside (cut off by the token budget or an end-of-turn token) is reasoning
  cut off: all of it is reasoning, and the content is empty.
- The reasoning's leading and trailing whitespace is dropped (the caller's ``ContentJoiner`` does it).

Every decision depends only on text already seen, and only a short undecided tail is held between
pushes (a possible partial tag), so the work is linear and any chunking gives the same split.
"""

from __future__ import annotations

import re

from hermes_core.format.variants import SCRATCH_PAD, THINK

REASONING_TAGS = {block.open: block.close for block in (THINK, SCRATCH_PAD)}

REASONING, REPLY = 0, 1  # what a pushed piece of text is
_LEADING, _INSIDE, _AFTER = 0, 1, 2

_leading_ws = re.compile(r"\s*").match
_OPENINGS = tuple(REASONING_TAGS)


def opens_with_reasoning(text: str) -> bool:
    """Whether a whole reply opens (after whitespace) with a reasoning tag: a shortcut for whole text."""
    return text.startswith(_OPENINGS, _leading_ws(text).end())


class ReasoningSplitter:
    """Splits pushed text into ``(REASONING, str)`` and ``(REPLY, str)`` pieces; see the module docstring."""

    __slots__ = ("close", "found", "partial", "spaces", "state")

    def __init__(self) -> None:
        self.state = _LEADING
        self.close = ""  # the closing tag of the open block
        self.found = False  # the reply opened with a reasoning block
        self.spaces: list[str] = []  # leading whitespace, while undecided
        self.partial = ""  # a possibly partial opening tag (at the start) or closing tag (inside)

    @property
    def decided(self) -> bool:
        """True once past the reasoning block (or sure there is none): all further text is reply."""
        return self.state == _AFTER

    @property
    def inside(self) -> bool:
        """True inside the block with nothing held: text without "<" is all reasoning."""
        return self.state == _INSIDE and not self.partial

    def push(self, text: str, final: bool) -> list[tuple[int, str]]:
        """Consume ``text`` (``final``: nothing follows it); return the pieces it settles, in order."""
        if self.state == _AFTER:
            return [(REPLY, text)] if text else []
        out: list[tuple[int, str]] = []
        if self.state == _LEADING:
            text = self._leading(text, final, out)
            if text is None:
                return out
        return self._inside(text, final, out)

    def _leading(self, text: str, final: bool, out: list[tuple[int, str]]) -> str | None:
        """Before any non-whitespace: does the reply open with a reasoning tag?

        Returns the text after an opening tag, or None when undecided or decided against.
        """
        if not self.partial:
            end = _leading_ws(text).end()
            if end:
                self.spaces.append(text[:end])
                text = text[end:]
            if not text:
                if final:
                    self._no_block("", out)
                return None
        head = self.partial + text
        for opening, closing in REASONING_TAGS.items():
            if head.startswith(opening):
                self.state, self.close, self.found = _INSIDE, closing, True
                self.spaces, self.partial = [], ""
                return head[len(opening) :]
        if not final and any(opening.startswith(head) for opening in REASONING_TAGS):
            self.partial = head
            return None
        self._no_block(head, out)
        return None

    def _no_block(self, head: str, out: list[tuple[int, str]]) -> None:
        self.state = _AFTER
        reply = "".join(self.spaces) + head
        self.spaces, self.partial = [], ""
        if reply:
            out.append((REPLY, reply))

    def _inside(self, text: str, final: bool, out: list[tuple[int, str]]) -> list[tuple[int, str]]:
        """Inside the block: reasoning up to the closing tag, the reply after it."""
        close = self.close
        s = self.partial + text if self.partial else text
        self.partial = ""
        end = s.find(close)
        if end >= 0:
            if end:
                out.append((REASONING, s[:end]))
            self.state = _AFTER
            rest = s[end + len(close) :]
            if rest:
                out.append((REPLY, rest))
            return out
        keep = len(s)
        if not final:  # hold a tail that may begin the closing tag
            k = s.rfind("<", max(0, len(s) - len(close) + 1))
            if k >= 0 and close.startswith(s[k:]):
                keep = k
                self.partial = s[k:]
        if keep:
            out.append((REASONING, s[:keep]))
        if final:
            self.state = _AFTER  # cut off inside the block: all of it was reasoning
        return out
