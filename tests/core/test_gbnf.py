"""The GBNF written for llama-server accepts exactly what the xgrammar constraint it came from accepts.

Each GBNF grammar is read back by xgrammar (GBNF's syntax is a subset of xgrammar's EBNF) and run
beside the original structural tag or JSON-schema grammar on the same strings: valid calls, invalid
ones, prose with and without call markup, JSON values inside and outside their schema. That
llama.cpp itself parses and enforces these grammars is tested against the live server in
``tests/server/``.
"""

from __future__ import annotations

import json
import re

import pytest
import xgrammar as xgr
from xgrammar.testing import _is_grammar_accept_string as accepts

from hermes_core import grammar
from hermes_core.engines.base import Constraint
from hermes_core.errors import UnsupportedOptionError
from hermes_core.format.tool_choice import normalize_tool_choice
from hermes_core.gbnf import constraint_gbnf, json_schema_gbnf, structural_tag_gbnf
from tests.conformance.conversations import ANSWER_SCHEMA, TOOLS

SEARCH = {
    "type": "function",
    "function": {
        "name": "search",
        "parameters": {
            "type": "object",
            "properties": {
                "query": {"type": "string", "maxLength": 12},
                "limit": {"type": "integer", "minimum": 1, "maximum": 20},
                "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
            },
            "required": ["query"],
        },
    },
}
NO_ARGS = {
    "type": "function",
    "function": {"name": "ping", "parameters": {"type": "object", "properties": {}}},
}
TOOL_SETS = {"weather+mode": TOOLS, "search+ping": [SEARCH, NO_ARGS]}


def _call(body: dict) -> str:
    return "<tool_call>\n" + json.dumps(body) + "\n</tool_call>"


WEATHER_CALL = _call({"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}})
MODE_CALL = _call({"arguments": {"mode": "fast"}, "name": "set_mode"})
SEARCH_CALL = _call({"name": "search", "arguments": {"query": "cats", "limit": 3, "tags": ["a"]}})
PING_CALL = _call({"name": "ping", "arguments": {}})
REPLIES = [
    "",
    "Hello there.",
    "an unfinished <tool",
    "a stray </tool_call> here",
    "<<tool_call>",
    WEATHER_CALL,
    MODE_CALL,
    SEARCH_CALL,
    PING_CALL,
    "Let me check. " + WEATHER_CALL,
    "Let me check.\n" + SEARCH_CALL,
    WEATHER_CALL + "\n" + MODE_CALL,
    SEARCH_CALL + "\n" + PING_CALL,
    WEATHER_CALL + "\n\n" + MODE_CALL,
    WEATHER_CALL + " and then prose",
    "<" + WEATHER_CALL,
    _call({"name": "get_weather", "arguments": {"city": "Paris"}}),
    _call({"name": "get_weather", "arguments": {"city": "Lima", "unit": "celsius"}}),
    _call({"name": "search", "arguments": {"query": "far too long a query"}}),
    _call({"name": "search", "arguments": {"query": "x", "limit": 21}}),
    _call({"name": "search", "arguments": {"query": "x", "tags": ["a", "b", "c"]}}),
    _call({"name": "nope", "arguments": {}}),
    '<tool_call>\n{"name":"ping","arguments":{}}\n</tool_call>',
    "<tool_call>\n{bad}\n</tool_call>",
]
CHOICES = [("auto", True), ("auto", False), ("required", True), ("required", False), ("named", False)]


def _constraint(tools, mode: str, parallel: bool) -> Constraint:
    names = [t["function"]["name"] for t in tools]
    choice = normalize_tool_choice(names[-1] if mode == "named" else mode, names)
    constraint = grammar.tool_call_constraint(tools, choice, parallel)
    assert constraint is not None
    return constraint


@pytest.mark.parametrize(
    ("mode", "parallel"), CHOICES, ids=[f"{m}-{'par' if p else 'one'}" for m, p in CHOICES]
)
@pytest.mark.parametrize("tool_set", sorted(TOOL_SETS))
def test_tool_call_gbnf_accepts_what_the_structural_tag_accepts(
    tool_set: str, mode: str, parallel: bool
) -> None:
    constraint = _constraint(TOOL_SETS[tool_set], mode, parallel)
    original = xgr.Grammar.from_structural_tag(json.dumps(constraint.source))
    converted = xgr.Grammar.from_ebnf(constraint_gbnf(constraint))
    verdicts = [(reply, accepts(original, reply)) for reply in REPLIES]
    assert any(ok for _, ok in verdicts) and not all(ok for _, ok in verdicts)  # the samples discriminate
    for reply, expected in verdicts:
        assert accepts(converted, reply) == expected, reply


SCHEMAS = {
    "answer": (
        ANSWER_SCHEMA,
        ['{"city": "Paris", "sunny": true}'],
        ['{"city": "Lima", "sunny": true}', '{"city": "Paris"}', '{"city": "Paris", "sunny": 1}'],
    ),
    "any object": (
        {"type": "object"},
        ["{}", '{"a": [1, 2.5e3, null, "x\\"y"], "b": {"c": false}}'],
        ["[]", '{"a": }', "{a: 1}", '{"a": "\x01"}'],
    ),
    "numbers": (
        {
            "type": "object",
            "properties": {
                "n": {"type": "number", "minimum": 0, "maximum": 10},
                "i": {"type": "integer", "minimum": -5, "maximum": 300},
            },
            "required": ["n", "i"],
        },
        ['{"n": 5.5, "i": 300}', '{"n": 0, "i": -5}'],
        ['{"n": 11, "i": 0}', '{"n": 1, "i": 301}', '{"n": 1, "i": 1.5}'],
    ),
    "patterns": (
        {
            "type": "object",
            "properties": {
                "code": {"type": "string", "pattern": "^[A-Z]{2}-\\d{3}$"},
                "any": {"type": "string", "pattern": "^a.c$"},
            },
            "required": ["code"],
        },
        ['{"code": "AB-123"}', '{"code": "AB-123", "any": "abc"}', '{"code": "ZZ-000", "any": "a-c"}'],
        ['{"code": "AB-12"}', '{"code": "ab-123"}', '{"code": "AB-123", "any": "a\\"c"}'],
    ),
    "nested, optional and unions": (
        {
            "type": "object",
            "properties": {
                "items": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "qty": {"type": "integer"},
                        },
                        "required": ["name"],
                    },
                    "minItems": 1,
                },
                "note": {"anyOf": [{"type": "null"}, {"type": "string", "format": "date"}]},
                "tag": {"const": 'café "x" \\ é\t'},
            },
            "required": ["items"],
        },
        [
            '{"items": [{"name": "a"}, {"name": "b", "qty": 2}]}',
            '{"items": [{"name": "a"}], "note": null}',
            '{"items": [{"name": "a"}], "note": "2024-02-29", "tag": "café \\"x\\" \\\\ é\\t"}',
        ],
        ['{"items": []}', '{"items": [{"name": ""}]}', '{"items": [{"name": "a"}], "note": "tomorrow"}'],
    ),
}


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_json_mode_gbnf_accepts_what_the_schema_grammar_accepts(name: str) -> None:
    schema, valid, invalid = SCHEMAS[name]
    original = xgr.Grammar.from_ebnf(grammar.json_mode_ebnf(schema))
    converted = xgr.Grammar.from_ebnf(json_schema_gbnf(schema))
    for text in valid:
        assert accepts(original, text) and accepts(converted, text), text
    for text in invalid:
        assert not accepts(original, text), text
        assert not accepts(converted, text), text


_LLAMA_ESCAPES = re.compile(r'\\(x[0-9a-f]{2}|u[0-9a-f]{4}|U[0-9a-f]{8}|[trn\\"\[\]\-])')


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_gbnf_keeps_to_what_llama_cpp_parses(name: str) -> None:
    """Rule names [a-z0-9-], non-negative bounds, no lookaheads or macros, only llama.cpp's escapes."""
    texts = [json_schema_gbnf(SCHEMAS[name][0])]
    texts += [constraint_gbnf(_constraint(tools, "auto", True)) for tools in TOOL_SETS.values()]
    for text in texts:
        for line in text.splitlines():
            rule, _, body = line.partition(" ::= ")
            assert re.fullmatch(r"[a-z0-9-]+", rule), line
            assert "(=" not in body and "Regex(" not in body and ", -1}" not in body, line
            stripped = _LLAMA_ESCAPES.sub("", body)
            assert "\\" not in stripped, line


def test_free_text_excludes_the_close_tag_and_dispatches_on_the_open_tag() -> None:
    text = constraint_gbnf(_constraint(TOOLS, "auto", False))
    converted = xgr.Grammar.from_ebnf(text)
    assert accepts(converted, "x < y and <tool but not a call")
    assert not accepts(converted, "prose </tool_call>")
    assert not accepts(converted, "prose <tool_call>\n{}")


def test_formats_without_a_text_spelling_are_refused_by_name() -> None:
    tag = {"type": "structural_tag", "format": {"type": "token", "token": 5}}
    with pytest.raises(UnsupportedOptionError, match=r"'token' has no llama\.cpp GBNF equivalent"):
        structural_tag_gbnf(tag)
    lark = {
        "type": "structural_tag",
        "format": {"type": "grammar", "grammar": "start: 'a'", "syntax": "lark"},
    }
    with pytest.raises(UnsupportedOptionError, match="not Lark"):
        structural_tag_gbnf(lark)
    with pytest.raises(UnsupportedOptionError, match="'structural_tag', 'format'"):
        structural_tag_gbnf({"format": {}})


def test_an_unknown_xgrammar_macro_is_refused_with_the_reason() -> None:
    source = {
        "type": "structural_tag",
        "format": {"type": "grammar", "grammar": 'root ::= TagDispatch(("a", x))\nx ::= "b"'},
    }
    with pytest.raises(UnsupportedOptionError, match=r"TagDispatch\(\.\.\.\) has no GBNF equivalent"):
        constraint_gbnf(Constraint("structural_tag", source))


def test_a_reasoning_budget_becomes_a_character_bound_that_keeps_the_token_budget() -> None:
    """GBNF cannot count tokens: the block holds at most ``budget`` characters (each token spells >= 1)."""
    reasoning = grammar.Reasoning("<think>", "</think>", 12)
    names = [t["function"]["name"] for t in TOOLS]
    constraint = grammar.tool_call_constraint(
        TOOLS, normalize_tool_choice("required", names), False, reasoning=reasoning
    )
    original = xgr.Grammar.from_structural_tag(json.dumps(constraint.source))
    converted = xgr.Grammar.from_ebnf(constraint_gbnf(constraint))
    for reply in [MODE_CALL, "<think>short</think>\n" + MODE_CALL, "<think></think>" + MODE_CALL, "hello"]:
        assert accepts(converted, reply) == accepts(original, reply), reply
    assert not accepts(converted, "<think>" + "x" * 13 + "</think>" + MODE_CALL)
    assert not accepts(converted, "<think>a < b</think>" + MODE_CALL)  # no '<' inside the block


def test_tools_or_answer_gbnf_accepts_what_the_structural_tag_accepts() -> None:
    """``auto`` with a response schema: call blocks, or one JSON answer, never prose."""
    constraint = grammar.tool_call_or_answer_constraint(TOOLS, ANSWER_SCHEMA, parallel_tool_calls=True)
    original = xgr.Grammar.from_structural_tag(json.dumps(constraint.source))
    converted = xgr.Grammar.from_ebnf(constraint_gbnf(constraint))
    replies = [*REPLIES, '{"city": "Paris", "sunny": true}', '{"city": "Lima", "sunny": true}', "{}"]
    verdicts = [(reply, accepts(original, reply)) for reply in replies]
    assert any(ok for _, ok in verdicts) and not all(ok for _, ok in verdicts)
    for reply, expected in verdicts:
        assert accepts(converted, reply) == expected, reply
