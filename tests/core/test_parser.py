"""Whole-text parsing: the project's cases (tests/core/data/parser_cases.jsonl) and one test per policy rule."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hermes_core import parse_tool_calls
from hermes_core.types import ParsedResponse

CASES_PATH = Path(__file__).parent / "data" / "parser_cases.jsonl"


def load_cases() -> list[dict[str, Any]]:
    """The policy cases (see docs/parser-policy.md); a missing file is an error, never a skip."""
    assert CASES_PATH.is_file(), f"parser cases not found at {CASES_PATH}"
    with CASES_PATH.open(encoding="utf-8") as handle:
        cases = [json.loads(line) for line in handle if line.strip()]
    assert cases, f"{CASES_PATH} holds no cases"
    return cases


CASES = load_cases()


def collapse(text: str) -> str:
    return " ".join(text.split())


def calls_of(result: ParsedResponse) -> list[tuple[str, dict[str, Any]]]:
    return [(call.name, call.arguments) for call in result.tool_calls]


def summary(result: ParsedResponse) -> tuple[Any, ...]:
    """Everything but the random ids: what the whole-text and streamed parses must agree on."""
    invalid = [(bad.raw, bad.error, bad.name) for bad in result.invalid_tool_calls]
    return calls_of(result), invalid, result.content, result.reasoning


def check_case(case: dict[str, Any], result: ParsedResponse) -> None:
    """Assert a parse matches a reference case the way the policy compares them."""
    expected = [(call["name"], call["arguments"]) for call in case["expect_calls"]]
    assert calls_of(result) == expected
    for got, want in zip(result.tool_calls, case["expect_calls"], strict=True):  # an integer stays an integer
        assert json.dumps(got.arguments, sort_keys=True) == json.dumps(want["arguments"], sort_keys=True)
    assert len(result.invalid_tool_calls) == case["expect_invalid"]
    for bad in result.invalid_tool_calls:
        assert bad.error.strip()
    if case["expect_text"] is not None:
        assert collapse(result.content) == collapse(case["expect_text"])
    reasoning = case.get("expect_reasoning")  # absent or null: the reply opens with no reasoning block
    if reasoning is None:
        assert result.reasoning is None
    else:
        assert result.reasoning is not None and collapse(result.reasoning) == collapse(reasoning)
    ids = [call.id for call in result.tool_calls] + [bad.id for bad in result.invalid_tool_calls]
    assert len(set(ids)) == len(ids)
    assert all(call_id.startswith("call_") and len(call_id) > 10 for call_id in ids)


@pytest.mark.parametrize("case", CASES, ids=[case["id"] for case in CASES])
def test_policy_case(case: dict[str, Any]) -> None:
    check_case(case, parse_tool_calls(case["raw"]))


def call(name: str, args: Any = None, *, key: str = "arguments") -> str:
    body: dict[str, Any] = {"name": name}
    if args is not None:
        body[key] = args
    return "<tool_call>\n" + json.dumps(body) + "\n</tool_call>"


# --- rule 1: end of turn ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "token", ["<|im_end|>", "<|im_start|>", "<|eot_id|>", "<|end_of_text|>", "<|endoftext|>"]
)
def test_end_of_turn_token_ends_the_output(token: str) -> None:
    result = parse_tool_calls("Hi." + call("a", {}) + token + "after " + call("b", {}))
    assert calls_of(result) == [("a", {})]
    assert result.content == "Hi."


def test_end_of_turn_inside_a_string_cuts_the_call_off() -> None:
    result = parse_tool_calls('<tool_call>{"name": "f", "arguments": {"s": "a<|im_end|>b"}}</tool_call>')
    assert result.tool_calls == []
    assert len(result.invalid_tool_calls) == 1
    assert "cut off" in result.invalid_tool_calls[0].error
    assert result.invalid_tool_calls[0].name == "f"


def test_partial_end_of_turn_lookalike_is_text() -> None:
    assert parse_tool_calls("a <|im_en b <|x|>").content == "a <|im_en b <|x|>"


# --- rule 2: what counts as a call attempt -------------------------------------------------------


def test_repeated_marker_counts_once() -> None:
    result = parse_tool_calls('<tool_call><tool_call>{"name": "a", "arguments": {"x": 1}}</tool_call>')
    assert calls_of(result) == [("a", {"x": 1})]
    assert result.invalid_tool_calls == [] and result.content == ""


def test_repeated_marker_with_whitespace_counts_once() -> None:
    result = parse_tool_calls('<tool_call>\n<tool_call>\n{"name": "a"}\n</tool_call>')
    assert calls_of(result) == [("a", {})]


@pytest.mark.parametrize("fence", ["```json\n", "```\n", "```JSON \n", "```json "])
def test_markdown_fence_after_tag(fence: str) -> None:
    raw = f'Ok.\n<tool_call>\n{fence}{{"name": "f", "arguments": {{"a": 1}}}}\n```\n</tool_call>\nDone.'
    result = parse_tool_calls(raw)
    assert calls_of(result) == [("f", {"a": 1})]
    assert result.content == "Ok.\nDone."


def test_fenced_block_without_close_tag_keeps_following_prose() -> None:
    result = parse_tool_calls('<tool_call>```json\n{"name": "f"}\n```\nThanks!')
    assert calls_of(result) == [("f", {})]
    assert result.content == "Thanks!"


def test_fence_outside_the_tag_stays_in_the_text() -> None:
    result = parse_tool_calls('```\n<tool_call>{"name": "f"}</tool_call>\n```')
    assert calls_of(result) == [("f", {})]
    assert result.content == "```\n```"


@pytest.mark.parametrize(
    "raw",
    [
        "Wrap calls in `<tool_call>` tags.",
        "<tool_call> is a special token",
        "a <tool_call>42</tool_call> b",
        "<tool_call>```python\nprint(1)\n```",
        "<tool_call>``",
        'say "<tool_call>" then JSON',
    ],
)
def test_tag_not_followed_by_json_is_prose(raw: str) -> None:
    result = parse_tool_calls(raw)
    assert result.tool_calls == [] and result.invalid_tool_calls == []
    assert result.content == raw.strip()


@pytest.mark.parametrize(
    "raw",
    ["<tool_call>", "<tool_call>\n  \n", "Let me check.\n<tool_call>\n```json\n", "<tool_call> <tool_c"],
)
def test_tag_followed_only_by_whitespace_is_a_truncated_attempt(raw: str) -> None:
    result = parse_tool_calls(raw)
    assert result.tool_calls == []
    assert len(result.invalid_tool_calls) == 1
    assert "cut off" in result.invalid_tool_calls[0].error
    assert "<tool_call" not in result.content


@pytest.mark.parametrize(
    "raw",
    [
        '{"name": "get_weather", "arguments": {"city": "Oslo"}}',
        '[{"name": "a"}]',
        '</tool_call>{"name": "a"}',
    ],
)
def test_json_without_the_tag_is_never_a_call(raw: str) -> None:
    result = parse_tool_calls(raw)
    assert result.tool_calls == [] and result.invalid_tool_calls == []
    assert result.content == raw


# --- rule 3: where a call ends ---------------------------------------------------------------------


def test_close_tag_inside_double_quoted_string() -> None:
    result = parse_tool_calls(call("w", {"text": "end with </tool_call> ok"}) + "\nAfter.")
    assert calls_of(result) == [("w", {"text": "end with </tool_call> ok"})]
    assert result.content == "After."


def test_close_tag_inside_single_quoted_python_string() -> None:
    raw = "<tool_call>{'name': 'w', 'arguments': {'t': 'a </tool_call> \"b\"'}}</tool_call> x"
    result = parse_tool_calls(raw)
    assert calls_of(result) == [("w", {"t": 'a </tool_call> "b"'})]
    assert result.content == "x"


def test_single_quoted_string_with_escaped_quote() -> None:
    raw = "<tool_call>{'name': 'say', 'arguments': {'text': 'it\\'s {fine}'}}</tool_call>"
    assert calls_of(parse_tool_calls(raw)) == [("say", {"text": "it's {fine}"})]


def test_escaped_double_quotes_and_backslashes() -> None:
    args = {"q": 'a "quoted" } ] </tool_call> word', "path": "C:\\dir\\", "apostrophe": "it's"}
    result = parse_tool_calls(call("f", args))
    assert calls_of(result) == [("f", args)]


def test_nested_arguments_are_not_flattened() -> None:
    args = {"a": {"b": {"c": [1, {"d": [[], {}]}]}}, "e": [{"f": None}]}
    assert calls_of(parse_tool_calls(call("deep", args))) == [("deep", args)]


def test_unicode_arguments_raw_and_escaped() -> None:
    args = {"city": "Zürich", "emoji": "😀", "cjk": "東京", "rtl": "שלום"}
    for ensure_ascii in (True, False):
        body = json.dumps({"name": "u", "arguments": args}, ensure_ascii=ensure_ascii)
        assert calls_of(parse_tool_calls(f"<tool_call>{body}</tool_call>")) == [("u", args)]


def test_several_values_in_one_block_mixed_validity() -> None:
    raw = '<tool_call>\n{"name": "a"}\n{"name": ""}\n{"name": "b", "arguments": {"k": 2}}\n</tool_call>'
    result = parse_tool_calls(raw)
    assert calls_of(result) == [("a", {}), ("b", {"k": 2})]
    assert len(result.invalid_tool_calls) == 1


def test_one_broken_block_does_not_drop_the_others() -> None:
    raw = call("a", {}) + '\n<tool_call>{"name": "b", "arguments": {"x": oops}}</tool_call>\n' + call("c", {})
    result = parse_tool_calls(raw)
    assert calls_of(result) == [("a", {}), ("c", {})]
    assert len(result.invalid_tool_calls) == 1
    assert result.invalid_tool_calls[0].name == "b"
    assert "oops" in result.invalid_tool_calls[0].raw
    assert result.content == ""


def test_stray_extra_closing_brace_is_part_of_the_block() -> None:
    result = parse_tool_calls('<tool_call>{"name": "f", "arguments": {"a": 1}}}\n</tool_call>\nBye.')
    assert calls_of(result) == [("f", {"a": 1})]
    assert result.content == "Bye."


def test_missing_close_tag_then_prose() -> None:
    result = parse_tool_calls('<tool_call>{"name": "f"}\nI called it.')
    assert calls_of(result) == [("f", {})]
    assert result.content == "I called it."


def test_close_tag_cut_off_at_the_end_is_dropped() -> None:
    result = parse_tool_calls('<tool_call>{"name": "f"}\n</tool_')
    assert calls_of(result) == [("f", {})]
    assert result.content == ""


# --- rule 4: truncation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        ('<tool_call>{"name": "get_weather", "arguments": {"city": "Par', "get_weather"),
        ('<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}', "get_weather"),
        ('<tool_call>{"arguments": {"x": 1}, "na', None),
        ("<tool_call>{'name': 'py', 'arguments': {'x': [1, 2", "py"),
        ('<tool_call>[{"name": "a"}, {"name": "b"}', None),
        ('<tool_call>{"name": 5, "x": "y"', None),
        ('<tool_call>{"arguments": {"name": "inner"}, "name": "outer", "x', "outer"),
    ],
)
def test_value_cut_off_by_the_end_is_invalid(raw: str, name: str | None) -> None:
    result = parse_tool_calls(raw)
    assert result.tool_calls == []
    assert len(result.invalid_tool_calls) == 1
    bad = result.invalid_tool_calls[0]
    assert "cut off" in bad.error
    assert bad.name == name
    assert bad.raw == raw[len("<tool_call>") :]
    assert result.content == ""


def test_repair_missing_braces_before_close_tag() -> None:
    raw = 'Ok.\n<tool_call>\n{"name": "f", "arguments": {"x": {"y": 1}\n</tool_call>\nDone.'
    result = parse_tool_calls(raw)
    assert calls_of(result) == [("f", {"x": {"y": 1}})]
    assert result.content == "Ok.\nDone."


def test_repair_does_not_close_lists() -> None:
    result = parse_tool_calls('<tool_call>{"name": "f", "arguments": {"x": [1, 2}</tool_call>')
    assert result.tool_calls == [] and len(result.invalid_tool_calls) == 1
    assert result.invalid_tool_calls[0].name == "f"


def test_repair_that_still_fails_is_invalid() -> None:
    result = parse_tool_calls('<tool_call>{"name": "f", "arguments": {"x": </tool_call> tail')
    assert result.tool_calls == [] and len(result.invalid_tool_calls) == 1
    assert "missing closing braces" in result.invalid_tool_calls[0].error
    assert result.content == "tail"


def test_close_tag_inside_unterminated_string_is_not_a_repair() -> None:
    result = parse_tool_calls('<tool_call>{"name": "f", "arguments": {"x": "abc</tool_call> more text')
    assert result.tool_calls == [] and len(result.invalid_tool_calls) == 1
    assert "cut off" in result.invalid_tool_calls[0].error


# --- rule 5: decoding ladder -----------------------------------------------------------------------


def test_raw_newline_and_tab_inside_strings() -> None:
    raw = '<tool_call>{"name": "w", "arguments": {"text": "line1\nline2\tend"}}</tool_call>'
    assert calls_of(parse_tool_calls(raw)) == [("w", {"text": "line1\nline2\tend"})]


def test_trailing_commas_outside_strings_only() -> None:
    raw = '<tool_call>{"name": "f", "arguments": {"s": "a,}", "l": [1, 2,],},}</tool_call>'
    assert calls_of(parse_tool_calls(raw)) == [("f", {"s": "a,}", "l": [1, 2]})]


def test_python_literals() -> None:
    raw = "<tool_call>{'name': 'f', 'arguments': {'t': True, 'n': None, 'tup': (1, 'x'), 'f': -1.5}}</tool_call>"
    assert calls_of(parse_tool_calls(raw)) == [("f", {"t": True, "n": None, "tup": [1, "x"], "f": -1.5})]


def test_python_string_with_double_quotes_is_not_quote_swapped() -> None:
    raw = """<tool_call>{'name': 'say', 'arguments': {'text': 'He said "no"'}}</tool_call>"""
    assert calls_of(parse_tool_calls(raw)) == [("say", {"text": 'He said "no"'})]


@pytest.mark.parametrize(
    "body",
    [
        '{"name": "f", "arguments": {"a": NaN}}',
        '{"name": "f", "arguments": {"a": Infinity}}',
        "{'name': 'f', 'arguments': {'a': {1, 2}}}",
        "{'name': 'f', 'arguments': {1: 'x'}}",
        "{'name': 'f', 'arguments': {'a': b'x'}}",
        "{'name': 'f', 'arguments': {'a': __import__('os')}}",
        '{"name": "f", "arguments": {"a": true, \'b\': 1}}',
        '{"name": <function-name>, "arguments": <args-dict>}',
    ],
)
def test_undecodable_or_non_json_values_are_invalid(body: str) -> None:
    result = parse_tool_calls(f"<tool_call>{body}</tool_call>")
    assert result.tool_calls == []
    assert len(result.invalid_tool_calls) == 1
    assert result.invalid_tool_calls[0].raw == body
    assert result.invalid_tool_calls[0].error


# --- rule 6: normalising ---------------------------------------------------------------------------


def test_list_is_several_calls_and_bad_elements_are_invalid_alone() -> None:
    raw = '<tool_call>[{"name": "a", "arguments": {"x": 1}}, 42, {"name": "b"}]</tool_call>'
    result = parse_tool_calls(raw)
    assert calls_of(result) == [("a", {"x": 1}), ("b", {})]
    assert len(result.invalid_tool_calls) == 1
    assert result.invalid_tool_calls[0].raw == "42"
    assert "number" in result.invalid_tool_calls[0].error


def test_empty_list_is_an_invalid_attempt() -> None:
    assert len(parse_tool_calls("<tool_call>[]</tool_call>").invalid_tool_calls) == 1


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"name": "f"}, {}),
        ({"name": "f", "arguments": None}, {}),
        ({"name": "f", "arguments": ""}, {}),
        ({"name": "f", "arguments": '{"a": [1]}'}, {"a": [1]}),
        ({"name": "f", "parameters": {"p": 1}}, {"p": 1}),
        ({"name": "f", "arguments": {"a": 1}, "parameters": {"p": 1}}, {"a": 1}),
        ({"name": "f", "arguments": {"a": 1}, "id": "x", "type": "function"}, {"a": 1}),
        ({"name": "  f ", "arguments": {}}, {}),
    ],
)
def test_arguments_normalisation(body: dict[str, Any], expected: dict[str, Any]) -> None:
    result = parse_tool_calls(f"<tool_call>{json.dumps(body)}</tool_call>")
    assert calls_of(result) == [("f", expected)]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"name": "f", "arguments": "[1, 2]"}, "decodes to a list"),
        ({"name": "f", "arguments": '"{\\"a\\": 1}"'}, "decodes to a string"),
        ({"name": "f", "arguments": "not json"}, "not valid JSON"),
        ({"name": "f", "arguments": 3}, "got a number"),
        ({"name": "f", "arguments": [1]}, "got a list"),
        ({"name": "", "arguments": {}}, "non-empty string"),
        ({"name": 5, "arguments": {}}, "non-empty string"),
        ({"arguments": {}}, 'no "name"'),
    ],
)
def test_unusable_calls_are_invalid_with_a_reason(body: dict[str, Any], fragment: str) -> None:
    result = parse_tool_calls(f"<tool_call>{json.dumps(body)}</tool_call>")
    assert result.tool_calls == []
    assert len(result.invalid_tool_calls) == 1
    assert fragment in result.invalid_tool_calls[0].error
    if isinstance(body.get("name"), str) and body["name"]:
        assert result.invalid_tool_calls[0].name == body["name"]


# --- rule 7: keeping all the text ------------------------------------------------------------------


def test_text_before_between_and_after_is_kept_and_joined() -> None:
    raw = f"First.\n{call('a', {})}\nThen.\n{call('b', {})}\nLast."
    assert parse_tool_calls(raw).content == "First.\nThen.\nLast."


def test_whitespace_around_a_removed_block_collapses_to_the_longer_run() -> None:
    assert parse_tool_calls("A. " + call("a") + " B.").content == "A. B."
    assert parse_tool_calls("A.\n\n" + call("a") + "\nB.").content == "A.\n\nB."
    assert parse_tool_calls("A." + call("a") + "B.").content == "A.B."
    assert parse_tool_calls("  \n A.\n" + call("a") + "\n\n").content == "A."


def test_invalid_blocks_are_removed_from_the_text() -> None:
    result = parse_tool_calls('Before.\n<tool_call>{"name": }</tool_call>\nAfter.')
    assert result.content == "Before.\nAfter."
    assert len(result.invalid_tool_calls) == 1


def test_prose_whitespace_inside_is_kept() -> None:
    assert parse_tool_calls("a  b\n\n c\t").content == "a  b\n\n c"


# --- robustness ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "<",
        "<tool_call>" * 50,
        "<tool_call>{" * 50,
        "<tool_call>" + "[" * 20000,
        "<tool_call>" + "[" * 20000 + "]" * 20000 + "</tool_call>",
        "<tool_call>{'a': " + "(" * 500 + "</tool_call>",
        '<tool_call>{"\\',
        "<tool_call>{'\\",
        '<tool_call>{"a": "\x00\ud800"}</tool_call>',
        "<tool_call>{'name': 'f\x00'}</tool_call>",
        "</tool_call></tool_call>}}]]<tool_call>]",
    ],
)
def test_malformed_output_never_raises(raw: str) -> None:
    result = parse_tool_calls(raw)
    assert isinstance(result, ParsedResponse)
    for bad in result.invalid_tool_calls:
        assert bad.error


def test_ids_are_unique_across_calls_and_parses() -> None:
    raw = "".join(call("f", {"i": i}) for i in range(50)) + "<tool_call>{bad}</tool_call>"
    first, second = parse_tool_calls(raw), parse_tool_calls(raw)
    ids = [c.id for c in first.tool_calls + second.tool_calls]
    ids += [b.id for b in first.invalid_tool_calls + second.invalid_tool_calls]
    assert len(ids) == 102 and len(set(ids)) == 102


# --- values JSON cannot carry (issue 12 item 4) ----------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        '{"name": "f", "arguments": {"x": 1e999}}',  # strict JSON
        '{"name": "f", "arguments": {"x": -1E400}}',
        '{"name": "f", "arguments": {"x": 1' + "0" * 400 + ".5}}",  # a long mantissa overflows too
        '{"name": "f", "arguments": {"x": [1e999],}}',  # JSON minus trailing commas
        "{'name': 'f', 'arguments': {'x': 1e999}}",  # Python literal, decoded through JSON
        "{'name': 'f', 'arguments': {'x': -1e999, 's': 'a\\n'}}",  # Python literal via ast.literal_eval
        "{'name': 'f', 'arguments': {'x': float('inf')}}",
        "{'name': 'f', 'arguments': {'x': float('nan')}}",
        '{"name": "f", "arguments": {"x": NaN}}',
        '{"name": "f", "arguments": {"x": -Infinity}}',
        '{"name": "f", "arguments": "{\\"x\\": 1e999}"}',  # arguments as a JSON string
        '[{"name": "f", "arguments": {"x": 1e999}}]',  # an element of a list
    ],
)
@pytest.mark.parametrize("closing", ["</tool_call>", "", "\n</tool_call> after"])
def test_non_finite_numbers_make_the_call_invalid(body: str, closing: str) -> None:
    result = parse_tool_calls(f"<tool_call>{body}{closing}")
    assert result.tool_calls == []
    assert len(result.invalid_tool_calls) == 1
    assert result.invalid_tool_calls[0].error


def test_non_finite_number_in_the_repaired_object_is_invalid() -> None:
    result = parse_tool_calls('<tool_call>{"name": "f", "arguments": {"x": 1e999}\n</tool_call>')
    assert result.tool_calls == [] and len(result.invalid_tool_calls) == 1


def test_the_error_names_the_overflowing_number() -> None:
    bad = parse_tool_calls('<tool_call>{"name": "f", "arguments": {"x": true, "y": 1e999}}</tool_call>')
    assert "1e999" in bad.invalid_tool_calls[0].error and "finite" in bad.invalid_tool_calls[0].error
    assert bad.invalid_tool_calls[0].name == "f"


@pytest.mark.parametrize(
    "body",
    [
        '{"name": "f", "arguments": {"s": "\\ud800"}}',
        '{"name": "f", "arguments": {"s": "\\udc00 after"}}',  # a low half alone
        '{"name": "f", "arguments": {"s": "\\ud83d then text"}}',  # a high half not followed by a low one
        '{"name": "f", "arguments": {"\\ud800": 1}}',  # in a key
        '{"name": "f\\ud800", "arguments": {}}',  # in the name
        "{'name': 'f', 'arguments': {'s': '\\ud800'}}",  # Python literal
        "{'name': 'f', 'arguments': {'s': '\\U0000dfff'}}",
        '{"name": "f", "arguments": "{\\"s\\": \\"\\\\ud800\\"}"}',  # inside string arguments
        '{"name": "f", "arguments": {"s": "raw \ud800 character"}}',  # a raw surrogate in the text
        '[{"name": "f", "arguments": {"s": ["\\ud800"]}}]',
    ],
)
def test_lone_surrogates_make_the_call_invalid(body: str) -> None:
    result = parse_tool_calls(f"<tool_call>{body}</tool_call>")
    assert result.tool_calls == []
    assert len(result.invalid_tool_calls) == 1
    assert "surrogate" in result.invalid_tool_calls[0].error


@pytest.mark.parametrize(
    "body",
    [
        '{"name": "f", "arguments": {"s": "\\ud83d\\ude00!"}}',
        "{'name': 'f', 'arguments': {'s': '\\ud83d\\ude00!'}}",
        '{"name": "f", "arguments": "{\\"s\\": \\"\\\\ud83d\\\\ude00!\\"}"}',
        '{"name": "f", "arguments": {"s": "\U0001f600!"}}',
    ],
)
def test_surrogate_pairs_become_one_character_on_every_path(body: str) -> None:
    result = parse_tool_calls(f"<tool_call>{body}</tool_call>")
    assert calls_of(result) == [("f", {"s": "\U0001f600!"})]


def test_valid_calls_always_serialise_as_strict_utf8_json() -> None:
    raw = "".join(
        f"<tool_call>{body}</tool_call>"
        for body in (
            '{"name": "a", "arguments": {"x": 1e308, "y": -0.0, "z": 1e-999}}',
            "{'name': 'b', 'arguments': {'s': '\\u00e9\\U0001F600'}}",
        )
    )
    result = parse_tool_calls(raw)
    assert [call.name for call in result.tool_calls] == ["a", "b"]
    for call in result.tool_calls:
        json.dumps(call.arguments, allow_nan=False, ensure_ascii=False).encode("utf-8")
