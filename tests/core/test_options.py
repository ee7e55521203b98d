"""Option checks: every bad value is refused with one line naming it, before a model loads or a token is generated."""

from __future__ import annotations

import math

import pytest

from hermes_core import UnsupportedOptionError
from hermes_core.options import check_load_options, check_request_options, env_megabytes

BAD_REQUEST_OPTIONS = [
    ("temperature", math.nan, "temperature must be a finite number >= 0"),
    ("temperature", math.inf, "temperature must be a finite number >= 0"),
    ("temperature", -0.1, "temperature must be a finite number >= 0"),
    ("temperature", "hot", "temperature must be a finite number >= 0"),
    ("repetition_penalty", math.inf, "repetition_penalty must be a finite number > 0"),
    ("repetition_penalty", 0, "repetition_penalty must be a finite number > 0"),
    ("top_p", math.nan, r"top_p must be a number in \(0, 1\]"),
    ("top_p", 1.5, r"top_p must be a number in \(0, 1\]"),
    ("max_new_tokens", 1.7, "max_new_tokens must be a whole number of tokens, at least 1, got 1.7"),
    ("max_new_tokens", True, "max_new_tokens must be a whole number of tokens, at least 1, got True"),
    ("max_new_tokens", 0, "max_new_tokens must be a whole number of tokens, at least 1"),
    ("stop", [""], "stop sequences must be non-empty strings, got '' in"),
    ("stop", "", "stop sequences must be non-empty strings"),
    ("stop", ["ok", 3], "stop sequences must be non-empty strings, got 3"),
    ("stop", 5, "stop must be a string or a list of strings"),
    ("seed", 1.5, "seed must be a whole number"),
    ("constrained", "yes", "constrained must be True or False"),
]


@pytest.mark.parametrize(("name", "value", "message"), BAD_REQUEST_OPTIONS)
def test_bad_request_option_is_one_line_error(name, value, message):
    with pytest.raises(UnsupportedOptionError, match=message) as caught:
        check_request_options({name: value})
    assert "\n" not in str(caught.value)


def test_good_request_options_and_unset_ones_pass():
    check_request_options(
        {"temperature": 0, "top_p": 1, "max_new_tokens": 1, "stop": ["\n\n"], "seed": 3, "constrained": False}
    )
    check_request_options({"temperature": None, "stop": None, "messages": object()})  # None = not given


def test_tool_choice_is_checked_against_the_offered_tools():
    def get_weather(city: str) -> str:
        return city

    spec = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    check_request_options({"tools": [get_weather, spec], "tool_choice": "lookup"})
    with pytest.raises(
        UnsupportedOptionError, match="unknown tool 'nope'; the bound tools are: get_weather, lookup"
    ):
        check_request_options({"tools": [get_weather, spec], "tool_choice": "nope"})
    with pytest.raises(UnsupportedOptionError, match="requires at least one tool"):
        check_request_options({"tool_choice": "required"})


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            {"quantization": "3bit"},
            "unknown quantization '3bit'; use one of '4bit', '8bit', 'int4', 'none', None, 'auto'",
        ),
        ({"torch_dtype": "int3"}, "unknown torch_dtype 'int3'"),
        ({"prefix_cache": "no"}, "prefix_cache must be True or False"),
    ],
)
def test_bad_load_option_is_one_line_error(options, message):
    with pytest.raises(UnsupportedOptionError, match=message):
        check_load_options(options)
    check_load_options({"quantization": " 4BIT ", "torch_dtype": "bf16", "prefix_cache": True})


def test_load_engine_refuses_bad_options_before_touching_the_model():
    from hermes_core import load_engine

    # a model that does not exist: reaching the loader would raise a ModelLoadError instead
    with pytest.raises(UnsupportedOptionError, match="unknown quantization '3bit'"):
        load_engine("/no/such/model", quantization="3bit")
    with pytest.raises(UnsupportedOptionError, match="temperature must be a finite number"):
        load_engine("/no/such/model", temperature=math.nan)


def test_engine_refuses_bad_per_call_options_before_generating(tiny_model_dir):
    from hermes_core import Message, get_engine

    engine = get_engine(str(tiny_model_dir))
    before = engine.stats.requests
    ask = [Message("user", "Hi")]
    for name, value, message in BAD_REQUEST_OPTIONS:
        with pytest.raises(UnsupportedOptionError, match=message):
            engine.generate(ask, **{name: value})
    with pytest.raises(UnsupportedOptionError, match="temperature must be a finite number"):
        list(engine.stream(ask, temperature=math.nan))
    assert engine.stats.requests == before  # nothing was generated


def test_env_megabytes(monkeypatch):
    monkeypatch.delenv("HERMES_TEST_MB", raising=False)
    assert env_megabytes("HERMES_TEST_MB", 3) == 3 * 1024 * 1024
    monkeypatch.setenv("HERMES_TEST_MB", "0.5")
    assert env_megabytes("HERMES_TEST_MB", 3) == 512 * 1024
    monkeypatch.setenv("HERMES_TEST_MB", "lots")
    with pytest.raises(UnsupportedOptionError, match="HERMES_TEST_MB must be a size in MiB"):
        env_megabytes("HERMES_TEST_MB", 3)
