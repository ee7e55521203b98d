"""A small grammar tree and its GBNF spelling, as llama.cpp's grammar parser (``llama-grammar.cpp``) reads it.

llama.cpp's GBNF is stricter than xgrammar's EBNF: rule names are ``[a-zA-Z0-9-]+``, literal escapes are
only ``\\x \\u \\U \\t \\r \\n \\\\ \\" \\[ \\] \\-``, repetition bounds are non-negative integers and there
are no lookaheads or macros. Every node here prints in that common subset, which xgrammar parses too.
"""

from __future__ import annotations

from dataclasses import dataclass

_PLAIN = frozenset(" !#$%&'()*+,./:;<=>?@^_`{|}~") | frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
)
MAX_CODEPOINT = 0x10FFFF


def escape_char(codepoint: int, *, in_class: bool = False) -> str:
    """One character as GBNF writes it: printable ASCII as itself, the rest as ``\\x``/``\\u``/``\\U``."""
    char = chr(codepoint)
    if char == "\\" or char == '"' or (in_class and char in "[]-"):
        return "\\" + char
    if (char in _PLAIN and not (in_class and char == "^")) or (not in_class and char in "[]-"):
        return char
    if char == "\n":
        return "\\n"
    if char == "\t":
        return "\\t"
    if char == "\r":
        return "\\r"
    if codepoint < 0x100:
        return f"\\x{codepoint:02x}"
    if codepoint < 0x10000:
        return f"\\u{codepoint:04x}"
    return f"\\U{codepoint:08x}"


class Node:
    """A grammar expression."""

    def gbnf(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True)
class Literal(Node):
    text: str

    def gbnf(self) -> str:
        return '"' + "".join(escape_char(ord(c)) for c in self.text) + '"'


@dataclass(frozen=True)
class CharClass(Node):
    """A set of characters: ``ranges`` of inclusive codepoints, or everything but them when ``negated``."""

    ranges: tuple[tuple[int, int], ...]
    negated: bool = False

    def gbnf(self) -> str:
        if not self.ranges and not self.negated:
            raise ValueError("an empty character class matches nothing")
        parts = []
        for low, high in self.ranges:
            if low == high:
                parts.append(escape_char(low, in_class=True))
            else:
                parts.append(escape_char(low, in_class=True) + "-" + escape_char(high, in_class=True))
        return "[" + ("^" if self.negated else "") + "".join(parts) + "]"

    def without(self, removed: tuple[tuple[int, int], ...]) -> CharClass:
        """The same class minus the ``removed`` codepoint ranges."""
        if self.negated:
            return CharClass(normalize_ranges(self.ranges + removed), negated=True)
        return CharClass(subtract_ranges(self.ranges, removed))


@dataclass(frozen=True)
class Ref(Node):
    name: str

    def gbnf(self) -> str:
        return self.name


@dataclass(frozen=True)
class Seq(Node):
    items: tuple[Node, ...]

    def gbnf(self) -> str:
        if not self.items:
            return '""'
        return " ".join(_grouped(item, Alt) for item in self.items)


@dataclass(frozen=True)
class Alt(Node):
    options: tuple[Node, ...]

    def gbnf(self) -> str:
        return " | ".join(option.gbnf() for option in self.options)


@dataclass(frozen=True)
class Repeat(Node):
    """``item`` between ``low`` and ``high`` times (``high`` None: unbounded)."""

    item: Node
    low: int
    high: int | None

    def gbnf(self) -> str:
        inner = _grouped(self.item, (Alt, Seq, Repeat))
        if (self.low, self.high) == (0, None):
            return inner + "*"
        if (self.low, self.high) == (1, None):
            return inner + "+"
        if (self.low, self.high) == (0, 1):
            return inner + "?"
        if self.high is None:
            return f"{inner}{{{self.low},}}"
        if self.low == self.high:
            return f"{inner}{{{self.low}}}"
        return f"{inner}{{{self.low},{self.high}}}"


def _grouped(node: Node, kinds: type | tuple[type, ...]) -> str:
    text = node.gbnf()
    if isinstance(node, kinds) and not (isinstance(node, Seq) and len(node.items) == 1):
        return "(" + text + ")"
    return text


def normalize_ranges(ranges: tuple[tuple[int, int], ...]) -> tuple[tuple[int, int], ...]:
    """Sorted, merged, non-overlapping ranges."""
    merged: list[list[int]] = []
    for low, high in sorted(ranges):
        if merged and low <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], high)
        else:
            merged.append([low, high])
    return tuple((low, high) for low, high in merged)


def subtract_ranges(
    ranges: tuple[tuple[int, int], ...], removed: tuple[tuple[int, int], ...]
) -> tuple[tuple[int, int], ...]:
    """``ranges`` without any codepoint in ``removed``."""
    result = list(normalize_ranges(ranges))
    for cut_low, cut_high in normalize_ranges(removed):
        kept: list[tuple[int, int]] = []
        for low, high in result:
            if high < cut_low or low > cut_high:
                kept.append((low, high))
                continue
            if low < cut_low:
                kept.append((low, cut_low - 1))
            if high > cut_high:
                kept.append((cut_high + 1, high))
        result = kept
    return tuple(result)
