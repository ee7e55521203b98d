"""Finishing cut-off JSON and Hermes replies: every completion fits the schema and the request's grammar.

Each completion is checked twice: ``jsonschema`` validates the finished value, and an xgrammar matcher of
the grammar the request would decode with accepts the cut-off text, then the completion, and can end
there. Property tests draw random schemas with a valid document and cut it everywhere.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
import xgrammar as xgr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hermes_core.format.json_completion import JsonCompleter
from hermes_core.format.reply_completion import CALL_CLOSE, CALL_OPEN, BudgetReserve, ReplyCompleter
from hermes_core.format.tool_choice import NormalizedToolChoice
from hermes_core.grammar import JSON_SEPARATORS, GrammarCache, json_schema_ebnf
from tests.core.test_grammar import text_delimiter_dir  # noqa: F401  (a fixture)


@pytest.fixture(scope="module", params=["special-delimiters", "text-delimiters"])
def grammars(request, tiny_model_dir, text_delimiter_dir) -> GrammarCache:  # noqa: F811
    """A grammar cache over the tiny tokenizer, with ``<tool_call>`` as one special token and as text."""
    from transformers import AutoTokenizer

    directory = tiny_model_dir if request.param == "special-delimiters" else text_delimiter_dir
    tokenizer = AutoTokenizer.from_pretrained(directory)
    return GrammarCache(tokenizer, len(tokenizer), [tokenizer.convert_tokens_to_ids("<|im_end|>")])


def dumps(value: Any) -> str:
    """A document as the grammars write it (``json.dumps`` separators, non-ASCII kept)."""
    return json.dumps(value, separators=JSON_SEPARATORS, ensure_ascii=False)


def finishes(compiled: Any, prefix: str, suffix: str, delimiters: Any = None) -> bool:
    """True when the grammar accepts ``prefix`` then ``suffix`` and may end right there."""
    if delimiters is not None and delimiters.single_tokens:
        prefix = prefix.replace(CALL_OPEN, delimiters.open).replace(CALL_CLOSE, delimiters.close)
        suffix = suffix.replace(CALL_OPEN, delimiters.open).replace(CALL_CLOSE, delimiters.close)
    matcher = xgr.GrammarMatcher(compiled)
    assert matcher.accept_string(prefix), f"the grammar rejects the prefix itself: {prefix!r}"
    return (not suffix or matcher.accept_string(suffix)) and matcher.is_completed()


def check_every_cut(grammars: GrammarCache, schema: dict[str, Any], doc: Any, *, strict: bool = True) -> None:
    """Cut ``doc`` at every character; each completion validates and finishes the grammar."""
    text = dumps(doc)
    compiled = grammars.compiler.compile_grammar(json_schema_ebnf(schema, what="test", strict=strict))
    completer = JsonCompleter.for_schema(schema, strict=strict)
    for cut in range(len(text) + 1):
        prefix = text[:cut]
        suffix = completer.complete(prefix)
        assert suffix is not None, prefix
        jsonschema.validate(json.loads(prefix + suffix), schema)
        assert finishes(compiled, prefix, suffix), (prefix, suffix)
        assert (
            JsonCompleter.for_schema(schema, strict=strict).complete(prefix) == suffix
        )  # incremental = fresh


PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 2},
        "age": {"type": "integer", "minimum": 18, "maximum": 130},
        "score": {"type": "number", "exclusiveMinimum": 0.5, "maximum": 9.75},
        "role": {"enum": ["admin", "user", "café"]},
        "kind": {"const": "person"},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
        "note": {"anyOf": [{"type": "null"}, {"type": "string"}, {"type": "boolean"}]},
    },
    "required": ["name", "age", "role", "kind", "tags"],
}
TREE = {
    "$defs": {
        "Node": {
            "type": "object",
            "properties": {
                "label": {"type": "string"},
                "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}},
                "weight": {"oneOf": [{"type": "integer", "minimum": -3, "maximum": -1}, {"type": "string"}]},
            },
            "required": ["label", "weight"],
        }
    },
    "$ref": "#/$defs/Node",
}


def test_every_cut_of_a_rich_object_finishes_validly(grammars) -> None:
    doc = {
        "name": "Zoë \u4e2d",  # minLength: xgrammar's length-bounded strings take no escapes
        "age": 42,
        "score": 3.25,
        "role": "café",
        "kind": "person",
        "tags": ["a", "b\nc", 'q"\\/\u4e2d', ""],
        "note": None,
    }
    check_every_cut(grammars, PERSON, doc)
    check_every_cut(
        grammars, PERSON, {"name": "Al", "age": 130, "role": "user", "kind": "person", "tags": ["", ""]}
    )


def test_every_cut_of_a_recursive_schema_finishes_validly(grammars) -> None:
    doc = {
        "label": "root",
        "children": [{"label": "a", "weight": -2}, {"label": "b", "children": [], "weight": "x"}],
    }
    check_every_cut(grammars, TREE, {**doc, "weight": -1})


def test_json_mode_any_object_finishes_validly(grammars) -> None:
    doc = {"list": [1, -2.5e3, [], {}, "s\\u00e9"], "deep": {"x": {"y": [True, False, None]}}}
    check_every_cut(grammars, {"type": "object"}, doc, strict=False)


@pytest.mark.parametrize(
    ("prefix", "suffix"),
    [
        ("", '{"name": "aa", "age": 18, "role": "user", "kind": "person", "tags": ["", ""]}'),
        ('{"name": "', 'aa", "age": 18, "role": "user", "kind": "person", "tags": ["", ""]}'),
        ('{"name": "Bob", "a', 'ge": 18, "role": "user", "kind": "person", "tags": ["", ""]}'),
        ('{"name": "Bob", "age": 1', '8, "role": "user", "kind": "person", "tags": ["", ""]}'),
        ('{"name": "Bob", "age": 19, "score": 0.', '6, "role": "user", "kind": "person", "tags": ["", ""]}'),
        ('{"name": "Bob", "age": 19, "role": "ca', 'fé", "kind": "person", "tags": ["", ""]}'),
        ('{"name": "Bob", "age": 19, "role": "user", "kind": "person", "tags": ["x\\', '/", ""]}'),
        ('{"name": "Bob", "age": 19, "role": "user", "kind": "person", "tags": ["x", "y"], ', '"note": 0}'),
    ],
)
def test_completion_is_the_shortest(prefix: str, suffix: str) -> None:
    """Smallest values (shortest enum member, the bound nearest zero), keys in schema order."""
    person = {**PERSON, "properties": {**PERSON["properties"], "note": {"type": "integer"}}}
    assert JsonCompleter.for_schema(person).complete(prefix) == suffix


def test_text_that_cannot_be_finished_gives_none() -> None:
    dated = {
        "type": "object",
        "properties": {"day": {"type": "string", "format": "date"}},
        "required": ["day"],
    }
    assert JsonCompleter.for_schema(dated).complete('{"day": "2024-0') is None  # a format cut mid-way
    assert JsonCompleter.for_schema(PERSON).complete('{"nope": ') is None  # not the schema's text
    assert JsonCompleter.for_schema(PERSON).complete('{"name": "Al"} trailing') is None
    assert JsonCompleter.for_schema({"type": "integer", "maximum": 5}).complete("7") is None
    assert JsonCompleter.for_schema(False).complete("") is None


# ------------------------------------------------------------------ random schemas, random cuts
_TEXT = st.text(alphabet=st.sampled_from('ab é中"\\\n\t/'), max_size=6)
# const/enum strings: xgrammar 0.2.9 prints "é" as \xe9 in its EBNF and then reads "éa" as \xe9a, so
# a Latin-1 letter before a hex digit is unmatchable there; CJK is printed as a fixed-width \u escape.
_PLAIN = st.text(alphabet=st.sampled_from("ab中 "), max_size=5)


@st.composite
def _leaf(draw: Any) -> tuple[dict[str, Any], Any]:
    kind = draw(
        st.sampled_from(["string", "bounded", "integer", "number", "boolean", "null", "enum", "const"])
    )
    if kind == "string":
        return {"type": "string"}, draw(_TEXT)
    if kind == "bounded":
        low = draw(st.integers(0, 3))
        value = draw(st.text(alphabet=st.sampled_from("abé中 "), min_size=low, max_size=low + 3))
        return {"type": "string", "minLength": low, "maxLength": low + 3}, value
    if kind == "integer":
        low = draw(st.one_of(st.none(), st.integers(-50, 50)))
        high = draw(st.one_of(st.none(), st.integers(low if low is not None else -50, 120)))
        schema: dict[str, Any] = {"type": "integer"}
        if low is not None:
            schema["minimum"] = low
        if high is not None:
            schema["maximum"] = high
        value = draw(st.integers(low if low is not None else -999, high if high is not None else 999))
        return schema, value
    if kind == "number":
        hundredths = draw(st.integers(-2000, 2000))
        schema = {"type": "number"}
        if draw(st.booleans()):
            schema["minimum"] = (hundredths - draw(st.integers(0, 300))) / 100
        if draw(st.booleans()):
            schema["exclusiveMaximum"] = (hundredths + draw(st.integers(1, 300))) / 100
        return schema, hundredths / 100 if hundredths % 100 else hundredths // 100
    if kind == "boolean":
        return {"type": "boolean"}, draw(st.booleans())
    if kind == "null":
        return {"type": "null"}, None
    if kind == "enum":
        options = draw(st.lists(st.one_of(_PLAIN, st.integers(-5, 500)), min_size=1, max_size=4, unique=True))
        return {"enum": options}, draw(st.sampled_from(options))
    value = draw(st.one_of(_PLAIN, st.integers(-5, 500), st.booleans()))
    return {"const": value}, value


def _extend(children: Any) -> Any:
    @st.composite
    def container(draw: Any) -> tuple[dict[str, Any], Any]:
        kind = draw(st.sampled_from(["object", "array", "anyOf"]))
        if kind == "array":
            items, value = draw(children)
            minimum = draw(st.integers(0, 2))
            count = draw(st.integers(minimum, minimum + 2))
            return {"type": "array", "items": items, "minItems": minimum}, [value] * count
        if kind == "anyOf":
            first, second = draw(children), draw(children)
            return {"anyOf": [first[0], second[0]]}, draw(st.sampled_from([first[1], second[1]]))
        members = draw(st.lists(children, min_size=1, max_size=4))
        names = draw(
            st.lists(
                st.sampled_from(["a", "ab", "b", "é", "key"]),
                min_size=len(members),
                max_size=len(members),
                unique=True,
            )
        )
        required = draw(st.lists(st.booleans(), min_size=len(members), max_size=len(members)))
        present = [r or draw(st.booleans()) for r in required]
        schema = {
            "type": "object",
            "properties": {n: m[0] for n, m in zip(names, members, strict=True)},
            "required": [n for n, r in zip(names, required, strict=True) if r],
        }
        doc = {n: m[1] for n, m, p in zip(names, members, present, strict=True) if p}
        return schema, doc

    return container()


_SCHEMA_AND_DOC = st.recursive(_leaf(), _extend, max_leaves=8)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data())
def test_random_schemas_cut_anywhere_finish_validly(grammars, data) -> None:
    schema, doc = data.draw(_SCHEMA_AND_DOC)
    jsonschema.validate(doc, schema)  # the strategy draws valid documents
    wrapped = {"type": "object", "properties": {"v": schema}, "required": ["v"]}  # JSON mode needs an object
    text = dumps({"v": doc})
    cuts = sorted(set(data.draw(st.lists(st.integers(0, len(text)), min_size=1, max_size=8))))
    compiled = grammars.compiler.compile_grammar(json_schema_ebnf(wrapped, what="test"))
    completer = JsonCompleter.for_schema(wrapped)
    for cut in cuts:
        prefix = text[:cut]
        suffix = completer.complete(prefix)
        assert suffix is not None, prefix
        jsonschema.validate(json.loads(prefix + suffix), wrapped)
        assert finishes(compiled, prefix, suffix), (prefix, suffix)


# ------------------------------------------------------------------------- Hermes replies
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
        },
    },
}
NOTE = {"type": "function", "function": {"name": "add_note", "parameters": PERSON}}
BARE = {"type": "function", "function": {"name": "ping"}}


def _block(name: str, arguments: dict[str, Any], *, arguments_first: bool = False) -> str:
    body = (
        {"arguments": arguments, "name": name} if arguments_first else {"name": name, "arguments": arguments}
    )
    return f"{CALL_OPEN}\n{dumps(body)}\n{CALL_CLOSE}"


def _inside_a_tag(text: str, cut: int) -> bool:
    return any(
        start < cut < start + len(tag)
        for tag in (CALL_OPEN, CALL_CLOSE)
        for start in range(len(text))
        if text.startswith(tag, start)
    )


@pytest.mark.parametrize("mode", ["required", "auto"])
def test_every_cut_of_a_tool_call_reply_finishes_validly(grammars, mode: str) -> None:
    tools = [WEATHER, NOTE, BARE]
    calls = [
        _block("get_weather", {"city": "Paris", "unit": "celsius"}),
        _block(
            "add_note",
            {"name": "Al", "age": 20, "role": "user", "kind": "person", "tags": ["x", "y"]},
            arguments_first=True,
        ),
        _block("ping", {}),
    ]
    reply = ("I will check. " if mode == "auto" else "") + "\n".join(calls)
    compiled = grammars.for_tools(tools, NormalizedToolChoice(mode), True)
    completer = ReplyCompleter.for_tools(tools, required=mode == "required")
    for cut in range(len(reply) + 1):
        prefix = reply[:cut]
        if grammars.delimiters.single_tokens and _inside_a_tag(reply, cut):
            continue  # a single-token tag is never cut
        suffix = completer.complete(prefix)
        assert suffix is not None, prefix
        assert finishes(compiled, prefix, suffix, grammars.delimiters), (prefix, suffix)
        finished = prefix + suffix
        if CALL_OPEN in finished:
            from hermes_core.format.parser import parse_tool_calls
            from hermes_core.format.validation import validate_tool_calls

            parsed = validate_tool_calls(parse_tool_calls(finished), tools)
            assert parsed.tool_calls and not parsed.invalid_tool_calls, finished


def test_a_forced_tool_reply_finishes_with_that_tool(grammars) -> None:
    tools = [WEATHER, NOTE]
    compiled = grammars.for_tools(tools, NormalizedToolChoice("required", "add_note"), False)
    completer = ReplyCompleter.for_tools(tools, required=True, tool_name="add_note")
    suffix = completer.complete(CALL_OPEN + '\n{"name": "')
    assert suffix is not None and suffix.startswith('add_note", "arguments": {"name": "aa"')
    assert finishes(compiled, CALL_OPEN + '\n{"name": "', suffix, grammars.delimiters)
    assert completer.complete(CALL_OPEN + '\n{"name": "get_w') is None  # not the forced tool


def test_json_mode_reply(grammars) -> None:
    completer = ReplyCompleter.for_json(PERSON)
    prefix = '{"name": "The cat was a cat, and the cat was a c'
    suffix = completer.complete(prefix)
    assert suffix == '", "age": 18, "role": "user", "kind": "person", "tags": ["", ""]}'
    assert finishes(grammars.for_json(PERSON), prefix, suffix)
    assert ReplyCompleter.for_json(None).complete('{"a": [1, {"b": "x') == '"}]}'


# ------------------------------------------------------------------------- budget reserve
def _tokens(text: str) -> list[str]:
    """A stand-in tokenizer: words, punctuation and spaces each one token."""
    import re

    return re.findall(r"\w+|\s|[^\w\s]", text)


def _run(reply: str, completer: ReplyCompleter, budget: int) -> tuple[str, str]:
    """Feed ``reply`` token by token under ``budget``; (kept text, appended suffix) when it stops."""
    reserve = BudgetReserve(completer, budget, lambda s: len(_tokens(s)))
    pieces = _tokens(reply)
    kept = ""
    for used, piece in enumerate(pieces[:budget], start=1):
        check = reserve.check(kept + piece, used)
        if check.verdict == "stop_before":
            return kept, check.suffix
        kept += piece
        if check.verdict == "stop":
            return kept, check.suffix
    return kept, ""


@pytest.mark.parametrize("budget", range(1, 60))
def test_budget_reserve_keeps_replies_whole_and_within_budget(budget: int) -> None:
    """A looping string cut at any budget ends as valid JSON of at most ``budget`` tokens."""
    looping = '{"name": "' + "the cat was a cat, and " * 20
    kept, suffix = _run(looping, ReplyCompleter.for_json(PERSON), budget)
    smallest = ReplyCompleter.for_json(PERSON).complete("")
    assert smallest is not None
    if len(_tokens(smallest)) > budget:
        assert suffix == ""  # not even the smallest object fits: no promise made
        return
    assert len(_tokens(kept)) + len(_tokens(suffix)) <= budget
    jsonschema.validate(json.loads(kept + suffix), PERSON)


@pytest.mark.parametrize("budget", range(20, 70, 3))
def test_budget_reserve_drops_a_token_that_opens_too_much(budget: int) -> None:
    """One token may open a member whose required fields need more room than is left: it is dropped."""
    schema = {
        "type": "object",
        "properties": {
            "text": {"type": "string"},
            "detail": {"$ref": "#/$defs/D"},
        },
        "required": ["text"],
        "$defs": {
            "D": {
                "type": "object",
                "properties": {k: {"type": "string"} for k in "abcdefgh"},
                "required": list("abcdefgh"),
            }
        },
    }
    reply = '{"text": "' + "x " * 5 + '", "detail": {"a": "1", "b": "2"}}'
    kept, suffix = _run(reply, ReplyCompleter.for_json(schema), budget)
    if kept + suffix != reply:
        assert len(_tokens(kept)) + len(_tokens(suffix)) <= budget
    jsonschema.validate(json.loads(kept + suffix), schema)


# ------------------------------------------------------------------------- reasoning first
THINK = ("<think>", "</think>")


@pytest.mark.parametrize("kind", ["json", "required", "auto"])
def test_a_reply_behind_a_reasoning_block_finishes_validly(grammars, kind: str) -> None:
    from hermes_core.grammar import Reasoning

    reasoning = Reasoning(*THINK, 64)
    tools = [WEATHER, BARE]
    if kind == "json":
        compiled = grammars.for_json(PERSON, reasoning)
        completer = ReplyCompleter.for_json(PERSON, reasoning=THINK)
        body = dumps({"name": "Al", "age": 20, "role": "user", "kind": "person", "tags": ["x", "y"]})
    else:
        compiled = grammars.for_tools(tools, NormalizedToolChoice(kind), True, reasoning)
        completer = ReplyCompleter.for_tools(
            tools,
            required=kind == "required",
            reasoning=THINK,
            single_token_tags=grammars.delimiters.single_tokens,
        )
        body = _block("get_weather", {"city": "Oslo", "unit": "celsius"})
    for reply in ("<think>The user wants </th the data.</think>\n\n" + body, body):
        for cut in range(len(reply) + 1):
            prefix = reply[:cut]
            if grammars.delimiters.single_tokens and _inside_a_tag(reply, cut):
                continue
            suffix = completer.complete(prefix)
            assert suffix is not None, prefix
            assert finishes(compiled, prefix, suffix, grammars.delimiters), (prefix, suffix)


def test_mutually_recursive_schemas_have_their_smallest_values(grammars) -> None:
    """``Y`` needs ``X``, which is smallest as an integer: found even when reached first through ``X``."""
    schema = {
        "$defs": {
            "X": {"anyOf": [{"$ref": "#/$defs/Y"}, {"type": "integer"}]},
            "Y": {"type": "object", "properties": {"x": {"$ref": "#/$defs/X"}}, "required": ["x"]},
        },
        "type": "object",
        "properties": {"a": {"$ref": "#/$defs/X"}, "b": {"$ref": "#/$defs/Y"}},
        "required": ["a", "b"],
    }
    completer = JsonCompleter.for_schema(schema)
    assert completer.smallest() == '{"a": 0, "b": {"x": 0}}'
    check_every_cut(grammars, schema, {"a": {"x": {"x": 5}}, "b": {"x": {"x": 1}}})


@pytest.mark.parametrize(
    ("schema", "prefix", "finish"),
    [
        # hypothesis found it: no integer fits, so the integer part must come from a bound (-1.01 -> -1.)
        ({"type": "number", "minimum": -1.01, "exclusiveMaximum": -1.0}, "-", "1.01"),
        ({"type": "number", "minimum": -1.01, "exclusiveMaximum": -1.0}, "", "-1.01"),
        ({"type": "number", "minimum": 12.5, "maximum": 12.7}, "1", "2.5"),
    ],
)
def test_a_number_with_no_integer_in_range_gets_its_integer_part_from_a_bound(schema, prefix, finish):
    from hermes_core.format.json_completion import _number_suffix, build_schema_node

    assert _number_suffix(prefix, build_schema_node(schema)) == finish
