"""The repeated/cut-off call policy on text alone: what a turn keeps, on every chunking of the reply."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hermes_core.errors import UnsupportedOptionError
from hermes_core.format.call_policy import CallGate, check_duplicate_tool_calls
from hermes_core.format.parser import parse_tool_calls
from hermes_core.format.stream_parser import ToolCallStreamParser


def block(name: str, arguments: dict, *, arguments_first: bool = False) -> str:
    body = (
        {"arguments": arguments, "name": name} if arguments_first else {"name": name, "arguments": arguments}
    )
    return f"<tool_call>\n{json.dumps(body)}\n</tool_call>"


THREE = block("roll", {"sides": 6})
OTHER = block("roll", {"sides": 20})


def run(text: str, cuts: list[int], *, cut_off: bool = False, duplicates: str = "end_turn"):
    """Feed ``text`` in the pieces ``cuts`` make; (gate, events, whether the turn ended early)."""
    gate = CallGate(ToolCallStreamParser(), duplicates)  # type: ignore[arg-type]
    events, ended = [], False
    bounds = [0, *sorted(c for c in set(cuts) if 0 < c < len(text)), len(text)]
    for start, end in itertools.pairwise(bounds):
        released, ended = gate.feed(text[start:end])
        events += released
        if ended:
            break
    events += gate.close(cut_off and not ended)
    return gate, events, ended


CHUNKINGS = st.lists(st.integers(0, 400), max_size=12)


@settings(max_examples=60, deadline=None)
@given(CHUNKINGS)
def test_a_repeat_ends_the_turn_on_every_chunking(cuts: list[int]) -> None:
    text = "\n".join([THREE, OTHER, block("roll", {"sides": 6}, arguments_first=True), OTHER])
    gate, events, ended = run(text, cuts)
    calls = gate.parser.result().tool_calls
    assert ended and [c.arguments for c in calls] == [{"sides": 6}, {"sides": 20}]
    assert [d.reason for d in gate.dropped] == ["duplicate_call"]
    assert [e.tool_call.id for e in events if e.type == "tool_call"] == [c.id for c in calls]
    assert {e.index for e in events if e.type == "tool_call_delta"} == {0, 1}  # the repeat never streamed
    kept = text[: text.index(block("roll", {"sides": 6}, arguments_first=True))]
    whole = parse_tool_calls(kept)
    assert [(c.name, c.arguments) for c in whole.tool_calls] == [(c.name, c.arguments) for c in calls]


@settings(max_examples=40, deadline=None)
@given(CHUNKINGS)
def test_keep_lets_repeats_through(cuts: list[int]) -> None:
    gate, events, ended = run("\n".join([THREE, THREE, THREE]), cuts, duplicates="keep")
    assert not ended and len(gate.parser.result().tool_calls) == 3 and not gate.dropped
    assert len([e for e in events if e.type == "tool_call"]) == 3


OBJECT_END = OTHER.index("}}") + 2  # where the call's JSON object ends, before "\n</tool_call>"


@settings(max_examples=40, deadline=None)
@given(CHUNKINGS, st.integers(1, OBJECT_END - 1))
def test_a_further_call_cut_off_by_the_budget_is_dropped(cuts: list[int], cut: int) -> None:
    text = THREE + "\n" + OTHER[:cut]
    gate, events, _ = run(text, cuts, cut_off=True)
    result = gate.parser.result()
    assert [c.arguments for c in result.tool_calls] == [{"sides": 6}] and not result.invalid_tool_calls
    assert [(d.reason, d.text) for d in gate.dropped] == [("cut_off_call", "\n" + OTHER[:cut])]
    assert not [e for e in events if e.type == "invalid_tool_call"]
    assert {e.index for e in events if e.type == "tool_call_delta"} == {0}


@pytest.mark.parametrize("cut", range(OBJECT_END, len(OTHER)))
def test_a_call_whose_object_is_whole_is_kept_without_its_close_tag(cut: int) -> None:
    gate, _, _ = run(THREE + "\n" + OTHER[:cut], [], cut_off=True)
    assert [c.arguments for c in gate.parser.result().tool_calls] == [{"sides": 6}, {"sides": 20}]
    assert all(d.text.strip() == "<" for d in gate.dropped)  # a lone "<" may begin a tag or a call


def test_a_call_cut_off_without_the_budget_ending_it_stays_invalid() -> None:
    """Only the budget makes a cut-off call droppable; a model that ends mid-call made an invalid call."""
    gate, _, _ = run(THREE + "\n" + OTHER[:30], [], cut_off=False)
    assert len(gate.parser.result().invalid_tool_calls) == 1 and not gate.dropped


def test_the_first_call_is_never_held_back() -> None:
    gate, _events, _ = run(OTHER[:40], [], cut_off=True)
    assert gate.parser.result().invalid_tool_calls and not gate.dropped


@settings(max_examples=40, deadline=None)
@given(CHUNKINGS)
def test_prose_after_a_call_is_released(cuts: list[int]) -> None:
    text = "Let me roll. " + THREE + "\nDone, it rolled."
    gate, events, _ = run(text, cuts, cut_off=True)
    assert gate.parser.result().content == parse_tool_calls(text).content
    assert "".join(e.text for e in events if e.type == "text") == gate.parser.result().content
    assert not gate.dropped


def test_an_unknown_policy_is_refused() -> None:
    assert check_duplicate_tool_calls("keep") == "keep"
    with pytest.raises(UnsupportedOptionError, match=r"'end_turn'.*'keep'"):
        check_duplicate_tool_calls("drop")
