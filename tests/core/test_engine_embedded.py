"""Engine tests on the embedded SmolLM2-135M (slow: real weights, run in CI)."""

from __future__ import annotations

import json

import jsonschema
import pytest
from pydantic import BaseModel

from hermes_core import Message, get_engine, load_engine

pytestmark = pytest.mark.slow

# The seed's example tool (Hermes 2 Θ model card), with its parameters schema.
STOCK_TOOL = {
    "type": "function",
    "function": {
        "name": "get_stock_fundamentals",
        "description": "Get fundamental data for a given stock symbol.",
        "parameters": {
            "type": "object",
            "properties": {"symbol": {"type": "string", "description": "The stock symbol."}},
            "required": ["symbol"],
        },
    },
}
ASK_TSLA = [Message("user", "Fetch the stock fundamentals data for Tesla (TSLA)")]


class City(BaseModel):
    """A city and the country it is in."""

    name: str
    country: str
    is_capital: bool


@pytest.fixture(scope="module")
def engine():
    return get_engine(max_new_tokens=64)


def test_forced_tool_call_on_the_seed_example_is_valid(engine):
    result = engine.generate(ASK_TSLA, tools=[STOCK_TOOL], tool_choice="required", parallel_tool_calls=False)
    assert not result.invalid_tool_calls, result.raw_text
    assert [c.name for c in result.tool_calls] == ["get_stock_fundamentals"]
    jsonschema.validate(result.tool_calls[0].arguments, STOCK_TOOL["function"]["parameters"])
    assert result.finish_reason == "tool_calls"


def test_parallel_calls_are_each_schema_valid(engine):
    result = engine.generate(ASK_TSLA, tools=[STOCK_TOOL], tool_choice="required", max_new_tokens=40)
    assert result.tool_calls and {c.name for c in result.tool_calls} == {"get_stock_fundamentals"}
    for call in result.tool_calls:
        jsonschema.validate(call.arguments, STOCK_TOOL["function"]["parameters"])
    assert result.tool_calls[0].id.startswith("call_")


def test_auto_choice_gives_text_or_valid_calls(engine):
    result = engine.generate(ASK_TSLA, tools=[STOCK_TOOL], tool_choice="auto")
    for call in result.tool_calls:
        jsonschema.validate(call.arguments, STOCK_TOOL["function"]["parameters"])
    assert result.content or result.tool_calls or result.finish_reason == "length"


def test_json_mode_is_valid_for_a_pydantic_schema(engine):
    result = engine.generate(
        [Message("user", "Describe Paris as JSON.")], response_format=City, max_new_tokens=60
    )
    assert result.finish_reason == "stop", result.content
    City.model_validate(json.loads(result.content))


def test_stream_equals_generate_with_the_same_seed(engine):
    options = dict(tools=[STOCK_TOOL], tool_choice="required", temperature=0.7, seed=11)
    whole = engine.generate(ASK_TSLA, **options)
    events = list(engine.stream(ASK_TSLA, **options))
    streamed = events[-1].result
    assert [(c.name, c.arguments) for c in streamed.tool_calls] == [
        (c.name, c.arguments) for c in whole.tool_calls
    ]
    assert streamed.raw_text == whole.raw_text
    assert any(e.type == "tool_call_delta" for e in events)


def test_stopping_a_stream_early_stops_generation(engine):
    stream = engine.stream([Message("user", "Write a long story about a dragon.")], max_new_tokens=200)
    for event in stream:
        if event.type == "text" and event.text.strip():
            break
    stream.close()
    assert engine.stats.last_completion_tokens <= 10


@pytest.mark.parametrize(
    "load",
    [{"torch_dtype": "float32"}, {"torch_dtype": "bfloat16"}, {"quantization": "int4"}],
    ids=["float32", "bfloat16", "int4"],
)
def test_cached_prefix_output_equals_cold_output_token_for_token(load):
    engine = get_engine(max_new_tokens=64, **load)
    engine.prefix_cache.clear()
    cold_engine = load_engine(prefix_cache=False, max_new_tokens=64, **load)
    system = Message("system", "You are a careful financial assistant. Always use the tools. " * 10)
    first = [system, *ASK_TSLA]
    call = engine.generate(first, tools=[STOCK_TOOL], tool_choice="required")
    turn2 = [
        *first,
        Message("assistant", "", tool_calls=call.tool_calls),
        Message("tool", {"symbol": "TSLA", "pe_ratio": 49.6}, tool_call_id=call.tool_calls[0].id),
    ]
    warm = engine.generate(turn2, tools=[STOCK_TOOL])
    assert engine.stats.last_reused_prefix_tokens > 200
    cold = cold_engine.generate(turn2, tools=[STOCK_TOOL])
    assert cold_engine.stats.last_reused_prefix_tokens == 0
    assert warm.raw_text == cold.raw_text
    assert warm.usage == cold.usage


@pytest.mark.parametrize("quantization", ["4bit", "8bit"])
def test_quantized_engines_load_and_make_valid_calls(quantization):
    import bitsandbytes as bnb

    engine = get_engine(quantization=quantization, max_new_tokens=48)
    layer = bnb.nn.Linear4bit if quantization == "4bit" else bnb.nn.Linear8bitLt
    assert any(isinstance(m, layer) for m in engine.model.modules())
    result = engine.generate(
        ASK_TSLA, tools=[STOCK_TOOL], tool_choice="get_stock_fundamentals", parallel_tool_calls=False
    )
    assert result.tool_calls and {c.name for c in result.tool_calls} == {"get_stock_fundamentals"}, (
        result.raw_text
    )
    for call in result.tool_calls:
        jsonschema.validate(call.arguments, STOCK_TOOL["function"]["parameters"])


def test_int4_engine_makes_a_valid_forced_call():
    engine = get_engine(quantization="int4", max_new_tokens=48)
    assert engine.loaded.quantization == "int4" and engine.loaded.lean_decode_layers == 30
    result = engine.generate(
        ASK_TSLA, tools=[STOCK_TOOL], tool_choice="get_stock_fundamentals", parallel_tool_calls=False
    )
    assert [c.name for c in result.tool_calls] == ["get_stock_fundamentals"], result.raw_text
    jsonschema.validate(result.tool_calls[0].arguments, STOCK_TOOL["function"]["parameters"])


def test_direct_4bit_kernel_gives_the_same_tool_call_as_bitsandbytes_own_path():
    """The default NF4 engine (direct CPU kernel where the CPU has AVX512-BF16) equals bitsandbytes' path token for token."""
    from bitsandbytes.functional import has_avx512bf16

    direct = get_engine(quantization="4bit", max_new_tokens=48)
    own = get_engine(quantization="4bit", max_new_tokens=48, direct_4bit_kernel=False)
    assert direct.loaded.direct_4bit_layers == (210 if has_avx512bf16() else 0)
    assert own.loaded.direct_4bit_layers == 0
    for messages, options in (
        (ASK_TSLA, {"tools": [STOCK_TOOL], "tool_choice": "required"}),
        ([Message("user", "Tell me a short story about a robot.")], {"max_new_tokens": 40}),
    ):
        a, b = direct.generate(messages, **options), own.generate(messages, **options)
        assert a.raw_text == b.raw_text and a.usage == b.usage


@pytest.mark.parametrize(
    "load",
    [{"quantization": "4bit"}, {"torch_dtype": "bfloat16"}, {"quantization": "int4"}],
    ids=["nf4", "bf16", "int4"],
)
def test_exact_cpu_speedups_keep_the_tokens_of_the_plain_path(load):
    """Direct 4-bit kernel, prepacked bf16 linears and the lean Llama step change speed, not tokens."""
    fast = get_engine(max_new_tokens=48, **load)
    plain = get_engine(
        max_new_tokens=48, direct_4bit_kernel=False, prepack_linear=False, lean_decode=False, **load
    )
    assert fast.loaded.lean_decode_layers == 30 and plain.loaded.lean_decode_layers == 0
    from hermes_core.engines.local.cpu.prepacked_linear import prepacking_available

    assert plain.loaded.prepacked_linears == 0 and (
        fast.loaded.prepacked_linears > 0 or not prepacking_available()
    )
    for messages, options in (
        (ASK_TSLA, {"tools": [STOCK_TOOL], "tool_choice": "required"}),
        ([Message("user", "Tell me a short story about a robot.")], {"max_new_tokens": 40}),
    ):
        a, b = fast.generate(messages, **options), plain.generate(messages, **options)
        assert a.raw_text == b.raw_text and a.usage == b.usage
