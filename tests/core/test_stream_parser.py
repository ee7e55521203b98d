"""Streaming parsing: any chunking agrees with the whole-text parse, events are well formed."""

from __future__ import annotations

import json
import random
import re
from typing import Any

import pytest

from hermes_core import ToolCallStreamParser, parse_tool_calls
from hermes_core.types import ParsedResponse, StreamEvent
from tests.core.test_parser import CASES, check_case, summary

_TOKEN_LIKE = re.compile(r"<\|[a-z_]+\|>|</?tool_call>|\s?\w{1,6}|\s+|.", re.DOTALL)


def one_char(text: str) -> list[str]:
    return list(text)


def token_like(text: str) -> list[str]:
    """Roughly what a BPE tokenizer yields: special tokens whole, short word pieces, punctuation."""
    return _TOKEN_LIKE.findall(text)


def random_chunks(text: str, seed: int, longest: int = 9) -> list[str]:
    rng = random.Random(seed)
    chunks, i = [], 0
    while i < len(text):
        size = rng.randint(1, longest)
        chunks.append(text[i : i + size])
        i += size
    return chunks


def stream(chunks: list[str]) -> tuple[ParsedResponse, list[StreamEvent]]:
    parser = ToolCallStreamParser()
    events: list[StreamEvent] = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    events.extend(parser.close())
    return parser.result(), events


# Python syntax whose streamed arguments are not promised to be JSON (see hermes_core.format._call_tracker).
EXOTIC_PYTHON = re.compile(
    r"\\(?:[^\"\\bfnrtu']|u[dD][89abAB])"  # escapes JSON lacks, "\/" and surrogate pairs
    r"|#|'''|\"\"\"|[\"']\s*[\"']"  # comments, triple quotes, implicit concatenation
    r"|\b0[xXoObB]|\d_\d|(?<![\w.])\.\d|\d\.(?!\d)|\+\d|\d[jJ]\b"  # Python-only numbers
)


def check_events(result: ParsedResponse, events: list[StreamEvent], raw: str | None = None) -> None:
    """Invariants every event stream must satisfy, whatever the input.

    The argument pieces of each valid call must concatenate to JSON of its arguments; when ``raw`` is
    given, that is only required if it holds none of the exotic Python syntax exempted from it.
    """
    text = "".join(event.text for event in events if event.type == "text")
    assert text == result.content  # so no text event carries any part of a call block
    thinking = [event for event in events if event.type == "reasoning"]
    assert "".join(event.text for event in thinking) == (result.reasoning or "")
    assert all(event.text for event in thinking)
    assert [event.type for event in events[: len(thinking)]] == ["reasoning"] * len(thinking)
    for call in result.tool_calls:  # what the policy refuses (inf, NaN, lone surrogates) never gets here
        json.dumps(call.arguments, allow_nan=False, ensure_ascii=False).encode("utf-8")
    assert all(event.text for event in events if event.type == "text")
    if "<tool_call" not in result.content:
        assert not any("<tool_call" in event.text for event in events if event.type == "text")
    finished = [event for event in events if event.type in ("tool_call", "invalid_tool_call")]
    assert [event.index for event in finished] == list(range(len(finished)))
    ids = [event.tool_call.id if event.tool_call else event.invalid_tool_call.id for event in finished]
    assert len(set(ids)) == len(ids)
    assert [e.tool_call for e in finished if e.tool_call] == result.tool_calls
    assert [e.invalid_tool_call for e in finished if e.invalid_tool_call] == result.invalid_tool_calls
    deltas: dict[str, list[StreamEvent]] = {}
    position = {id(event): n for n, event in enumerate(events)}
    for event in events:
        if event.type == "tool_call_delta":
            assert event.delta is not None and event.index == event.delta.index
            deltas.setdefault(event.delta.id, []).append(event)
    for event in finished:
        call = event.tool_call or event.invalid_tool_call
        mine = deltas.pop(call.id, [])
        assert all(position[id(d)] < position[id(event)] for d in mine)
        assert all(d.index == event.index for d in mine)
        if event.tool_call is None:
            continue
        names = [d.delta.name for d in mine if d.delta.name is not None]
        assert names == [call.name]  # the name is sent exactly once
        arguments = "".join(d.delta.arguments for d in mine)
        if raw is None or not EXOTIC_PYTHON.search(raw):
            assert json.loads(arguments) == call.arguments
    assert deltas == {}  # no delta for an id that never finished


def chunkings(raw: str) -> dict[str, list[str]]:
    ways = {"whole": [raw], "one_char": one_char(raw), "token_like": token_like(raw)}
    for seed in range(4):
        ways[f"random{seed}"] = random_chunks(raw, seed)
    return ways


@pytest.mark.parametrize("case", CASES, ids=[case["id"] for case in CASES])
def test_policy_case_streamed_every_way(case: dict[str, Any]) -> None:
    whole = parse_tool_calls(case["raw"])
    for way, chunks in chunkings(case["raw"]).items():
        assert "".join(chunks) == case["raw"]
        result, events = stream(chunks)
        check_case(case, result)
        assert summary(result) == summary(whole), way
        check_events(result, events)


TRICKY = [
    'Hi.\n<tool_call>\n{"name": "w", "arguments": {"t": "x </tool_call> y", "q": "a\\"b"}}\n</tool_call>\nBye.',
    "<tool_call>{'name': 'say', 'arguments': {'text': 'He said \"hi\", it\\'s {ok}', 'n': None, 'b': True}}</tool_call>",
    '<tool_call><tool_call>\n```json\n{"arguments": {"a": [1, {"b": 2}]}, "name": "late"}\n```\n</tool_call>',
    '<tool_call>{"name": "f", "arguments": {"a": 1, "b": [1, 2,],}}</tool_call>',
    '<tool_call>{"name": "f", "arguments": {"x": {"y": 1}\n</tool_call> tail',
    '<tool_call>{"name": "f", "arguments": {"s": "cut',
    '<tool_call>[{"name": "a", "arguments": {"x": 1}}, 7, {"name": "b"}]</tool_call>',
    '<tool_call>{"name": "f", "arguments": "{\\"k\\": [1]}"}</tool_call>',
    '<tool_call>{"name": "f", "arguments": {"text": "raw\nnewline\ttab"}}</tool_call>',
    'A <tool_call> mention, then <tool_call>{"name": "g"}</tool_call> and <|im_end|> ignored <tool_call>',
    "Use `<tool_call>` tags. <tool_call>``",
    '<tool_call>{"name": "f"}}\n</tool_call>\n<tool_call>\n',
    '<tool_call>{"name": "u", "arguments": {"e": "\\ud83d\\ude00 😀 Zürich"}}</tool_call>',
    'x<tool_call>{"name": "a"}{"name": "b"} {"name": ""}</tool_call>y',
    "<|im_end|>",
    "text <|im_en",
    '<tool_call>\n{"name": "f", "arguments": {}}\n</tool_',
    # Python-literal shapes where a naive "decode up to </tool_call>" would disagree with the scanner.
    "<tool_call>{'name': 'f', 'arguments': {'t': '''a'}'b'''}}</tool_call>",
    "<tool_call>{'name': 'a'}, {'name': 'b'}</tool_call>",
    "<tool_call>{'name': 'f', # note }\n 'arguments': {}}</tool_call>",
    "<tool_call>{'name': 'f', 'arguments': {'s': {1, 2}}}</tool_call>",
    "<tool_call>{'name': 'f', 'arguments': {'a': [1,],}}</tool_call> and {'x': 1}</tool_call>",
    '<tool_call>{"name": "f", "arguments": {"a": [1,],}}\n</tool_call>',
]


@pytest.mark.parametrize("raw", TRICKY)
def test_tricky_outputs_stream_like_whole(raw: str) -> None:
    whole = parse_tool_calls(raw)
    for way, chunks in chunkings(raw).items():
        result, events = stream(chunks)
        assert summary(result) == summary(whole), way
        check_events(result, events)


def test_text_is_released_as_soon_as_it_is_safe() -> None:
    parser = ToolCallStreamParser()
    assert [e.text for e in parser.feed("Hello there")] == ["Hello there"]
    assert [e.text for e in parser.feed(" friend <tool")] == [" friend"]  # "<tool" may begin a tag
    assert [e.text for e in parser.feed("box> and <|im")] == [" <toolbox> and"]  # "<|im" may end the turn
    assert parser.feed("_end|> more") == []
    assert parser.finished
    assert parser.feed("ignored") == [] and parser.close() == []
    assert parser.result().content == "Hello there friend <toolbox> and"


def test_name_and_arguments_stream_before_the_call_finishes() -> None:
    parser = ToolCallStreamParser()
    events = parser.feed('Checking.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Par')
    types = [event.type for event in events]
    assert types[0] == "text" and "tool_call" not in types
    deltas = [event.delta for event in events if event.type == "tool_call_delta"]
    assert deltas[0].index == 0 and deltas[0].id.startswith("call_")
    assert [d.name for d in deltas if d.name] == ["get_weather"]
    assert "".join(d.arguments for d in deltas) == '{"city": "Par'
    more = parser.feed('is"}}\n</tool_call>')
    assert "".join(e.delta.arguments for e in more if e.type == "tool_call_delta") == 'is"}'
    final = [e for e in more if e.type == "tool_call"]
    assert len(final) == 1 and final[0].tool_call.id == deltas[0].id
    assert final[0].tool_call.arguments == {"city": "Paris"}


def test_python_dict_arguments_stream_as_json() -> None:
    raw = "<tool_call>{'name': 'f', 'arguments': {'a': 'x\"y', 'b': True, 'c': None, 'd': [1, False,]}}</tool_call>"
    _, events = stream(one_char(raw))
    arguments = "".join(e.delta.arguments for e in events if e.type == "tool_call_delta")
    assert json.loads(arguments) == {"a": 'x"y', "b": True, "c": None, "d": [1, False]}


def test_arguments_first_order_sends_name_later() -> None:
    raw = '<tool_call>{"arguments": {"q": 1}, "name": "late"}</tool_call>'
    _, events = stream(one_char(raw))
    deltas = [e.delta for e in events if e.type == "tool_call_delta"]
    first_args = next(n for n, d in enumerate(deltas) if d.arguments)
    name_at = next(n for n, d in enumerate(deltas) if d.name)
    assert first_args < name_at and deltas[name_at].name == "late"


def test_invalid_attempt_keeps_its_id_and_index() -> None:
    _, events = stream(
        token_like('<tool_call>{"name": "a"}</tool_call><tool_call>{"name": "b", "arguments": 3}')
    )
    first_delta = {e.delta.index: e.delta.id for e in reversed(events) if e.type == "tool_call_delta"}
    bad = [e for e in events if e.type == "invalid_tool_call"]
    assert len(bad) == 1 and bad[0].index == 1
    assert bad[0].invalid_tool_call.id == first_delta[1]
    assert bad[0].invalid_tool_call.name == "b"


def test_long_output_in_one_char_chunks_matches_whole() -> None:
    parts = []
    for i in range(60):
        parts.append(f"Step {i}: thinking about   things.\n")
        parts.append(json.dumps({"name": f"tool_{i}", "arguments": {"i": i, "s": "<tool_call> } ] \\ '"}}))
        parts[-1] = "<tool_call>\n" + parts[-1] + "\n</tool_call>\n"
    raw = "".join(parts) + "<|im_end|>"
    whole = parse_tool_calls(raw)
    assert len(whole.tool_calls) == 60
    result, events = stream(one_char(raw))
    assert summary(result) == summary(whole)
    check_events(result, events)


def test_result_before_close_is_partial_then_complete() -> None:
    parser = ToolCallStreamParser()
    parser.feed('Hi <tool_call>{"name": "a"}')
    assert parser.result().content == "Hi"
    assert [c.name for c in parser.result().tool_calls] == ["a"]
    parser.feed(" and bye  ")
    parser.close()
    assert parser.result().content == "Hi and bye"


@pytest.mark.parametrize(
    "raw",
    [
        "<tool_call>" + " \n" * 3000 + '{"name": "f"}',
        '<tool_call>{"name": "f"}' + "\n" * 3000 + "</tool_call>",
        '<tool_call>{"name": "f"}' + "\n" * 3000 + "prose",
        "<tool_call>\n```json" + " " * 3000 + "\n[]",
        "text" + " " * 3000 + "end",
        '<tool_call>{"name": "f", "arguments": {"a": 1,' + " " * 3000 + "}}</tool_call>",
        "<tool_call>" + "<tool_call> " * 500 + '{"name": "f"}',
        " \n" * 3000 + "<think>a</think>b",
        "<think>" + "</thin " * 500 + "</think>" + " " * 3000 + "b",
        "<scratch_pad>" + "x" * 3000,
    ],
)
def test_only_a_short_tail_is_kept_between_deltas(raw: str) -> None:
    """Long undecided stretches are consumed as they come, so the work stays linear."""
    parser = ToolCallStreamParser()
    for ch in raw:
        parser.feed(ch)
        assert len(parser._splitter.pending) < len("</tool_call>")
        assert len(parser._hold) < len("<|end_of_text|>")
        assert len(parser._reasoning.partial) < len("</scratch_pad>")
    parser.close()
    assert summary(parser.result()) == summary(parse_tool_calls(raw))


@pytest.mark.parametrize(
    "chunks",
    [
        ["<tool_call>", "```", "json", "\n", "No", " tool", " needed", "."],
        list("<tool_call>```j o"),
        ["<tool_call>```js", "on", " \n", '{"name": "f"}', "\n```", "</tool_call>"],
        ["<tool_call>```", " ", "json", "\n", '{"name": "f"}</tool_call>'],
    ],
)
def test_a_delta_ending_inside_a_fence_label_resumes_where_whole_text_would(chunks: list[str]) -> None:
    """Issue 12 item 2: the word after a fence label was taken for the label when a delta ended after it."""
    result, events = stream(chunks)
    assert summary(result) == summary(parse_tool_calls("".join(chunks)))
    check_events(result, events)


# --- the reasoning block ---------------------------------------------------------------------------


def test_reasoning_streams_first_then_the_reply() -> None:
    parser = ToolCallStreamParser()
    events = []
    for delta in [
        "  <thi",
        "nk>\nPlan: call ",
        "f",
        " with x=1.\n</thi",
        "nk>\n",
        '<tool_call>{"name": "f"}',
        "</tool_call>",
    ]:
        events += parser.feed(delta)
    events += parser.close()
    kinds = [event.type for event in events]
    assert kinds[:3] == ["reasoning", "reasoning", "reasoning"]
    assert "".join(e.text for e in events if e.type == "reasoning") == "Plan: call f with x=1."
    assert parser.result().reasoning == "Plan: call f with x=1."
    assert [call.name for call in parser.result().tool_calls] == ["f"]
    assert parser.result().content == ""


def test_reasoning_is_released_as_it_grows() -> None:
    parser = ToolCallStreamParser()
    assert parser.feed("<think>") == []
    assert [(e.type, e.text) for e in parser.feed("First idea")] == [("reasoning", "First idea")]
    assert [(e.type, e.text) for e in parser.feed(", second  ")] == [("reasoning", ", second")]
    assert parser.feed("</th") == []  # may be the closing tag
    assert [(e.type, e.text) for e in parser.feed("ink>Hello")] == [("text", "Hello")]
    parser.close()
    assert parser.result().reasoning == "First idea, second"


def test_a_reply_cut_off_inside_the_reasoning_is_all_reasoning() -> None:
    result, events = stream(token_like('<think>I will call <tool_call>{"name": "f"'))
    assert result.reasoning == 'I will call <tool_call>{"name": "f"'
    assert result.content == "" and result.tool_calls == [] and result.invalid_tool_calls == []
    check_events(result, events)


def test_no_reasoning_block_means_reasoning_is_none() -> None:
    for raw in ["Hello", "", "   ", "<thinking>x", "x<think>y</think>"]:
        result, _ = stream(one_char(raw))
        assert result.reasoning is None and parse_tool_calls(raw).reasoning is None
