"""Free text that never contains given strings, as GBNF rules (xgrammar's ``any_text`` / ``triggered_tags``).

GBNF has no "anything but this substring", so the text is spelled as the states of a string-matching
automaton: one rule per prefix of a watched string, each saying which characters may come next and
which rule (state) follows. A completed forbidden string has no transition; a completed trigger
continues into its tag instead of into more text. Every state rule ends in a tail call, which
llama.cpp runs without growing its parse stack, so text length is not limited.
"""

from __future__ import annotations

from collections.abc import Callable

from hermes_core.gbnf.ast import Alt, CharClass, Literal, Node, Ref, Seq
from hermes_core.gbnf.builder import GbnfBuilder


def free_text(
    builder: GbnfBuilder,
    hint: str,
    *,
    forbidden: list[str],
    triggers: dict[str, Callable[[], Node]] | None = None,
    can_end: bool = True,
) -> Ref:
    """The rule of text without any ``forbidden`` string, ending anywhere when ``can_end``.

    When the text completes a key of ``triggers``, the node its function returns follows instead of
    more text (called once per trigger; the node says what comes after the tag).
    """
    triggers = triggers or {}
    watched = [w for w in [*forbidden, *triggers] if w]
    states = sorted({w[:i] for w in watched for i in range(len(w))}, key=lambda s: (len(s), s))
    refs = {state: builder.reserve(f"{hint}-{len(state)}") for state in states}
    alphabet = sorted({c for w in watched for c in w})
    continuations = {trigger: make() for trigger, make in triggers.items()}
    for state in states:
        options: list[Node] = [Seq(())] if can_end else []
        to_start: list[str] = []
        by_target: dict[str, list[str]] = {}
        for char in alphabet:
            text = state + char
            if any(text.endswith(word) for word in forbidden):
                continue
            hit = next((t for t in triggers if text.endswith(t)), None)
            if hit is not None:
                options.append(Seq((Literal(char), continuations[hit])))
                continue
            target = next(text[i:] for i in range(len(text) + 1) if text[i:] in refs)
            (to_start if target == "" else by_target.setdefault(target, [])).append(char)
        for target, chars in by_target.items():
            options.append(Seq((_chars(chars), refs[target])))
        # every character outside the watched alphabet, and alphabet characters that lead back to the start
        excluded = [c for c in alphabet if c not in to_start]
        other = CharClass(tuple((ord(c), ord(c)) for c in excluded), negated=True)
        options.append(Seq((other, refs[""])))
        builder.fill(refs[state], Alt(tuple(options)))
    return refs[""]


def _chars(chars: list[str]) -> Node:
    if len(chars) == 1:
        return Literal(chars[0])
    return CharClass(tuple((ord(c), ord(c)) for c in chars))
