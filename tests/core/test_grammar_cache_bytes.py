"""The grammar cache is bounded by bytes as well as by count, so many large tool sets cannot pile up."""

from __future__ import annotations

import pytest

from hermes_core import UnsupportedOptionError
from hermes_core.format.tool_choice import NormalizedToolChoice
from hermes_core.grammar import GrammarCache

REQUIRED = NormalizedToolChoice("required")


def _tools(n: int, tag: str) -> list[dict]:
    return [
        {
            "type": "function",
            "function": {
                "name": f"{tag}_{i}",
                "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]},
            },
        }
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def tokenizer_and_stop(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    return tokenizer, tokenizer.convert_tokens_to_ids("<|im_end|>")


def test_cache_evicts_least_recently_used_grammars_beyond_its_byte_bound(tokenizer_and_stop):
    tokenizer, stop = tokenizer_and_stop
    probe = GrammarCache(tokenizer, len(tokenizer), [stop])
    one = probe.for_tools(_tools(3, "a"), REQUIRED)
    size = one.memory_size_bytes
    assert probe.memory_bytes == size > 0

    cache = GrammarCache(tokenizer, len(tokenizer), [stop], max_bytes=int(size * 2.5))
    grammars = [cache.for_tools(_tools(3, tag), REQUIRED) for tag in "abcde"]
    assert len(cache) == 2  # five compiled, only what fits in 2.5 grammars' bytes is kept
    assert cache.memory_bytes == sum(g.memory_size_bytes for g in grammars[-2:]) <= cache.max_bytes
    assert cache.for_tools(_tools(3, "e"), REQUIRED) is grammars[-1]  # the newest are the ones kept
    assert cache.for_tools(_tools(3, "a"), REQUIRED) is not grammars[0]  # the oldest were dropped


def test_a_grammar_bigger_than_the_bound_is_still_kept_alone(tokenizer_and_stop):
    tokenizer, stop = tokenizer_and_stop
    cache = GrammarCache(tokenizer, len(tokenizer), [stop], max_bytes=1)
    first = cache.for_tools(_tools(2, "a"), REQUIRED)
    assert cache.for_tools(_tools(2, "a"), REQUIRED) is first and len(cache) == 1
    cache.for_tools(_tools(2, "b"), REQUIRED)
    assert len(cache) == 1


def test_byte_bound_comes_from_the_environment_by_default(tokenizer_and_stop, monkeypatch):
    tokenizer, stop = tokenizer_and_stop
    monkeypatch.delenv("HERMES_GRAMMAR_CACHE_MB", raising=False)
    assert GrammarCache(tokenizer, len(tokenizer), [stop]).max_bytes == GrammarCache.DEFAULT_MAX_BYTES
    monkeypatch.setenv("HERMES_GRAMMAR_CACHE_MB", "64")
    assert GrammarCache(tokenizer, len(tokenizer), [stop]).max_bytes == 64 * 1024 * 1024
    monkeypatch.setenv("HERMES_GRAMMAR_CACHE_MB", "big")
    with pytest.raises(UnsupportedOptionError, match="HERMES_GRAMMAR_CACHE_MB must be a size in MiB"):
        GrammarCache(tokenizer, len(tokenizer), [stop])
