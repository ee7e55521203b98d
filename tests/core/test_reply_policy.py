"""The frontend keeps constrained replies whole and calls unrepeated, on the tiny random model.

Repeated calls: sampled with seed 0, the tiny model repeats ``ping(host="b")`` three times when forced to
call; seed 6 makes two calls, then a third cut off by the budget. Budget: in JSON mode it writes random
characters into a string until the budget ends, so without a reserve the JSON is cut off.
"""

from __future__ import annotations

import asyncio
import json

import jsonschema
import pytest

from hermes_core import HermesEngine, UnsupportedOptionError, load_engine

PING = {
    "type": "function",
    "function": {
        "name": "ping",
        "parameters": {"type": "object", "properties": {"host": {"enum": ["a", "b"]}}, "required": ["host"]},
    },
}
NOTE = {
    "type": "function",
    "function": {
        "name": "note",
        "parameters": {
            "type": "object",
            "properties": {
                "text": {"type": "string"},
                "tags": {"type": "array", "items": {"type": "string"}},
            },
            "required": ["text", "tags"],
        },
    },
}
RECORD = {
    "type": "object",
    "properties": {"title": {"type": "string"}, "n": {"type": "integer"}, "ok": {"type": "boolean"}},
    "required": ["title", "n", "ok"],
}
ASK = [{"role": "user", "content": "ping"}]
SAMPLED = {"temperature": 1.0, "tools": [PING], "tool_choice": "required", "max_new_tokens": 120}


@pytest.fixture(scope="module")
def engine(tiny_model_dir) -> HermesEngine:
    return load_engine(str(tiny_model_dir), max_new_tokens=24)


def _streamed(engine: HermesEngine, **options) -> tuple[list, object]:
    events = list(engine.stream(ASK, **options))
    return events[:-1], events[-1].result


def test_a_repeated_call_ends_the_turn_and_is_dropped(engine) -> None:
    kept = engine.generate(ASK, duplicate_tool_calls="keep", seed=0, **SAMPLED)
    assert [c.arguments for c in kept.tool_calls] == [{"host": "b"}] * 3  # what the model does
    result = engine.generate(ASK, seed=0, **SAMPLED)
    assert [(c.name, c.arguments) for c in result.tool_calls] == [("ping", {"host": "b"})]
    assert result.finish_reason == "tool_calls" and not result.invalid_tool_calls
    assert [d.reason for d in result.dropped] == ["duplicate_call"]
    assert '"host": "b"' in result.dropped[0].text
    assert result.usage.completion_tokens < kept.usage.completion_tokens  # generation stopped there


def test_a_stream_never_shows_the_dropped_call(engine) -> None:
    events, result = _streamed(engine, seed=0, **SAMPLED)
    assert {e.index for e in events if e.type == "tool_call_delta"} == {0}
    assert [e.tool_call.arguments for e in events if e.type == "tool_call"] == [{"host": "b"}]
    whole = engine.generate(ASK, seed=0, **SAMPLED)
    assert [c.id for c in result.tool_calls] == [e.tool_call.id for e in events if e.type == "tool_call"]
    assert [(c.name, c.arguments) for c in result.tool_calls] == [
        (c.name, c.arguments) for c in whole.tool_calls
    ]
    assert result.dropped == whole.dropped


def test_a_further_call_cut_off_by_the_budget_is_dropped(engine) -> None:
    result = engine.generate(ASK, duplicate_tool_calls="keep", seed=6, **SAMPLED)
    assert [c.arguments["host"] for c in result.tool_calls] == ["a", "b", "b"]
    assert not result.invalid_tool_calls  # the fourth, cut-off call is not presented as a call
    assert result.finish_reason == "length"
    assert [d.reason for d in result.dropped] == ["cut_off_call"]
    assert result.dropped[0].text.lstrip().startswith("<tool_call>")
    events, streamed = _streamed(engine, duplicate_tool_calls="keep", seed=6, **SAMPLED)
    assert {e.index for e in events if e.type == "tool_call_delta"} == {0, 1, 2}
    assert not [e for e in events if e.type == "invalid_tool_call"]
    assert streamed.dropped == result.dropped


def test_an_unknown_duplicate_policy_is_refused_before_generating(engine) -> None:
    with pytest.raises(UnsupportedOptionError, match="duplicate_tool_calls must be 'end_turn'"):
        engine.generate(ASK, duplicate_tool_calls="drop")


def _smallest_tokens(engine: HermesEngine) -> int:
    from hermes_core.format.reply_completion import ReplyCompleter

    return engine.count_tokens(ReplyCompleter.for_json(RECORD).complete(""))


@pytest.mark.parametrize("extra", [0, 1, 3, 6, 12, 19, 27])
def test_json_mode_finishes_validly_within_the_budget(engine, extra: int) -> None:
    budget = _smallest_tokens(engine) + extra
    result = engine.generate(ASK, response_format=RECORD, max_new_tokens=budget)
    jsonschema.validate(json.loads(result.content), RECORD)
    assert result.finish_reason == "length" and result.appended_text
    assert result.content.endswith(result.appended_text)
    assert result.usage.completion_tokens <= budget
    events, streamed = _streamed(engine, response_format=RECORD, max_new_tokens=budget)
    assert "".join(e.text for e in events if e.type == "text") == streamed.content == result.content
    assert streamed.appended_text == result.appended_text


def test_a_budget_below_the_smallest_reply_keeps_todays_cut(engine) -> None:
    result = engine.generate(ASK, response_format=RECORD, max_new_tokens=_smallest_tokens(engine) - 1)
    assert result.finish_reason == "length" and not result.appended_text
    with pytest.raises(json.JSONDecodeError):
        json.loads(result.content)


@pytest.mark.parametrize("budget", [34, 36, 38, 40])  # the tiny model's whole call takes 42 tokens
def test_a_forced_call_cut_off_by_the_budget_is_finished_valid(engine, budget: int) -> None:
    for choice in ("required", "note"):
        result = engine.generate(ASK, tools=[NOTE], tool_choice=choice, max_new_tokens=budget)
        assert len(result.tool_calls) == 1 and not result.invalid_tool_calls, result.raw_text
        assert set(result.tool_calls[0].arguments) == {"text", "tags"}
        assert result.finish_reason == "length" and result.appended_text.endswith("</tool_call>")
        assert result.raw_text.endswith(result.appended_text)
        assert result.usage.completion_tokens <= budget


def test_async_generate_finishes_the_same_way(engine) -> None:
    budget = _smallest_tokens(engine) + 5
    result = asyncio.run(engine.agenerate(ASK, response_format=RECORD, max_new_tokens=budget))
    assert result.content == engine.generate(ASK, response_format=RECORD, max_new_tokens=budget).content
    jsonschema.validate(json.loads(result.content), RECORD)


def test_json_mode_works_as_a_fresh_engines_first_request(tiny_model_dir) -> None:
    """An empty grammar cache is falsy (it has a length): the frontend must still compile with it."""
    fresh = load_engine(str(tiny_model_dir), max_new_tokens=24)
    assert len(fresh.engine.grammars()) == 0
    result = fresh.generate(ASK, response_format=RECORD, max_new_tokens=_smallest_tokens(fresh) + 3)
    jsonschema.validate(json.loads(result.content), RECORD)


@pytest.mark.parametrize("seed", [0, 2, 3])  # seeds with which it thinks past the budget
def test_a_reply_cut_inside_its_reasoning_is_closed_and_finished(tiny_model_dir, seed: int) -> None:
    """Prompted as Qwen3, the sampling random model may open a reasoning block; the budget ends in it."""
    qwen3 = load_engine(str(tiny_model_dir), max_new_tokens=40, variant="qwen3")
    options = {"response_format": RECORD, "temperature": 1.0, "seed": seed, "reasoning_budget": 30}
    result = qwen3.generate(ASK, max_new_tokens=45, **options)
    body = result.content.split("</think>")[-1]
    jsonschema.validate(json.loads(body), RECORD)
    assert result.finish_reason == "length" and result.usage.completion_tokens <= 45
    assert result.appended_text.startswith("</think>") and result.raw_text.endswith(result.appended_text)
