"""Collects GBNF rules under unique llama.cpp-legal names and prints the grammar.

``include_ebnf`` adds a whole xgrammar EBNF grammar (a tool's arguments schema, JSON mode) under a
fresh prefix, so several schemas' ``root``/``basic_*`` rules never clash, and expands its ``Regex``
macros through ``xgrammar.Grammar.from_regex``.
"""

from __future__ import annotations

import re

from hermes_core.gbnf.ast import Alt, CharClass, Literal, Node, Ref, Repeat, Seq
from hermes_core.gbnf.ebnf import EbnfError, RegexMacro, json_safe, parse_ebnf

_ILLEGAL = re.compile(r"[^A-Za-z0-9]+")


class GbnfBuilder:
    """A GBNF grammar under construction: named rules, then ``text(root)``."""

    def __init__(self) -> None:
        self.rules: dict[str, Node] = {}
        self._used: set[str] = {"root"}
        self._included: dict[str, Ref] = {}

    def name(self, hint: str) -> str:
        """A fresh rule name derived from ``hint`` (only letters, digits and dashes)."""
        base = _ILLEGAL.sub("-", hint).strip("-").lower() or "r"
        candidate, number = base, 1
        while candidate in self._used:
            number += 1
            candidate = f"{base}-{number}"
        self._used.add(candidate)
        return candidate

    def define(self, hint: str, node: Node) -> Ref:
        """Add ``node`` as a new rule and return a reference to it."""
        name = self.name(hint)
        self.rules[name] = node
        return Ref(name)

    def reserve(self, hint: str) -> Ref:
        """A name for a rule defined later with ``fill`` (for recursive rules)."""
        return Ref(self.name(hint))

    def fill(self, ref: Ref, node: Node) -> None:
        self.rules[ref.name] = node

    def include_ebnf(self, ebnf: str, hint: str) -> Ref:
        """Add every rule of an xgrammar EBNF grammar under fresh names; returns its ``root``.

        The same grammar text included twice (a tool's schema in both key orders) is added once.
        """
        if ebnf in self._included:
            return self._included[ebnf]
        try:
            parsed = parse_ebnf(ebnf)
        except EbnfError as exc:
            raise EbnfError(f"{exc} (in the grammar of {hint})") from exc
        if "root" not in parsed:
            raise EbnfError(f"the grammar of {hint} has no root rule")
        renamed = {old: self.name(f"{hint}-{old}") for old in parsed}
        for old, node in parsed.items():
            self.rules[renamed[old]] = self._resolve(node, renamed, hint)
        self._included[ebnf] = Ref(renamed["root"])
        return self._included[ebnf]

    def _resolve(self, node: Node, renamed: dict[str, str], hint: str) -> Node:
        if isinstance(node, Ref):
            if node.name not in renamed:
                raise EbnfError(f"the grammar of {hint} uses undefined rule {node.name!r}")
            return Ref(renamed[node.name])
        if isinstance(node, RegexMacro):
            return self.include_regex(node.pattern, f"{hint}-re", json_string=node.json_string)
        if isinstance(node, Seq):
            return Seq(tuple(self._resolve(item, renamed, hint) for item in node.items))
        if isinstance(node, Alt):
            return Alt(tuple(self._resolve(option, renamed, hint) for option in node.options))
        if isinstance(node, Repeat):
            return Repeat(self._resolve(node.item, renamed, hint), node.low, node.high)
        return node

    def include_regex(self, pattern: str, hint: str, *, json_string: bool = False) -> Ref:
        """A rule matching ``pattern`` (as xgrammar reads regexes); inside a JSON string if ``json_string``."""
        import xgrammar as xgr

        try:
            ebnf = str(xgr.Grammar.from_regex(pattern))
        except Exception as exc:  # xgrammar raises RuntimeError/ValueError from its C++ core
            raise EbnfError(f"the regex {pattern!r} cannot be converted ({exc})") from exc
        root = self.include_ebnf(ebnf, hint)
        if json_string:
            for name in self._names_reachable(root.name):
                self.rules[name] = json_safe(self.rules[name])
        return root

    def _names_reachable(self, start: str) -> list[str]:
        seen: list[str] = []
        pending = [start]
        while pending:
            name = pending.pop()
            if name in seen:
                continue
            seen.append(name)
            pending.extend(ref.name for ref in _refs(self.rules[name]))
        return seen

    def text(self, root: Node) -> str:
        """The grammar: ``root ::= ...`` first, then every rule reachable from it."""
        self.rules["root"] = root
        lines = [f"{name} ::= {self.rules[name].gbnf()}" for name in self._names_reachable("root")]
        return "\n".join(lines) + "\n"


def _refs(node: Node) -> list[Ref]:
    if isinstance(node, Ref):
        return [node]
    if isinstance(node, Seq):
        return [ref for item in node.items for ref in _refs(item)]
    if isinstance(node, Alt):
        return [ref for option in node.options for ref in _refs(option)]
    if isinstance(node, Repeat):
        return _refs(node.item)
    return []


def literal_or_empty(text: str) -> Node:
    """A literal, or the empty sequence for ``""``."""
    return Literal(text) if text else Seq(())


__all__ = ["CharClass", "GbnfBuilder", "literal_or_empty"]
