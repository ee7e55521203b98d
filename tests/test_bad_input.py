"""Both adapters refuse bad options where they are given, with the core's one-line message, before any model loads."""

from __future__ import annotations

import math
import time

import pytest

from hermes_core import UnsupportedOptionError
from langchain_hermes import ChatHermes
from llama_index_hermes import HermesLLM

BAD_SETTINGS = [
    (
        {"quantization": "3bit"},
        "unknown quantization '3bit'; use one of '4bit', '8bit', 'int4', 'none', None, 'auto'.",
    ),
    ({"torch_dtype": "int3"}, "unknown torch_dtype 'int3'"),
    ({"temperature": math.nan}, "temperature must be a finite number >= 0 (0 = greedy), got nan"),
    ({"temperature": math.inf}, "temperature must be a finite number >= 0 (0 = greedy), got inf"),
    ({"repetition_penalty": math.inf}, "repetition_penalty must be a finite number > 0 (1.0 = off), got inf"),
    ({"max_new_tokens": 1.7}, "max_new_tokens must be a whole number of tokens, at least 1, got 1.7"),
    ({"max_new_tokens": True}, "max_new_tokens must be a whole number of tokens, at least 1, got True"),
    ({"stop": [""]}, "stop sequences must be non-empty strings, got '' in ['']"),
]


def _message(excinfo: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(excinfo.value)
    assert "\n" not in text
    return text


@pytest.mark.parametrize(("settings", "message"), BAD_SETTINGS)
def test_constructors_refuse_bad_settings_with_the_same_line(settings, message):
    with pytest.raises(UnsupportedOptionError) as lang:
        ChatHermes(**settings)
    with pytest.raises(UnsupportedOptionError) as llama:
        HermesLLM(**settings)
    assert message in _message(lang)
    assert _message(lang) == _message(llama)


def test_max_tokens_alias_is_checked_too():
    with pytest.raises(UnsupportedOptionError, match="max_new_tokens must be a whole number"):
        ChatHermes(max_tokens=2.5)


PER_CALL = [(settings, message) for settings, message in BAD_SETTINGS if "quantization" not in settings]


@pytest.mark.parametrize(("settings", "message"), [case for case in PER_CALL if "torch_dtype" not in case[0]])
def test_per_call_options_are_refused_before_the_model_loads(settings, message):
    lang, llama = ChatHermes(), HermesLLM()  # the embedded model: never loaded here
    with pytest.raises(UnsupportedOptionError) as lang_error:
        lang.invoke("Hi", **settings)
    with pytest.raises(UnsupportedOptionError) as bound_error:
        lang.bind(**settings).invoke("Hi")
    with pytest.raises(UnsupportedOptionError) as llama_error:
        llama.complete("Hi", **settings)
    assert message in _message(lang_error)
    assert _message(lang_error) == _message(bound_error) == _message(llama_error)
    assert lang._engine is None and llama._engine is None


def test_bind_tools_checks_option_values_at_bind_time():
    with pytest.raises(UnsupportedOptionError, match="temperature must be a finite number"):
        ChatHermes().bind_tools([], temperature=math.nan)


def test_unknown_forced_tool_fails_before_the_model_loads():
    from llama_index.core.tools import FunctionTool

    def get_weather(city: str) -> str:
        """Weather in a city."""
        return city

    llm = HermesLLM()  # the embedded model: loading it would take seconds
    started = time.perf_counter()
    with pytest.raises(UnsupportedOptionError, match="unknown tool 'nope'; the bound tools are: get_weather"):
        llm.chat_with_tools([FunctionTool.from_defaults(get_weather)], "Weather?", tool_choice="nope")
    assert llm._engine is None
    assert time.perf_counter() - started < 5
    with pytest.raises(UnsupportedOptionError, match="unknown tool 'nope'"):
        ChatHermes().bind_tools([get_weather], tool_choice="nope")
