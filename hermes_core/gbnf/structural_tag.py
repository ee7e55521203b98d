"""A constraint's source (xgrammar structural tag JSON, or a JSON schema) as one llama.cpp GBNF grammar.

The format types the core's constraints use are converted: ``const_string``, ``sequence``, ``or``,
``tag``, ``tags_with_separator``, ``triggered_tags``, ``star``/``plus``/``optional``/``repeat``,
``grammar`` (xgrammar EBNF), ``json_schema``, ``regex`` and ``any_text``. Token-level formats have no
text spelling and are refused with ``UnsupportedOptionError``.
"""

from __future__ import annotations

from typing import Any

from hermes_core.engines.base import Constraint
from hermes_core.errors import UnsupportedOptionError
from hermes_core.gbnf.ast import Alt, CharClass, Node, Ref, Repeat, Seq
from hermes_core.gbnf.builder import GbnfBuilder, literal_or_empty
from hermes_core.gbnf.ebnf import EbnfError
from hermes_core.gbnf.text import free_text


def constraint_gbnf(constraint: Constraint) -> str:
    """The GBNF grammar equivalent to ``constraint`` (its ``source``; the compiled part is not used)."""
    try:
        if constraint.kind == "json_schema":
            return json_schema_gbnf(constraint.source)
        return structural_tag_gbnf(constraint.source)
    except EbnfError as exc:
        raise UnsupportedOptionError(
            f"The constraint cannot be written as a llama.cpp GBNF grammar ({exc}); simplify the schema "
            "or disable constrained decoding for this request."
        ) from exc


def json_schema_gbnf(schema: dict[str, Any]) -> str:
    """JSON mode: one compact JSON value valid for ``schema``, as JSON mode builds it locally."""
    from hermes_core.grammar import json_mode_ebnf

    builder = GbnfBuilder()
    return builder.text(builder.include_ebnf(json_mode_ebnf(schema), "json"))


def structural_tag_gbnf(tag: dict[str, Any]) -> str:
    """An xgrammar structural tag (``{"type": "structural_tag", "format": {...}}``) as GBNF."""
    if tag.get("type") != "structural_tag" or not isinstance(tag.get("format"), dict):
        raise UnsupportedOptionError(
            "A structural tag must be {'type': 'structural_tag', 'format': {...}} (xgrammar's format)."
        )
    builder = GbnfBuilder()
    return builder.text(_Converter(builder).convert(tag["format"]))


class _Converter:
    def __init__(self, builder: GbnfBuilder) -> None:
        self.builder = builder

    def convert(self, fmt: dict[str, Any]) -> Node:
        kind = fmt.get("type")
        method = getattr(self, f"_{kind}", None)
        if method is None:
            raise UnsupportedOptionError(
                f"The structural tag format {kind!r} has no llama.cpp GBNF equivalent here; the llama-server "
                "dialect supports const_string, sequence, or, tag, tags_with_separator, triggered_tags, "
                "star, plus, optional, repeat, grammar, json_schema, regex and any_text."
            )
        return method(fmt)

    def _const_string(self, fmt: dict[str, Any]) -> Node:
        return literal_or_empty(fmt["value"])

    def _sequence(self, fmt: dict[str, Any]) -> Node:
        return Seq(tuple(self.convert(element) for element in fmt["elements"]))

    def _or(self, fmt: dict[str, Any]) -> Node:
        return Alt(tuple(self.convert(element) for element in fmt["elements"]))

    def _optional(self, fmt: dict[str, Any]) -> Node:
        return Repeat(self.convert(fmt["content"]), 0, 1)

    def _star(self, fmt: dict[str, Any]) -> Node:
        return Repeat(self.convert(fmt["content"]), 0, None)

    def _plus(self, fmt: dict[str, Any]) -> Node:
        return Repeat(self.convert(fmt["content"]), 1, None)

    def _repeat(self, fmt: dict[str, Any]) -> Node:
        high = fmt["max"]
        return Repeat(self.convert(fmt["content"]), int(fmt["min"]), None if high < 0 else int(high))

    def _grammar(self, fmt: dict[str, Any]) -> Node:
        if fmt.get("syntax", "ebnf") != "ebnf":
            raise UnsupportedOptionError("Only EBNF grammars can be converted to llama.cpp GBNF (not Lark).")
        return self.builder.include_ebnf(fmt["grammar"], "g")

    def _json_schema(self, fmt: dict[str, Any]) -> Node:
        from hermes_core.grammar import json_schema_ebnf

        return self.builder.include_ebnf(json_schema_ebnf(fmt["json_schema"], what="A JSON schema"), "schema")

    def _regex(self, fmt: dict[str, Any]) -> Node:
        return self.builder.include_regex(fmt["pattern"], "regex")

    def _any_text(self, fmt: dict[str, Any], ends: list[str] | None = None) -> Node:
        """Text without the excluded strings (nor the enclosing tag's end).

        GBNF counts characters, not tokens, so a ``max_tokens`` bound (a reasoning budget) becomes at
        most that many characters, none of them the first character of an end or excluded string:
        since every token spells at least one character, the token budget holds (the text is shorter
        than xgrammar would allow).
        """
        stops = [s for s in [*(ends or []), *fmt.get("excludes", [])] if s]
        bounds = [b for b in (fmt.get("max_tokens"), fmt.get("max_chars")) if b is not None]
        if not bounds:
            return free_text(self.builder, "text", forbidden=stops)
        firsts = sorted({ord(s[0]) for s in stops})
        allowed = CharClass(tuple((c, c) for c in firsts), negated=True)
        return Repeat(allowed, 0, int(min(bounds)))

    def _tag(self, fmt: dict[str, Any]) -> Node:
        content = fmt["content"]
        if isinstance(content, dict) and content.get("type") == "any_text":
            ends = [fmt["end"]] if isinstance(fmt["end"], str) else list(fmt["end"])
            body = self._any_text(content, [e for e in ends if isinstance(e, str)])
        else:
            body = self.convert(content)
        return Seq((self._begin(fmt), body, self._end(fmt)))

    def _begin(self, fmt: dict[str, Any]) -> Node:
        begin = fmt["begin"]
        if not isinstance(begin, str):
            raise UnsupportedOptionError("A tag that begins with a token has no GBNF text equivalent here.")
        return literal_or_empty(begin)

    def _end(self, fmt: dict[str, Any]) -> Node:
        end = fmt["end"]
        if isinstance(end, str):
            return literal_or_empty(end)
        if isinstance(end, list) and all(isinstance(e, str) for e in end):
            return Alt(tuple(literal_or_empty(e) for e in end))
        raise UnsupportedOptionError("A tag that ends with a token has no GBNF text equivalent here.")

    def _tags(self, tags: list[dict[str, Any]]) -> Ref:
        return self.builder.define("tag", Alt(tuple(self._tag(tag) for tag in tags)))

    def _tags_with_separator(self, fmt: dict[str, Any]) -> Node:
        tag = self._tags(fmt["tags"])
        if fmt.get("stop_after_first", False):
            body: Node = tag
        else:
            body = Seq((tag, Repeat(Seq((literal_or_empty(fmt["separator"]), tag)), 0, None)))
        return body if fmt.get("at_least_one", False) else Repeat(body, 0, 1)

    def _triggered_tags(self, fmt: dict[str, Any]) -> Node:
        """Text until a trigger, then the tag it starts; then text again unless ``stop_after_first``."""
        triggers: list[str] = fmt["triggers"]
        tags: list[dict[str, Any]] = fmt["tags"]
        excludes = list(fmt.get("excludes", []))
        stop_after_first = bool(fmt.get("stop_after_first", False))
        at_least_one = bool(fmt.get("at_least_one", False))
        after_tag: list[Node] = []
        again = None
        if not stop_after_first:
            again = self.builder.reserve("text-after")
            after_tag = [again]

        def tags_for(trigger: str) -> Node:
            started = [
                tag for tag in tags if isinstance(tag.get("begin"), str) and tag["begin"].startswith(trigger)
            ]
            if not started:
                raise UnsupportedOptionError(f"No tag begins with the trigger {trigger!r}.")
            options = []
            for tag in started:
                rest = literal_or_empty(tag["begin"][len(trigger) :])
                options.append(Seq((rest, self.convert(tag["content"]), self._end(tag), *after_tag)))
            return self.builder.define("tagged", Alt(tuple(options)))

        made: dict[str, Node] = {}

        def maker(trigger: str) -> Any:
            return lambda: made.setdefault(trigger, tags_for(trigger))

        makers = {trigger: maker(trigger) for trigger in triggers}
        first = free_text(self.builder, "text", forbidden=excludes, triggers=makers, can_end=not at_least_one)
        if again is not None:
            later = first
            if at_least_one:  # after the first tag the text may end
                later = free_text(
                    self.builder, "text-more", forbidden=excludes, triggers=makers, can_end=True
                )
            self.builder.fill(again, Seq((later,)))
        return first
