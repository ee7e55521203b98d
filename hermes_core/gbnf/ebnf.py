"""Read the EBNF xgrammar prints (``str(xgrammar.Grammar)``) into grammar trees that print as GBNF.

xgrammar's printed EBNF is not llama.cpp GBNF: rule names hold ``_``, unbounded repeats are ``{0, -1}``,
rules end in lookahead assertions ``(= ...)``, classes use ``\\0``/``\\f``/``\\v``, and a JSON-schema
``pattern`` prints as a ``Regex("...", json_string=true)`` macro. ``parse_ebnf`` reads all of that;
lookaheads are dropped (in xgrammar's JSON grammars they only restate what the enclosing rule requires
next, so the language is unchanged), and ``Regex`` is expanded through ``xgrammar.Grammar.from_regex``,
restricted to what a JSON string may hold unescaped when ``json_string`` is set.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hermes_core.gbnf.ast import MAX_CODEPOINT, Alt, CharClass, Literal, Node, Ref, Repeat, Seq

_TOKEN = re.compile(
    r"""
    (?P<space>\s+|\#[^\n]*)
  | (?P<define>::=)
  | (?P<literal>"(?:[^"\\]|\\.)*")
  | (?P<cls>\[\^?(?:[^\]\\]|\\.)*\])
  | (?P<lookahead>\(=)
  | (?P<macro>[A-Za-z_][\w.\-]*\()
  | (?P<keyword>[A-Za-z_]\w*\s*=\s*\w+)
  | (?P<comma>,)
  | (?P<name>[A-Za-z_][\w.\-]*)
  | (?P<bounds>\{\s*-?\d+\s*(?:,\s*-?\d*\s*)?\})
  | (?P<punct>[()|*+?])
    """,
    re.VERBOSE,
)
_SIMPLE_ESCAPES = {"0": 0, "a": 7, "b": 8, "t": 9, "n": 10, "v": 11, "f": 12, "r": 13, "e": 27}
_HEX_WIDTH = {"x": 2, "u": 4, "U": 8}
_JSON_UNSAFE = ((0x00, 0x1F), (0x22, 0x22), (0x5C, 0x5C))
"""Characters a JSON string cannot hold as themselves: controls, the quote, the backslash."""


class EbnfError(ValueError):
    """xgrammar EBNF that this reader cannot turn into GBNF (a macro or syntax it does not know)."""


@dataclass
class _Token:
    kind: str
    text: str


def _tokens(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            raise EbnfError(f"cannot read EBNF at {text[position : position + 30]!r}")
        kind = match.lastgroup or ""
        if kind != "space":
            tokens.append(_Token(kind, match.group()))
        position = match.end()
    return tokens


def _read_char(body: str, index: int) -> tuple[int, int, bool]:
    """The codepoint at ``body[index]`` (resolving xgrammar's escapes), the next index, and if it was escaped."""
    char = body[index]
    if char != "\\":
        return ord(char), index + 1, False
    code = body[index + 1]
    if code in _HEX_WIDTH:
        width = _HEX_WIDTH[code]
        digits = body[index + 2 : index + 2 + width]
        if len(digits) != width or not all(d in "0123456789abcdefABCDEF" for d in digits):
            raise EbnfError(f"bad escape {body[index : index + 2 + width]!r}")
        return int(digits, 16), index + 2 + width, True
    return _SIMPLE_ESCAPES.get(code, ord(code)), index + 2, True


def _unescape(body: str) -> str:
    """A literal's text, resolving xgrammar's escapes."""
    out: list[str] = []
    index = 0
    while index < len(body):
        code, index, _ = _read_char(body, index)
        out.append(chr(code))
    return "".join(out)


def _char_class(text: str) -> CharClass:
    negated = text.startswith("[^")
    body = text[2 if negated else 1 : -1]
    ranges: list[tuple[int, int]] = []
    index = 0
    while index < len(body):
        low, index, _ = _read_char(body, index)
        if index + 1 < len(body) and body[index] == "-":  # an unescaped dash between two characters
            high, index, _ = _read_char(body, index + 1)
            ranges.append((low, high))
        else:
            ranges.append((low, low))
    return CharClass(tuple(ranges), negated)


class _Reader:
    """Recursive descent over the token list of one grammar."""

    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.position = 0

    def peek(self, offset: int = 0) -> _Token | None:
        index = self.position + offset
        return self.tokens[index] if index < len(self.tokens) else None

    def take(self) -> _Token:
        token = self.tokens[self.position]
        self.position += 1
        return token

    def expect(self, kind: str, text: str | None = None) -> _Token:
        token = self.peek()
        if token is None or token.kind != kind or (text is not None and token.text != text):
            found = "end of grammar" if token is None else repr(token.text)
            raise EbnfError(f"expected {text or kind} but found {found}")
        return self.take()

    def at_rule_start(self) -> bool:
        token, after = self.peek(), self.peek(1)
        return token is not None and token.kind == "name" and after is not None and after.kind == "define"

    def rules(self) -> dict[str, Node]:
        rules: dict[str, Node] = {}
        while self.peek() is not None:
            name = self.expect("name").text
            self.expect("define")
            rules[name] = self.alternatives()
            while self.peek() is not None and self.peek().kind == "lookahead":  # type: ignore[union-attr]
                self.lookahead()
        return rules

    def alternatives(self) -> Node:
        options = [self.sequence()]
        while (token := self.peek()) is not None and token.text == "|" and token.kind == "punct":
            self.take()
            options.append(self.sequence())
        return options[0] if len(options) == 1 else Alt(tuple(options))

    def sequence(self) -> Node:
        items: list[Node] = []
        while (token := self.peek()) is not None and not self.at_rule_start():
            if token.kind == "punct" and token.text in "|)":
                break
            if token.kind == "lookahead":
                if items:  # a lookahead closes a rule body; what follows it belongs to the next rule
                    break
                raise EbnfError("a lookahead assertion must follow an expression")
            items.append(self.postfix())
        return items[0] if len(items) == 1 else Seq(tuple(items))

    def postfix(self) -> Node:
        node = self.atom()
        while (token := self.peek()) is not None:
            if token.kind == "punct" and token.text in "*+?":
                self.take()
                node = {"*": Repeat(node, 0, None), "+": Repeat(node, 1, None), "?": Repeat(node, 0, 1)}[
                    token.text
                ]
            elif token.kind == "bounds":
                self.take()
                node = _bounded(node, token.text)
            else:
                break
        return node

    def atom(self) -> Node:
        token = self.take()
        if token.kind == "literal":
            return Literal(_unescape(token.text[1:-1]))
        if token.kind == "cls":
            return _char_class(token.text)
        if token.kind == "name":
            return Ref(token.text)
        if token.kind == "punct" and token.text == "(":
            inner = self.alternatives()
            self.expect("punct", ")")
            return inner
        if token.kind == "macro":
            return self.macro(token.text[:-1])
        raise EbnfError(f"unexpected {token.text!r} in EBNF")

    def lookahead(self) -> None:
        """Skip ``(= ...)``."""
        self.expect("lookahead")
        self.alternatives()
        self.expect("punct", ")")

    def macro(self, name: str) -> Node:
        if name != "Regex":
            raise EbnfError(f"the xgrammar macro {name}(...) has no GBNF equivalent")
        pattern = _unescape(self.expect("literal").text[1:-1])
        json_string = False
        while (token := self.peek()) is not None and token.kind in ("comma", "keyword"):
            self.take()
            if token.kind == "keyword":
                key, _, value = token.text.replace(" ", "").partition("=")
                if key != "json_string":
                    raise EbnfError(f"unknown Regex(...) argument {key!r}")
                json_string = value == "true"
        self.expect("punct", ")")
        return RegexMacro(pattern, json_string)


@dataclass(frozen=True)
class RegexMacro(Node):
    """xgrammar's ``Regex(pattern)``; ``expand_regexes`` replaces it before printing."""

    pattern: str
    json_string: bool

    def gbnf(self) -> str:
        raise EbnfError("expand Regex(...) macros before printing GBNF")


def _bounded(node: Node, text: str) -> Repeat:
    inner = text[1:-1].replace(" ", "")
    low_text, _, high_text = inner.partition(",")
    low = int(low_text)
    if "," not in inner:
        high: int | None = low
    else:
        high = None if high_text in ("", "-1") else int(high_text)
    if low < 0 or (high is not None and high < low):
        raise EbnfError(f"bad repetition bounds {text!r}")
    return Repeat(node, low, high)


def parse_ebnf(text: str) -> dict[str, Node]:
    """The rules of an xgrammar EBNF grammar, by name, in order, with ``Regex`` macros still in place."""
    return _Reader(_tokens(text)).rules()


def json_safe(node: Node) -> Node:
    """``node`` restricted to JSON-string content: no raw quote, backslash or control character.

    Used for a regex that describes a JSON string's decoded value: characters that would need
    escaping are escaped in literals and left out of classes (the grammar then refuses them).
    """
    if isinstance(node, Literal):
        return Literal(_json_escape(node.text))
    if isinstance(node, CharClass):
        return node.without(_JSON_UNSAFE)
    if isinstance(node, Seq):
        return Seq(tuple(json_safe(item) for item in node.items))
    if isinstance(node, Alt):
        return Alt(tuple(json_safe(option) for option in node.options))
    if isinstance(node, Repeat):
        return Repeat(json_safe(node.item), node.low, node.high)
    return node


def _json_escape(text: str) -> str:
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif ord(char) < 0x20:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return "".join(out)


ANY_CHAR = CharClass(((0, MAX_CODEPOINT),))
