"""Follows one streamed call object to report its name early and its arguments as JSON pieces.

Used only for streaming progress (``tool_call_delta`` events); the call's final value always comes
from the decoding ladder, never from here. The arguments object is re-emitted as JSON while it grows:

- double-quoted strings are copied, with raw control characters escaped;
- single-quoted (Python) strings become double-quoted (``"`` inside is escaped, ``\\'`` unescaped);
- bare ``True``/``False``/``None`` become ``true``/``false``/``null``; tuples become lists;
- trailing commas before ``}``/``]`` are dropped;
- everything else (numbers, other escapes, punctuation) is copied as written.

What holds: the pieces concatenate to JSON that decodes to the call's arguments whenever the block is
JSON (strict, with trailing commas, or with raw control characters in strings), or Python literal
syntax made of dicts, lists, tuples, strings using only the escapes JSON shares (or ``\\'``),
``True``/``False``/``None`` and JSON-form numbers. Not covered (copied as written, so possibly not
JSON; the final ``tool_call`` event is authoritative): other escapes (``\\x41``, octal, ``\\N{..}``, and
``\\/`` or surrogate-pair ``\\u`` escapes in a block that only decodes as Python), Python-only numbers
(``0x1F``, ``1_000``, ``.5``, ``+1``), comments, triple-quoted strings, implicit string concatenation;
and a call with duplicate keys or with both ``arguments`` and ``parameters`` objects, where the first
``name`` string and the first arguments-like object seen are the ones streamed.
"""

from __future__ import annotations

import ast
import json
import re

_ARG_KEYS = ("arguments", "parameters")
_WORDS = {"True": "true", "False": "false", "None": "null"}
_CONTROL_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}

# Depth-1 (call object) level: skip what cannot change the structure or the current key.
_skip_top = re.compile(r"[^\"'{}\[\]:,]+").match
_skip_nested = re.compile(r"[^\"'{}\[\]]+").match
_skip_string = {'"': re.compile(r'[^"\\]+').match, "'": re.compile(r"[^'\\]+").match}
# Inside the arguments object.
_SPACE = frozenset(" \t\r\n")
_spaces = re.compile(r"[ \t\r\n]+").match
_word_rest = re.compile(r"\w*").match
_plain = re.compile(r"[^ \t\r\n,{}\[\]()\"'A-Za-z_]+").match  # numbers, colons and the like, copied
_OPENERS = {"{": "{", "[": "[", "(": "["}  # a Python tuple becomes a JSON list
_CLOSERS = {"}": "}", "]": "]", ")": "]"}
_arg_string_run = {
    '"': re.compile(r'[^"\\\x00-\x1f]+').match,
    "'": re.compile(r"[^'\"\\\x00-\x1f]+").match,
}

_KEY, _COLON, _VALUE, _NEXT = range(4)
_JSON = json.JSONDecoder(strict=False)


def _control(c: str) -> str:
    return _CONTROL_ESCAPES.get(c) or f"\\u{ord(c):04x}"


def _decode_string(quote: str, body: str) -> str | None:
    if "\\" not in body:
        return body
    try:
        value = _JSON.decode(quote + body + quote) if quote == '"' else ast.literal_eval(quote + body + quote)
    except Exception:  # a malformed escape: the key or name is simply not known early
        return None
    return value if isinstance(value, str) else None


class CallTracker:
    """Streaming view of one call object: see the module docstring."""

    __slots__ = (
        "args_depth",
        "args_state",
        "capture",
        "comma",
        "depth",
        "escape",
        "expect",
        "key",
        "name_sent",
        "out",
        "quote",
        "word",
    )

    def __init__(self) -> None:
        self.depth = 0  # 1 inside the call object
        self.quote = ""
        self.escape = False  # a backslash ended the previous piece
        self.expect = _KEY
        self.key: str | None = None
        self.capture: list[str] | None = None  # body of a depth-1 key or name string being read
        self.args_state = 0  # 0 not seen, 1 streaming, 2 finished
        self.args_depth = 0  # depth of the arguments object itself
        self.word: list[str] = []  # a bare word in the arguments, held until it ends
        self.comma: list[str] = []  # a comma and the whitespace after it, held until known not trailing
        self.name_sent = False
        self.out: list[str] = []

    def feed(self, text: str) -> tuple[str | None, str]:
        """Read more of the call's text; return a newly known name (or None) and new argument JSON."""
        self.out = []
        name = None
        i = 0
        n = len(text)
        while i < n:
            if self.args_state == 1:
                i = self._args(text, i)
                continue
            if self.depth > 1:
                i = self._nested(text, i)
                continue
            if self.quote:
                i, found = self._top_string(text, i)
                if found is not None:
                    name = found
                continue
            m = _skip_top(text, i)
            if m is not None:
                i = m.end()
                if i >= n:
                    break
            c = text[i]
            i += 1
            if c == "{" or c == "[":
                if self.depth == 0:
                    self.depth = 1
                elif self.expect == _VALUE and c == "{" and self.key in _ARG_KEYS and not self.args_state:
                    self.expect = _NEXT
                    self.args_state = 1
                    self.depth = self.args_depth = 2
                    self.out.append("{")
                else:
                    self.expect = _NEXT
                    self.depth += 1
            elif c == "}" or c == "]":
                self.depth -= 1
            elif c == ":":
                if self.expect == _COLON:
                    self.expect = _VALUE
            elif c == ",":
                self.expect = _KEY
                self.key = None
            else:
                self.quote = c
                if self.expect == _KEY:
                    self.capture = []
                elif self.expect == _VALUE:
                    self.expect = _NEXT
                    if self.key == "name" and not self.name_sent:
                        self.capture = []
        return name, "".join(self.out)

    def _top_string(self, text: str, i: int) -> tuple[int, str | None]:
        """Inside a depth-1 string: skip it, or collect it when it is a key or the name."""
        capture = self.capture
        if self.escape:
            self.escape = False
            if capture is not None:
                capture.append("\\" + text[i])
            return i + 1, None
        m = _skip_string[self.quote](text, i)
        if m is not None:
            if capture is not None:
                capture.append(m.group(0))
            i = m.end()
            if i >= len(text):
                return i, None
        if text[i] == "\\":
            if i + 1 < len(text):
                if capture is not None:
                    capture.append(text[i : i + 2])
                return i + 2, None
            self.escape = True
            return i + 1, None
        quote = self.quote
        self.quote = ""
        if capture is None:
            return i + 1, None
        self.capture = None
        value = _decode_string(quote, "".join(capture))
        if self.expect == _KEY:
            self.key = value
            self.expect = _COLON
            return i + 1, None
        name = value.strip() if value else ""
        if not name:
            return i + 1, None
        self.name_sent = True
        return i + 1, name

    def _nested(self, text: str, i: int) -> int:
        """Inside a container that is not the arguments: only find where it closes."""
        if self.quote:
            if self.escape:
                self.escape = False
                return i + 1
            m = _skip_string[self.quote](text, i)
            if m is not None:
                i = m.end()
                if i >= len(text):
                    return i
            if text[i] == "\\":
                if i + 1 < len(text):
                    return i + 2
                self.escape = True
                return i + 1
            self.quote = ""
            return i + 1
        m = _skip_nested(text, i)
        if m is not None:
            i = m.end()
            if i >= len(text):
                return i
        c = text[i]
        if c == "{" or c == "[":
            self.depth += 1
        elif c == "}" or c == "]":
            self.depth -= 1
        else:
            self.quote = c
        return i + 1

    def _args(self, text: str, i: int) -> int:
        """Inside the arguments object: translate to JSON until it closes or the text ends."""
        out = self.out
        n = len(text)
        while i < n:
            quote = self.quote
            if quote:
                if self.escape:
                    self.escape = False
                    c = text[i]
                    out.append("'" if c == "'" else "\\" + c)
                    i += 1
                    continue
                m = _arg_string_run[quote](text, i)
                if m is not None:
                    out.append(m.group(0))
                    i = m.end()
                    if i >= n:
                        break
                c = text[i]
                if c == "\\":
                    if i + 1 < n:
                        nxt = text[i + 1]
                        out.append("'" if nxt == "'" else "\\" + nxt)
                        i += 2
                        continue
                    self.escape = True
                elif c == quote:
                    self.quote = ""
                    out.append('"')
                elif c == '"':
                    out.append('\\"')
                else:
                    out.append(_control(c))
                i += 1
                continue
            if self.word:  # a bare word held from the previous piece may go on here
                m = _word_rest(text, i)
                i = m.end()
                self.word.append(m.group(0))
                if i >= n:
                    break
                self._flush_word()
                continue
            c = text[i]
            if c in _SPACE:
                m = _spaces(text, i)
                i = m.end()
                if self.comma:
                    self.comma.append(m.group(0))
                else:
                    out.append(m.group(0))
                continue
            if c == ",":
                if self.comma:
                    out.extend(self.comma)
                self.comma = [","]
                i += 1
                continue
            if c in _CLOSERS:
                if self.comma:  # a trailing comma: drop it, keep the whitespace after it
                    out.extend(self.comma[1:])
                    self.comma = []
                out.append(_CLOSERS[c])
                i += 1
                self.depth -= 1
                if self.depth < self.args_depth:
                    self.args_state = 2
                    break
                continue
            if self.comma:
                out.extend(self.comma)
                self.comma = []
            if c in _OPENERS:
                self.depth += 1
                out.append(_OPENERS[c])
                i += 1
            elif c == '"' or c == "'":
                self.quote = c
                out.append('"')
                i += 1
            elif c.isalpha() or c == "_":
                m = _word_rest(text, i + 1)
                self.word = [c, m.group(0)]
                i = m.end()
                if i < n:  # the word ended inside this piece; otherwise hold it
                    self._flush_word()
            else:
                m = _plain(text, i)
                out.append(m.group(0))
                i = m.end()
        return i

    def _flush_word(self) -> None:
        word = "".join(self.word)
        self.word = []
        self.out.append(_WORDS.get(word, word))

    @property
    def args_started(self) -> bool:
        """Whether argument pieces were emitted for this call."""
        return self.args_state != 0

    def close_args(self) -> str:
        """JSON that completes arguments left open (the missing-braces repair); empty when closed."""
        if self.args_state != 1:
            return ""
        self.out = []
        if self.word:
            self._flush_word()
        self.comma = []
        if self.quote:
            self.out.append('"')
        self.out.append("}" * (self.depth - self.args_depth + 1))
        self.args_state = 2
        return "".join(self.out)
