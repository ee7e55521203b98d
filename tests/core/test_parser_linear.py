"""The parser's work grows linearly with the output, counted (not timed) on pathological outputs.

Work is counted where the parser hands text to code that scans it: each JSON decode (the characters it
is given), each decode error (its message counts lines from the start of the string, the cost behind
issue 12 item 3), each ``ast.literal_eval`` (the text's length), and the characters the value scanner
and the streaming call tracker read. At ten times the size, linear work is about ten times as much;
quadratic work, as before the fix, was about a hundred times as much.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from benchmarks.parser_corpus import PATHOLOGICAL, pathological
from hermes_core import ToolCallStreamParser, parse_tool_calls
from hermes_core.format import _call_tracker, _json_scan

SMALL, LARGE = 4_000, 40_000
# Work per input character may at most double from the small to the large size (a decode window that
# doubles can overshoot differently at the two sizes); quadratic work would grow it tenfold.
SLACK = 2


class WorkCounter:
    """Adds up the characters scanned by every decoding step while installed."""

    def __init__(self) -> None:
        self.chars = 0
        self.decodes = 0

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        counter = self
        raw_decode = json.JSONDecoder.raw_decode
        error_init = json.JSONDecodeError.__init__
        literal_eval = ast.literal_eval
        scan = _json_scan.ValueScanner.scan
        feed = _call_tracker.CallTracker.feed

        def counting_raw_decode(self: json.JSONDecoder, s: str, idx: int = 0) -> tuple[Any, int]:
            counter.chars += len(s) - idx
            counter.decodes += 1
            return raw_decode(self, s, idx)

        def counting_error(self: json.JSONDecodeError, msg: str, doc: str, pos: int) -> None:
            counter.chars += pos  # lineno/colno are found by scanning doc[:pos]
            error_init(self, msg, doc, pos)

        def counting_literal_eval(node_or_string: Any) -> Any:
            if isinstance(node_or_string, str):
                counter.chars += len(node_or_string)
            counter.decodes += 1
            return literal_eval(node_or_string)

        def counting_scan(self: _json_scan.ValueScanner, s: str, i: int, final: bool) -> tuple[int, int]:
            status, j = scan(self, s, i, final)
            counter.chars += j - i
            return status, j

        def counting_feed(self: _call_tracker.CallTracker, text: str) -> tuple[str | None, str]:
            counter.chars += len(text)
            return feed(self, text)

        monkeypatch.setattr(json.JSONDecoder, "raw_decode", counting_raw_decode)
        monkeypatch.setattr(json.JSONDecodeError, "__init__", counting_error)
        monkeypatch.setattr(ast, "literal_eval", counting_literal_eval)
        monkeypatch.setattr(_json_scan.ValueScanner, "scan", counting_scan)
        monkeypatch.setattr(_call_tracker.CallTracker, "feed", counting_feed)


def whole(text: str) -> None:
    parse_tool_calls(text)


def streamed(chunk: int) -> Callable[[str], None]:
    def run(text: str) -> None:
        parser = ToolCallStreamParser()
        for start in range(0, len(text), chunk):
            parser.feed(text[start : start + chunk])
        parser.close()

    return run


PARSERS = {"whole": whole, "one_delta": streamed(10**9), "deltas_of_64": streamed(64)}


@pytest.fixture
def count_work(
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[[Callable[[str], None], str], WorkCounter]]:
    def measure(parse: Callable[[str], None], text: str) -> WorkCounter:
        counter = WorkCounter()
        with monkeypatch.context() as patch:
            counter.install(patch)
            parse(text)
        return counter

    yield measure


@pytest.mark.parametrize("parser", PARSERS)
@pytest.mark.parametrize("shape", PATHOLOGICAL)
def test_work_grows_linearly(shape: str, parser: str, count_work: Any) -> None:
    small = count_work(PARSERS[parser], pathological(SMALL)[shape])
    large = count_work(PARSERS[parser], pathological(LARGE)[shape])
    per_char_small = max(small.chars, SMALL) / SMALL
    assert large.chars / LARGE <= SLACK * per_char_small, (shape, small.chars, large.chars)
    growth = LARGE / SMALL
    assert large.decodes <= SLACK * growth * max(small.decodes, 1), (shape, small.decodes, large.decodes)


def test_a_failed_attempt_deep_in_a_text_costs_only_its_own_length(count_work: Any) -> None:
    """Decoding errors no longer count lines from the start of the whole output."""
    text = "x" * 50_000 + "<tool_call>{'name': 'f'}</tool_call>"
    counter = count_work(whole, text)
    assert counter.decodes >= 1
    assert 0 < counter.chars < 1_000  # the attempt's position in the text is not charged any more


@pytest.mark.timeout(60)
@pytest.mark.parametrize("shape", ["escaped_quotes", "escaped_quotes_commas", "escaped_python_quotes"])
def test_string_heavy_shapes_finish_at_300_kb(shape: str) -> None:
    """Regular-expression scans are not counted above; before the fix these shapes took minutes at this size (hours at 1 MB)."""
    text = pathological(300_000)[shape]
    result = parse_tool_calls(text)
    assert len(result.invalid_tool_calls) == 1 and result.tool_calls == []
    parser = ToolCallStreamParser()
    parser.feed(text)
    parser.close()
    assert len(parser.result().invalid_tool_calls) == 1
