"""Incremental, string-aware scanner that finds where a JSON (or Python-literal) value ends.

It tracks only what delimits a value: the stack of open ``{``/``[``, whether it is inside a ``"..."`` or
``'...'`` string, and a pending backslash escape. Text is fed in pieces and each character is looked at
once (runs of uninteresting characters are skipped with a regex), so the total work is linear in the
length of the value however it is chunked. The value's meaning is decided later, by the decoding ladder.
"""

from __future__ import annotations

import re

CLOSE_TAG = "</tool_call>"

# Status codes returned by ValueScanner.scan.
MORE = 0  # the value is still open: feed more text
END = 1  # the value closed; the returned index is just past its last character
REPAIR = 2  # an explicit </tool_call> starts at the returned index while brackets are still open

_SKIP_OUTSIDE = re.compile(r"[^\"'{}\[\]<]+").match
_SKIP_IN_STRING = {'"': re.compile(r'[^"\\]+').match, "'": re.compile(r"[^'\\]+").match}


class ValueScanner:
    """Finds the end of one bracketed value fed in pieces; see the module docstring."""

    __slots__ = ("escape", "max_depth", "quote", "stack")

    def __init__(self) -> None:
        self.stack: list[str] = []
        self.quote = ""
        self.escape = False
        self.max_depth = 0

    def scan(self, s: str, i: int, final: bool) -> tuple[int, int]:
        """Scan ``s`` from ``i``; return ``(status, index)``.

        With status MORE the index is where scanning stopped: normally ``len(s)``, or earlier when the
        tail could be the start of ``</tool_call>`` and must be fed again together with more text.
        """
        n = len(s)
        stack = self.stack
        quote = self.quote
        if self.escape and i < n:
            self.escape = False
            i += 1
        while i < n:
            if quote:
                m = _SKIP_IN_STRING[quote](s, i)
                if m is not None:
                    i = m.end()
                    if i >= n:
                        break
                if s[i] == "\\":
                    if i + 1 < n:
                        i += 2
                    else:
                        self.escape = True
                        i = n
                else:
                    quote = ""
                    i += 1
                continue
            m = _SKIP_OUTSIDE(s, i)
            if m is not None:
                i = m.end()
                if i >= n:
                    break
            c = s[i]
            if c == "{" or c == "[":
                stack.append(c)
                if len(stack) > self.max_depth:
                    self.max_depth = len(stack)
                i += 1
            elif c == "}" or c == "]":
                if stack:
                    stack.pop()
                i += 1
                if not stack:
                    self.quote = ""
                    return END, i
            elif c == "<":
                if s.startswith(CLOSE_TAG, i):
                    self.quote = ""
                    return REPAIR, i
                if not final and n - i < len(CLOSE_TAG) and CLOSE_TAG.startswith(s[i:]):
                    self.quote = ""
                    return MORE, i
                i += 1
            else:
                quote = c
                i += 1
        self.quote = quote
        return MORE, n

    def only_braces_open(self) -> bool:
        """True when every open container is an object, so appending ``}`` can close them all."""
        return "[" not in self.stack

    def describe_open(self) -> str:
        """Why the value is unfinished, for an error message."""
        if self.quote:
            return "inside a string"
        return f"{len(self.stack)} bracket(s) still open"
