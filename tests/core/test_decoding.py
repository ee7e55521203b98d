"""Incremental detokenisation and stop-sequence filtering, checked against whole-text results."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hermes_core._decoding import IncrementalDecoder, StopSequenceFilter, cut_at_stop_sequences


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.mark.parametrize(
    "text",
    [
        'Héllo wörld — 你好 🙂 <tool_call>\n{"name": "f", "arguments": {"x": "ü"}}\n</tool_call><|im_end|>',
        "plain ascii text with  double  spaces\nand lines",
        "🙂🙂🙂 emoji only",
    ],
)
def test_incremental_decoding_equals_whole_decoding(tokenizer, text):
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    decoder = IncrementalDecoder(tokenizer)
    pieces = [decoder.push(i) for i in ids]
    pieces.append(decoder.flush())
    assert "".join(pieces) == tokenizer.decode(
        ids, skip_special_tokens=False, clean_up_tokenization_spaces=False
    )
    assert not any("\ufffd" in p for p in pieces)


def test_special_tool_call_tokens_survive_decoding(tokenizer):
    ids = tokenizer("<tool_call>x</tool_call>", add_special_tokens=False)["input_ids"]
    assert tokenizer.convert_tokens_to_ids("<tool_call>") in ids
    decoder = IncrementalDecoder(tokenizer)
    assert "".join(decoder.push(i) for i in ids) + decoder.flush() == "<tool_call>x</tool_call>"


@given(
    st.text(alphabet="abcXY<>|\n ", max_size=60),
    st.lists(st.text(alphabet="abXY<|>", min_size=1, max_size=4), max_size=3),
    st.randoms(),
)
def test_stop_filter_matches_whole_text_cut_for_any_chunking(text, stops, rnd):
    expected, found = cut_at_stop_sequences(text, stops)
    flt = StopSequenceFilter(stops)
    out, i = [], 0
    while i < len(text):
        j = i + rnd.randint(1, 5)
        out.append(flt.feed(text[i:j]))
        i = j
    out.append(flt.flush())
    assert "".join(out) == expected
    assert flt.stopped == found
    for stop in stops:
        assert stop not in expected


def test_cut_at_earliest_stop():
    assert cut_at_stop_sequences("abc STOP def END", ["END", "STOP"]) == ("abc ", True)
    assert cut_at_stop_sequences("no stop here", ["zzz"]) == ("no stop here", False)
    assert cut_at_stop_sequences("anything", None) == ("anything", False)


def test_filter_holds_back_possible_stop_prefix():
    flt = StopSequenceFilter(["</end>"])
    assert flt.feed("hello </e") == "hello "
    assert flt.feed("xtra") == "</extra"
    assert flt.feed(" bye </end> ignored") == " bye "
    assert flt.stopped and flt.feed("more") == "" and flt.flush() == ""


def test_random_long_texts_round_trip():
    rnd = random.Random(3)
    for _ in range(50):
        text = "".join(rnd.choice("ab<>/ \n") for _ in range(200))
        assert cut_at_stop_sequences(text, ["<<//"])[0] == text.split("<<//")[0]
