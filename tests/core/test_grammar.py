"""Grammar-constrained decoding: grammar shapes, cache, logits processor, and generation that obeys them."""

from __future__ import annotations

import copy
import json
import re
import shutil
from typing import Any

import jsonschema
import pytest
import torch
import xgrammar as xgr
from pydantic import BaseModel, Field

from hermes_core.errors import UnsupportedOptionError
from hermes_core.format.parser import parse_tool_calls
from hermes_core.format.tool_choice import NormalizedToolChoice
from hermes_core.grammar import GrammarCache, GrammarLogitsProcessor

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 12},
                "unit": {"enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
        },
    },
}
STOCK = {
    "type": "function",
    "function": {
        "name": "get_stock_fundamentals",
        "description": "Get fundamental data for a stock symbol.",
        "parameters": {
            "type": "object",
            "properties": {"symbol": {"type": "string"}},
            "required": ["symbol"],
        },
    },
}
SHORT_STOCK = copy.deepcopy(STOCK)
SHORT_STOCK["function"]["parameters"]["properties"]["symbol"]["maxLength"] = 8
COUNTER = {
    "type": "function",
    "function": {
        "name": "count_items",
        "parameters": {
            "type": "object",
            "properties": {
                "n": {"type": "integer", "minimum": 0, "maximum": 99},
                "exact": {"type": "boolean"},
            },
            "required": ["n", "exact"],
        },
    },
}
# Strings are length-bounded so that sampling from a random model (which wanders inside open strings)
# always finishes within max_new_tokens; unbounded strings are covered by the matcher-level tests.
TOOLS = [WEATHER, SHORT_STOCK, COUNTER]
PARAMS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}

REQUIRED = NormalizedToolChoice("required")
AUTO = NormalizedToolChoice("auto")
CALL_BLOCK = r"<tool_call>\n(.*?)\n</tool_call>"
PROMPT = "<|im_start|>user\nWhat is the weather in Paris?<|im_end|>\n<|im_start|>assistant\n"


class Person(BaseModel):
    """A small pydantic model whose schema drives JSON mode."""

    name: str = Field(max_length=16)
    age: int = Field(ge=0, le=120)
    employed: bool


@pytest.fixture(scope="module")
def text_delimiter_dir(tiny_model_dir, tmp_path_factory):
    """A copy of the tiny model whose ``<tool_call>``/``</tool_call>`` are ordinary (non-special) tokens."""
    target = tmp_path_factory.mktemp("tiny-text-delimiters")
    for item in tiny_model_dir.iterdir():
        shutil.copy(item, target / item.name)
    spec = json.loads((target / "tokenizer.json").read_text())
    for added in spec["added_tokens"]:
        if "tool_call" in added["content"]:
            added["special"] = False
    (target / "tokenizer.json").write_text(json.dumps(spec))
    config = json.loads((target / "tokenizer_config.json").read_text())
    config.pop("extra_special_tokens", None)
    config.pop("additional_special_tokens", None)
    (target / "tokenizer_config.json").write_text(json.dumps(config))
    return target


@pytest.fixture(scope="module", params=["special-delimiters", "text-delimiters"])
def tiny(request, tiny_model_dir, text_delimiter_dir):
    """The tiny random ChatML model, its tokenizer and a grammar cache over them.

    Runs twice: ``<tool_call>`` as one special token (like Hermes 2 Pro) and as ordinary text.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory = tiny_model_dir if request.param == "special-delimiters" else text_delimiter_dir
    tokenizer = AutoTokenizer.from_pretrained(directory)
    model = AutoModelForCausalLM.from_pretrained(directory).eval()
    assert (3 in tokenizer.all_special_ids) == (request.param == "special-delimiters")
    stop = tokenizer.convert_tokens_to_ids("<|im_end|>")
    cache = GrammarCache(tokenizer, model.config.vocab_size, [stop])
    return model, tokenizer, cache, stop


def generate(tiny: Any, grammar: Any, *, sample: bool, seed: int = 0, max_new_tokens: int = 400) -> str:
    """Decode a completion of PROMPT (special tokens kept); ``grammar=None`` means unconstrained."""
    model, tokenizer, cache, stop = tiny
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    processors = [cache.logits_processor(grammar)] if grammar is not None else []
    torch.manual_seed(seed)
    with torch.inference_mode():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            logits_processor=processors,
            max_new_tokens=max_new_tokens,
            do_sample=sample,
            top_k=0 if sample else None,
            eos_token_id=stop,
            pad_token_id=tokenizer.pad_token_id,
        )
    return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=False)


def finished(text: str) -> str:
    """The reply without its end-of-turn token; fails when generation was cut off."""
    assert text.endswith("<|im_end|>"), f"generation did not reach end of turn: {text!r}"
    return text[: -len("<|im_end|>")]


def valid_calls(text: str, allowed: set[str]) -> list[dict[str, Any]]:
    """The call objects in ``text`` (only call blocks, newline separated), each checked against its schema."""
    assert re.fullmatch(f"{CALL_BLOCK}(\\n{CALL_BLOCK})*", text, re.S), f"not only call blocks: {text!r}"
    calls = [json.loads(body) for body in re.findall(CALL_BLOCK, text, re.S)]
    for call in calls:
        assert set(call) == {"name", "arguments"}, call
        assert call["name"] in allowed, call
        jsonschema.validate(call["arguments"], PARAMS[call["name"]])
    parsed = parse_tool_calls(text)  # the library's own parser agrees, with nothing left over
    assert not parsed.invalid_tool_calls and parsed.content == "", parsed
    assert [(c.name, c.arguments) for c in parsed.tool_calls] == [(c["name"], c["arguments"]) for c in calls]
    return calls


# ------------------------------------------------------------------ generation under the grammar


@pytest.mark.parametrize("sample,seed", [(False, 0), (True, 1), (True, 2), (True, 3)])
@pytest.mark.parametrize("parallel", [True, False])
def test_required_generates_only_valid_calls(tiny, sample, seed, parallel):
    grammar = tiny[2].for_tools(TOOLS, REQUIRED, parallel)
    calls = valid_calls(finished(generate(tiny, grammar, sample=sample, seed=seed)), set(PARAMS))
    assert len(calls) >= 1
    if not parallel:
        assert len(calls) == 1


@pytest.mark.parametrize("sample,seed", [(False, 0), (True, 4), (True, 5)])
def test_forced_tool_name_is_honoured(tiny, sample, seed):
    grammar = tiny[2].for_tools(TOOLS, NormalizedToolChoice("required", "count_items"), False)
    calls = valid_calls(finished(generate(tiny, grammar, sample=sample, seed=seed)), {"count_items"})
    assert [c["name"] for c in calls] == ["count_items"]


def test_auto_allows_text_but_calls_must_be_valid(tiny):
    """The random model mostly rambles (prose may run to max_new_tokens); any call it opens is valid."""
    grammar = tiny[2].for_tools(TOOLS, AUTO, True)
    for sample, seed in [(False, 0), (True, 6), (True, 7), (True, 8)]:
        text = generate(tiny, grammar, sample=sample, seed=seed, max_new_tokens=100)
        prose, opened, rest = text.partition("<tool_call>")
        assert "</tool_call>" not in prose
        if opened:
            valid_calls(finished(opened + rest), set(PARAMS))


def test_auto_call_after_text_is_schema_valid(tiny):
    """Force the trigger by hand: once ``<tool_call>`` is emitted the rest must be a valid call."""
    model, tokenizer, cache, stop = tiny
    grammar = cache.for_tools(TOOLS, AUTO, True)
    prefix = tokenizer("Sure. <tool_call>", add_special_tokens=False).input_ids
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    processor = cache.logits_processor(grammar)
    for token in prefix:  # feed the forced prefix through the same processor the way generate would
        scores = torch.zeros(1, model.config.vocab_size)
        processor(ids, scores)
        assert scores[0, token] == 0, "the grammar forbids the forced prefix"
        ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    with torch.inference_mode():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            logits_processor=[processor],
            max_new_tokens=120,
            do_sample=False,
            eos_token_id=stop,
            pad_token_id=tokenizer.pad_token_id,
        )
    text = tokenizer.decode(out[0, ids.shape[1] - len(prefix) :], skip_special_tokens=False)
    valid_calls(finished(text)[len("Sure. ") :], set(PARAMS))


@pytest.mark.parametrize("sample,seed", [(False, 0), (True, 9), (True, 10)])
def test_json_mode_matches_pydantic_schema(tiny, sample, seed):
    schema = Person.model_json_schema()
    text = finished(generate(tiny, tiny[2].for_json(schema), sample=sample, seed=seed))
    Person.model_validate_json(text)
    jsonschema.validate(json.loads(text), schema)


@pytest.mark.parametrize("schema", [None, {"type": "json_object"}])
@pytest.mark.parametrize("sample,seed", [(False, 0), (True, 11)])
def test_json_mode_without_schema_gives_an_object(tiny, schema, sample, seed):
    text = finished(generate(tiny, tiny[2].for_json(schema), sample=sample, seed=seed))
    assert isinstance(json.loads(text), dict)


@pytest.mark.parametrize("sample,seed", [(False, 0), (True, 1), (True, 2), (True, 3)])
def test_without_processor_the_random_model_makes_no_valid_call(tiny, sample, seed):
    """Negative control: the grammar, not luck, is what makes the calls above valid."""
    text = generate(tiny, None, sample=sample, seed=seed, max_new_tokens=80)
    with pytest.raises((AssertionError, json.JSONDecodeError, jsonschema.ValidationError)):
        valid_calls(finished(text), set(PARAMS))


def test_processor_works_when_the_prompt_prefix_is_kv_cached(tiny):
    """generate given a cached prefix still calls the processor per step; output must not change."""
    from transformers import DynamicCache
    from transformers.generation.utils import GenerateDecoderOnlyOutput

    # transformers renamed ``past_key_values`` to ``cache``; use whichever this version has
    name = "cache" if "cache" in GenerateDecoderOnlyOutput.__dataclass_fields__ else "past_key_values"
    model, tokenizer, cache, stop = tiny
    grammar = cache.for_tools(TOOLS, REQUIRED, True)
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    kwargs = dict(max_new_tokens=80, do_sample=False, eos_token_id=stop, pad_token_id=tokenizer.pad_token_id)
    with torch.inference_mode():
        plain = model.generate(ids, logits_processor=[cache.logits_processor(grammar)], **kwargs)
        kv = DynamicCache(config=model.config)
        model(ids[:, :-3], use_cache=True, **{name: kv})
        cached = model.generate(
            ids, logits_processor=[cache.logits_processor(grammar)], **{name: kv}, **kwargs
        )
    assert cached.tolist() == plain.tolist()
    valid_calls(finished(tokenizer.decode(plain[0, ids.shape[1] :], skip_special_tokens=False)), set(PARAMS))


# ------------------------------------------------------------------ special tokens


def test_special_tool_call_token_is_usable_and_decodes_to_its_text(tiny):
    _, tokenizer, cache, _ = tiny
    open_id, close_id = tokenizer.convert_tokens_to_ids(["<tool_call>", "</tool_call>"])
    assert cache.delimiters.single_tokens == (open_id in tokenizer.all_special_ids)
    matcher = xgr.GrammarMatcher(cache.for_tools(TOOLS, REQUIRED, True))
    assert matcher.accept_token(open_id)
    body = tokenizer(
        '\n{"name": "get_stock_fundamentals", "arguments": {"symbol": "TSLA"}}\n', add_special_tokens=False
    )
    assert all(matcher.accept_token(t) for t in body.input_ids)
    assert matcher.accept_token(close_id)
    assert matcher.is_completed()
    text = tokenizer.decode([open_id, *body.input_ids, close_id], skip_special_tokens=False)
    assert (
        text
        == '<tool_call>\n{"name": "get_stock_fundamentals", "arguments": {"symbol": "TSLA"}}\n</tool_call>'
    )


def test_control_tokens_are_masked_inside_constrained_output(tiny):
    _, tokenizer, cache, _ = tiny
    im_start, endoftext = tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|endoftext|>"])
    for grammar, prefix in [
        (
            cache.for_tools(TOOLS, REQUIRED, True),
            cache.delimiters.open + '\n{"name": "get_weather", "arguments": {"city": "',
        ),
        (cache.for_json(None), '{"a": "'),
    ]:
        matcher = xgr.GrammarMatcher(grammar)
        assert matcher.accept_string(prefix)
        mask = xgr.allocate_token_bitmask(1, cache.vocab_size)
        matcher.fill_next_token_bitmask(mask)
        scores = torch.zeros(1, cache.vocab_size)
        xgr.apply_token_bitmask_inplace(scores, mask)
        letter = tokenizer.convert_tokens_to_ids("a")
        assert scores[0, letter] == 0
        assert scores[0, im_start] == float("-inf") and scores[0, endoftext] == float("-inf")


# ------------------------------------------------------------------ grammar shapes (matcher level)


def accepts(grammar: Any, text: str) -> bool:
    """Whether ``text`` is a complete reply under ``grammar``."""
    matcher = xgr.GrammarMatcher(grammar)
    return matcher.accept_string(text) and matcher.is_completed()


def call(tiny: Any, body: str) -> str:
    """A call block as the grammar spells it (text tags, or the sentinels of single-token tags)."""
    delimiters = tiny[2].delimiters
    return f"{delimiters.open}\n{body}\n{delimiters.close}"


NAME_FIRST = '{"name": "get_stock_fundamentals", "arguments": {"symbol": "TSLA"}}'
ARGS_FIRST = '{"arguments": {"symbol": "TSLA"}, "name": "get_stock_fundamentals"}'


def test_required_accepts_both_key_orders_and_only_compact_schema_valid_json(tiny):
    grammar = tiny[2].for_tools(TOOLS, REQUIRED, True)
    name_first, args_first = call(tiny, NAME_FIRST), call(tiny, ARGS_FIRST)
    assert accepts(grammar, name_first)
    assert accepts(grammar, args_first)
    assert accepts(grammar, name_first + "\n" + args_first)
    assert not accepts(grammar, call(tiny, '{"name":"get_stock_fundamentals","arguments":{"symbol":"TSLA"}}'))
    assert not accepts(grammar, call(tiny, NAME_FIRST.replace('"TSLA"', '"TSLA", "x": 1')))
    assert not accepts(grammar, call(tiny, '{"name": "get_stock_fundamentals", "arguments": {}}'))
    assert not accepts(grammar, call(tiny, NAME_FIRST.replace("get_stock_fundamentals", "no_such_tool")))
    assert not accepts(grammar, call(tiny, NAME_FIRST[:-1] + ', "extra": 1}'))
    assert not accepts(grammar, "Sure! " + name_first)
    assert not accepts(grammar, name_first + "\nDone.")
    assert not accepts(grammar, "")


def test_delimiter_tokens_cannot_hide_inside_arguments(tiny):
    """A single-token ``</tool_call>`` inside a JSON string would end the call early for the parser."""
    _, tokenizer, cache, _ = tiny
    close_id = tokenizer.convert_tokens_to_ids("</tool_call>")
    matcher = xgr.GrammarMatcher(cache.for_tools([STOCK], REQUIRED, True))
    assert matcher.accept_string(
        cache.delimiters.open + '\n{"name": "get_stock_fundamentals", "arguments": {"symbol": "T'
    )
    # text-spelled tags are ordinary characters in a string (a known, documented residual risk)
    assert matcher.accept_token(close_id) is not cache.delimiters.single_tokens


@pytest.mark.parametrize("grammar_of", ["bounded tool argument", "bounded JSON-mode field"])
def test_bounded_strings_reject_raw_control_characters(tiny, grammar_of):
    """xgrammar 0.2.8 lets maxLength strings hold raw U+0000-U+001F; the grammar module must forbid them."""
    cache = tiny[2]
    if grammar_of == "bounded tool argument":
        grammar = cache.for_tools([SHORT_STOCK], REQUIRED, True)
        prefix = cache.delimiters.open + '\n{"name": "get_stock_fundamentals", "arguments": {"symbol": "'
    else:
        grammar = cache.for_json(Person.model_json_schema())
        prefix = '{"name": "'
    for bad in ["\x01", "\x02", "\x03", "\x1f"]:
        matcher = xgr.GrammarMatcher(grammar)
        assert matcher.accept_string(prefix + "ab")
        assert not matcher.accept_string(bad), repr(bad)
    matcher = xgr.GrammarMatcher(grammar)
    assert matcher.accept_string(prefix + 'ab"')  # ordinary characters still are


def test_parallel_off_allows_exactly_one_call(tiny):
    grammar = tiny[2].for_tools(TOOLS, REQUIRED, False)
    assert accepts(grammar, call(tiny, NAME_FIRST))
    matcher = xgr.GrammarMatcher(grammar)
    assert matcher.accept_string(call(tiny, NAME_FIRST))
    assert not matcher.accept_string("\n")


def test_forced_name_restricts_to_that_tool(tiny):
    grammar = tiny[2].for_tools(TOOLS, NormalizedToolChoice("required", "get_weather"), True)
    weather = '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}'
    assert accepts(grammar, call(tiny, weather))
    assert not accepts(grammar, call(tiny, NAME_FIRST))


def test_auto_shapes(tiny):
    cache = tiny[2]
    grammar = cache.for_tools(TOOLS, AUTO, True)
    name_first, args_first = call(tiny, NAME_FIRST), call(tiny, ARGS_FIRST)
    assert accepts(grammar, "")
    assert accepts(grammar, "Just text, no tools needed.")
    assert accepts(grammar, "Let me check.\n" + name_first)
    assert accepts(grammar, name_first + "\n" + args_first)
    assert not accepts(grammar, name_first + "\nAnd some text after.")
    assert not accepts(grammar, call(tiny, NAME_FIRST.replace("symbol", "ticker")))
    assert not accepts(grammar, "text </tool_call>")
    single = cache.for_tools(TOOLS, AUTO, False)
    assert accepts(single, "Let me check.\n" + name_first)
    assert not accepts(single, name_first + "\n" + args_first)


def test_tools_or_answer_shapes(tiny):
    """auto tool choice with a response schema: calls, or one schema-valid JSON answer, never prose."""
    cache = tiny[2]
    grammar = cache.for_tools_or_answer(TOOLS, Person.model_json_schema(), True)
    name_first, args_first = call(tiny, NAME_FIRST), call(tiny, ARGS_FIRST)
    assert accepts(grammar, '{"name": "Ada", "age": 36, "employed": true}')
    assert accepts(grammar, name_first)
    assert accepts(grammar, name_first + "\n" + args_first)
    assert not accepts(grammar, "")
    assert not accepts(grammar, "Just text, no tools needed.")
    assert not accepts(grammar, "Let me check.\n" + name_first)
    assert not accepts(grammar, '{"name": "Ada", "age": 360, "employed": true}')
    assert not accepts(grammar, '{"name": "Ada", "age": 36}')
    assert not accepts(grammar, '{"name": "Ada", "age": 36, "employed": true}\n' + name_first)
    assert not accepts(grammar, name_first + '\n{"name": "Ada", "age": 36, "employed": true}')
    single = cache.for_tools_or_answer(TOOLS, Person.model_json_schema(), False)
    assert accepts(single, name_first) and not accepts(single, name_first + "\n" + args_first)
    any_object = cache.for_tools_or_answer(TOOLS, {"type": "json_object"}, True)
    assert accepts(any_object, '{"anything": [1, 2]}') and not accepts(any_object, "[1, 2]")


def test_none_and_toolless_auto_are_unconstrained(tiny):
    cache = tiny[2]
    assert cache.for_tools(TOOLS, NormalizedToolChoice("none"), True) is None
    assert cache.for_tools([], AUTO, True) is None


def test_tool_without_parameters_takes_an_empty_object(tiny):
    grammar = tiny[2].for_tools([{"type": "function", "function": {"name": "ping"}}], REQUIRED, True)
    assert accepts(grammar, call(tiny, '{"name": "ping", "arguments": {}}'))
    assert not accepts(grammar, call(tiny, '{"name": "ping", "arguments": {"a": 1}}'))


def test_json_mode_shapes(tiny):
    cache = tiny[2]
    anything = cache.for_json(None)
    assert accepts(anything, '{"a": [1, 2], "b": {"c": null}}')
    assert not accepts(anything, "[1, 2]")
    assert not accepts(anything, '"text"')
    assert not accepts(anything, '{"a": 1} trailing')
    person = cache.for_json(Person.model_json_schema())
    assert accepts(person, '{"name": "Ada", "age": 36, "employed": true}')
    assert not accepts(person, '{"name": "Ada", "age": 360, "employed": true}')
    assert not accepts(person, '{"name": "Ada", "age": 36}')


# ------------------------------------------------------------------ cache, processor and errors


def test_grammars_are_cached_per_key_and_lru_bounded(tiny):
    _, tokenizer, _, stop = tiny
    cache = GrammarCache(tokenizer, len(tokenizer), [stop], max_entries=2)
    first = cache.for_tools(TOOLS, REQUIRED, True)
    assert cache.for_tools([dict(t) for t in TOOLS], REQUIRED, True) is first
    assert cache.for_tools(TOOLS, REQUIRED, False) is not first
    assert cache.for_json({"type": "object", "properties": {"a": {"type": "integer"}}}) is cache.for_json(
        {"properties": {"a": {"type": "integer"}}, "type": "object"}
    )
    assert len(cache) == 2
    assert cache.for_tools(TOOLS, REQUIRED, True) is not first  # evicted, so recompiled


def test_processor_masks_padding_ids_beyond_the_tokenizer(tiny):
    _, tokenizer, _, stop = tiny
    padded = len(tokenizer) + 60
    cache = GrammarCache(tokenizer, padded, [stop])
    processor = cache.logits_processor(cache.for_json(None))
    assert isinstance(processor, GrammarLogitsProcessor)
    scores = processor(torch.tensor([[1, 2]]), torch.zeros(1, padded))
    brace = tokenizer.convert_tokens_to_ids("{")
    assert scores[0, brace] == 0
    assert torch.isinf(scores[0, len(tokenizer) :]).all()
    assert torch.isinf(scores).sum() == padded - 1 - sum(  # only "{"-starting tokens survive
        1 for t in range(len(tokenizer)) if tokenizer.decode([t]).startswith("{") and t != brace
    )


def test_processor_rejects_a_token_the_grammar_forbids(tiny):
    _, tokenizer, cache, _ = tiny
    processor = cache.logits_processor(cache.for_json(None))
    processor(torch.tensor([[1]]), torch.zeros(1, cache.vocab_size))
    bad = tokenizer.convert_tokens_to_ids("a")
    with pytest.raises(RuntimeError, match="violates the grammar"):
        processor(torch.tensor([[1, bad]]), torch.zeros(1, cache.vocab_size))


def test_unknown_forced_tool_and_bad_schemas_raise_naming_the_fix(tiny):
    cache = tiny[2]
    with pytest.raises(UnsupportedOptionError, match=r"nope.*get_weather"):
        cache.for_tools(TOOLS, NormalizedToolChoice("required", "nope"), True)
    broken = {"type": "function", "function": {"name": "broken", "parameters": {"type": "strang"}}}
    with pytest.raises(UnsupportedOptionError, match=r"schema of tool 'broken'.*Unsupported type \"strang\""):
        cache.for_tools([STOCK, broken], REQUIRED, True)
    with pytest.raises(UnsupportedOptionError, match="JSON-mode schema"):
        cache.for_json({"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}})
    with pytest.raises(UnsupportedOptionError, match="at least one tool"):
        cache.for_tools([], REQUIRED, True)
    with pytest.raises(UnsupportedOptionError, match="function name"):
        cache.for_tools([{"type": "function", "function": {}}], REQUIRED, True)


# ------------------------------------------------------------------ embedded SmolLM2 (slow)


@pytest.fixture(scope="module")
def smol():
    """The embedded SmolLM2-135M-Instruct (``<tool_call>`` is plain text there) and a grammar cache."""
    from hermes_core.engines.local.loading import load_model

    loaded = load_model(progress=False)
    stop = loaded.stop_token_ids
    return (
        loaded.model,
        loaded.tokenizer,
        GrammarCache(loaded.tokenizer, loaded.model.config.vocab_size, stop),
        stop,
    )


def smol_generate(smol: Any, messages: list[dict[str, str]], grammar: Any, max_new_tokens: int) -> str:
    """Greedy constrained completion of a ChatML conversation on SmolLM2."""
    model, tokenizer, cache, stop = smol
    prompt = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    ids = tokenizer(prompt + "<|im_start|>assistant\n", return_tensors="pt").input_ids
    with torch.inference_mode():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            logits_processor=[cache.logits_processor(grammar)],
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=stop,
            pad_token_id=tokenizer.pad_token_id,
        )
    return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=False)


@pytest.mark.slow
def test_smollm2_forced_call_is_valid(smol):
    tools = [STOCK, WEATHER]
    system = (
        "You are a function calling AI model. You are provided with function signatures within <tools></tools> "
        f"XML tags.\n<tools>\n{json.dumps(tools)}\n</tools>\nFor each function call return a json object with "
        'function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{"name": '
        '<function-name>, "arguments": <args-dict>}\n</tool_call>'
    )
    messages = [
        {"role": "system", "content": system},
        {"role": "user", "content": "Fetch the stock fundamentals data for Tesla (TSLA)"},
    ]
    grammar = smol[2].for_tools(tools, NormalizedToolChoice("required", "get_stock_fundamentals"), False)
    text = finished(smol_generate(smol, messages, grammar, max_new_tokens=48))
    (body,) = re.findall(CALL_BLOCK, text, re.S)
    parsed = json.loads(body)
    assert parsed["name"] == "get_stock_fundamentals"
    jsonschema.validate(parsed["arguments"], STOCK["function"]["parameters"])
    (tool_call,) = parse_tool_calls(text).tool_calls
    assert (tool_call.name, tool_call.arguments) == (parsed["name"], parsed["arguments"])


@pytest.mark.slow
def test_smollm2_json_mode_matches_pydantic_schema(smol):
    class City(BaseModel):
        name: str
        country: str

    schema = City.model_json_schema()
    messages = [
        {"role": "user", "content": f"Reply with JSON matching {json.dumps(schema)}: the capital of France."}
    ]
    text = finished(smol_generate(smol, messages, smol[2].for_json(schema), max_new_tokens=40))
    City.model_validate_json(text)


def test_constraints_keep_the_source_they_were_compiled_from(tiny):
    from xgrammar import structural_tag as st

    from hermes_core.grammar import json_constraint, tool_call_constraint

    cache = tiny[2]
    tools = cache.tools_constraint(TOOLS, REQUIRED, True)
    assert tools.kind == "structural_tag" and tools.compiled is cache.for_tools(TOOLS, REQUIRED, True)
    recompiled = cache.compiler.compile_structural_tag(st.StructuralTag.model_validate(tools.source))
    good = call(tiny, '{"name": "get_weather", "arguments": {"city": "Lima", "unit": "celsius"}}')
    bad = call(tiny, '{"name": "get_weather", "arguments": {"city": "Lima"}}')
    assert accepts(recompiled, good) and not accepts(recompiled, bad)
    json_mode = cache.json_constraint(None)
    assert (json_mode.kind, json_mode.source) == ("json_schema", {"type": "object"})
    assert json_mode.compiled is cache.for_json({"type": "json_object"})
    # Source only (an engine that compiles nothing): call tags spelled as text, nothing compiled.
    wire = tool_call_constraint(TOOLS, REQUIRED, True)
    assert wire.compiled is None and '"begin":"<tool_call>\\n"' in json.dumps(
        wire.source, separators=(",", ":")
    )
    assert tool_call_constraint(TOOLS, NormalizedToolChoice("none"), True) is None
    assert json_constraint(None).source == {"type": "object"}
