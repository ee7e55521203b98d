"""ChatHermes and HermesLLM expose the reasoning a reply opens with exactly as the core does.

Two sources of replies: scripted reasoning replies played through ``replay.ReplayEngine`` (frontend,
detokenizer, parser, validation and both adapters all real; a real reasoning model cannot run here),
and the tiny model itself, prompted as Qwen3 with reasoning on and sampling, which sometimes opens its
reply with a ``<think>`` block. Whole and streamed, the reasoning must be the same everywhere (LangChain:
``additional_kwargs["reasoning_content"]``; LlamaIndex: a ``ThinkingBlock``), never in the content and
never a call.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conformance.conversations import TOOLS, Case
from tests.conformance.drivers import ADAPTERS, Outcome, run_engine
from tests.conformance.replay import ReplayEngine

_ASK = {"role": "user", "content": "What is the weather in Paris?"}
_PARIS = ("get_weather", {"city": "Paris", "unit": "celsius"})
_CALL = (
    '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n</tool_call>'
)

# reply -> (its text, the outcome the core must report)
REPLIES: dict[str, tuple[str, Outcome]] = {
    "think_then_call": (
        f"<think>\nThe user wants Paris. I call get_weather.\n</think>\n{_CALL}",
        Outcome("", [_PARIS], 0, reasoning="The user wants Paris. I call get_weather."),
    ),
    "scratch_pad_then_answer": (
        "<scratch_pad>\nNo tool is needed.\n</scratch_pad>\n\nIt is sunny in Paris.",
        Outcome("It is sunny in Paris.", [], 0, reasoning="No tool is needed."),
    ),
    "call_inside_reasoning": (
        '<think>Maybe <tool_call>{"name": "set_mode", "arguments": {"mode": "fast"}}</tool_call>? No.</think>'
        f"Checking.\n{_CALL}",
        Outcome(
            "Checking.",
            [_PARIS],
            0,
            reasoning='Maybe <tool_call>{"name": "set_mode", "arguments": {"mode": "fast"}}</tool_call>? No.',
        ),
    ),
    "cut_off_while_thinking": (
        '<think>I should call <tool_call>{"name": "get_weather"',
        Outcome("", [], 0, reasoning='I should call <tool_call>{"name": "get_weather"'),
    ),
    "empty_reasoning": ("<think>\n\n</think>\n\nHello.", Outcome("Hello.", [], 0)),
    "no_reasoning": (f"Sure.\n{_CALL}", Outcome("Sure.", [_PARIS], 0)),
}
REPLAYED = Case("replayed", [_ASK], TOOLS, None, max_new_tokens=400)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Any) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def replaying(tokenizer: Any, reply: str) -> Any:
    from hermes_core.frontend import Frontend

    return Frontend(ReplayEngine(tokenizer, reply), constrained=False)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("adapter", sorted(ADAPTERS))
@pytest.mark.parametrize("reply", REPLIES)
def test_adapters_expose_the_reasoning_the_core_parsed(
    tokenizer: Any, reply: str, adapter: str, stream: bool
) -> None:
    text, expected = REPLIES[reply]
    engine = replaying(tokenizer, text)
    assert run_engine(engine, REPLAYED, stream=False) == expected
    assert run_engine(engine, REPLAYED, stream=True) == expected
    assert ADAPTERS[adapter](engine, REPLAYED, stream) == expected


def _blocks(message: Any) -> list[dict[str, Any]]:
    """Content blocks without what differs between runs or between invoke and a chunk sum."""
    return [{k: v for k, v in b.items() if k not in ("id", "index")} for b in message.content_blocks]


@pytest.mark.parametrize("version", ["v0", "v1"])
def test_langchain_reasoning_is_a_reasoning_block_first(tokenizer: Any, version: str) -> None:
    from langchain_core.messages import HumanMessage

    from langchain_hermes import ChatHermes

    text, expected = REPLIES["think_then_call"]
    model = ChatHermes(engine=replaying(tokenizer, text), output_version=version).bind_tools(TOOLS)
    whole = model.invoke([HumanMessage("What is the weather in Paris?")])
    total = None
    for chunk in model.stream([HumanMessage("What is the weather in Paris?")]):
        total = chunk if total is None else total + chunk
    for message in (whole, total):
        blocks = _blocks(message)
        assert blocks[0] == {"type": "reasoning", "reasoning": expected.reasoning}
        assert [b["type"] for b in blocks[1:]] == ["tool_call"]
        assert message.additional_kwargs["reasoning_content"] == expected.reasoning
    assert _blocks(total) == _blocks(whole)


# ---------------------------------------------------------------------- a real model's reasoning
@pytest.fixture(scope="module")
def qwen3_engine(tiny_model_dir: Any) -> Any:
    """The tiny model prompted as Qwen3, which thinks first when sampling picks ``<think>``."""
    from hermes_core import get_engine

    return get_engine(str(tiny_model_dir), prefix_cache=False, variant="qwen3")


def _sampled(seed: int) -> Case:
    return Case(
        f"qwen3_seed{seed}",
        [_ASK],
        TOOLS,
        "required",
        parallel_tool_calls=False,
        max_new_tokens=160,
        temperature=1.0,
        seed=seed,
        reasoning_budget=8,
    )


def test_a_real_models_reasoning_stays_out_of_content_in_every_adapter(qwen3_engine: Any) -> None:
    thinking = []
    for seed in range(6):
        case = _sampled(seed)
        expected = run_engine(qwen3_engine, case, stream=False)
        assert len(expected.calls) == 1, seed  # the forced call comes after any reasoning
        if expected.reasoning is None:
            continue
        thinking.append(seed)
        assert "<think>" not in expected.text and "</think>" not in expected.text
        assert expected.reasoning not in expected.text
        assert run_engine(qwen3_engine, case, stream=True) == expected
        for adapter in sorted(ADAPTERS):
            for stream in (False, True):
                assert ADAPTERS[adapter](qwen3_engine, case, stream) == expected, (seed, adapter, stream)
    assert thinking, "no seed made the tiny model think; the test would check nothing"


# ------------------------------------------------------------------ replaying earlier reasoning
_EARLIER = "Paris is in France; call get_weather."


def _history_langchain() -> list[Any]:
    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

    call = {"name": "get_weather", "args": {"city": "Paris", "unit": "celsius"}, "id": "c1"}
    return [
        HumanMessage("What is the weather in Paris?"),
        AIMessage("", tool_calls=[call], additional_kwargs={"reasoning_content": _EARLIER}),
        ToolMessage("18 degrees", tool_call_id="c1"),
    ]


def _history_llama_index() -> list[Any]:
    from llama_index.core.base.llms.types import ChatMessage, TextBlock, ThinkingBlock, ToolCallBlock

    call = ToolCallBlock(
        tool_call_id="c1", tool_name="get_weather", tool_kwargs={"city": "Paris", "unit": "celsius"}
    )
    return [
        ChatMessage(role="user", content="What is the weather in Paris?"),
        ChatMessage(role="assistant", blocks=[ThinkingBlock(content=_EARLIER), TextBlock(text=""), call]),
        ChatMessage(role="tool", content="18 degrees", additional_kwargs={"tool_call_id": "c1"}),
    ]


@pytest.mark.parametrize("adapter", sorted(ADAPTERS))
def test_earlier_reasoning_is_replayed_only_when_asked(tokenizer: Any, adapter: str) -> None:
    from langchain_hermes import ChatHermes
    from llama_index_hermes import HermesLLM

    frontend = replaying(tokenizer, "It is 18 degrees.")
    for keep in (False, True):
        options = {"keep_reasoning": True} if keep else {}
        if adapter == "langchain":
            answer = ChatHermes(engine=frontend).bind_tools(TOOLS).invoke(_history_langchain(), **options)
            assert answer.content == "It is 18 degrees."
        else:
            answer = HermesLLM(engine=frontend).chat(_history_llama_index(), **options)
            assert answer.message.content == "It is 18 degrees."
        prompt = frontend.engine.prompts[-1]
        replayed = f"<|im_start|>assistant\n<think>\n{_EARLIER}\n</think>\n\n<tool_call>"
        assert (replayed in prompt) is keep
        assert (_EARLIER in prompt) is keep
