"""Room to think: a forced call, JSON mode or free reply may open with a reasoning block within its token budget.

The grammar tests walk the grammar with an adversary that always wants to keep thinking (it picks the
token ``a`` whenever the grammar allows it, else the allowed token a fixed random score likes best), so
the only thing that ends its reasoning is the budget. The frontend tests check what a request is built
with: the variant's prompt and the reasoning block in the constraint.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
import xgrammar as xgr
from transformers import AutoTokenizer

from hermes_core import UnsupportedOptionError, load_engine
from hermes_core.format.parser import parse_tool_calls
from hermes_core.format.tool_choice import NormalizedToolChoice
from hermes_core.grammar import GrammarCache, Reasoning, json_constraint, tool_call_constraint

UNIT = {
    "type": "function",
    "function": {
        "name": "set_unit",
        "description": "Set the unit.",
        "parameters": {
            "type": "object",
            "properties": {"unit": {"enum": ["celsius", "kelvin"]}, "loud": {"type": "boolean"}},
            "required": ["unit", "loud"],
        },
    },
}
SCHEMA = {
    "type": "object",
    "properties": {"ok": {"type": "boolean"}, "unit": {"enum": ["celsius", "kelvin"]}},
    "required": ["ok", "unit"],
}
THINK = Reasoning("<think>", "</think>", 7)
SCRATCH = Reasoning("<scratch_pad>", "</scratch_pad>", 5)
ASK = [{"role": "user", "content": "Use kelvin."}]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Any) -> Any:
    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def grammars(tokenizer: Any) -> GrammarCache:
    return GrammarCache(tokenizer, len(tokenizer), [tokenizer.convert_tokens_to_ids("<|im_end|>")])


def ids(tokenizer: Any, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def allowed(matcher: xgr.GrammarMatcher, size: int) -> list[int]:
    mask = xgr.allocate_token_bitmask(1, size)
    matcher.fill_next_token_bitmask(mask)
    bits = mask[0]
    return [i for i in range(size) if (int(bits[i // 32]) >> (i % 32)) & 1]


def walk(
    tokenizer: Any, compiled: Any, opening: str, *, steps: int = 300, finish: bool = True
) -> tuple[int, str]:
    """Open with ``opening``, think as long as allowed, then (``finish``) complete the reply: (tokens
    thought, output text)."""
    size = len(tokenizer)
    stop = tokenizer.convert_tokens_to_ids("<|im_end|>")
    wants = ids(tokenizer, "a")[0]
    scores = torch.rand(size, generator=torch.Generator().manual_seed(0))
    matcher = xgr.GrammarMatcher(compiled)
    out = ids(tokenizer, opening)
    assert all(matcher.accept_token(t) for t in out)
    thought = 0
    while allowed(matcher, size) and wants in allowed(matcher, size) and thought < steps:
        assert matcher.accept_token(wants)
        out.append(wants)
        thought += 1
    for _ in range(steps if finish else 0):
        if matcher.is_terminated():
            break
        options = allowed(matcher, size)
        token = max(options, key=lambda t: float(scores[t]))
        assert matcher.accept_token(token)
        if token == stop:
            break
        out.append(token)
    assert matcher.is_terminated() or not finish
    return thought, tokenizer.decode(out, skip_special_tokens=False)


def accepts(tokenizer: Any, compiled: Any, text: str) -> bool:
    matcher = xgr.GrammarMatcher(compiled)
    stop = tokenizer.convert_tokens_to_ids("<|im_end|>")
    return all(matcher.accept_token(t) for t in [*ids(tokenizer, text), stop]) and matcher.is_terminated()


CALL = '<tool_call>\n{"name": "set_unit", "arguments": {"unit": "kelvin", "loud": false}}\n</tool_call>'


@pytest.mark.parametrize(
    "choice", [NormalizedToolChoice("required"), NormalizedToolChoice("required", "set_unit")]
)
@pytest.mark.parametrize("reasoning", [THINK, SCRATCH], ids=["think", "scratch_pad"])
def test_forced_call_may_think_first_and_the_budget_ends_the_thinking(
    tokenizer: Any, grammars: GrammarCache, choice: NormalizedToolChoice, reasoning: Reasoning
) -> None:
    compiled = grammars.for_tools([UNIT], choice, False, reasoning)
    thought, text = walk(tokenizer, compiled, reasoning.open)
    assert thought == reasoning.budget  # it wanted more; the grammar allowed exactly the budget
    assert text.startswith(reasoning.open + "a" * reasoning.budget + reasoning.close)
    parsed = parse_tool_calls(text[text.index(reasoning.close) + len(reasoning.close) :])
    assert [c.name for c in parsed.tool_calls] == ["set_unit"]
    # the block is optional, must come first, and must be the family's own tag
    assert accepts(tokenizer, compiled, CALL)
    assert accepts(tokenizer, compiled, f"{reasoning.open}plan{reasoning.close}\n{CALL}")
    assert not accepts(tokenizer, compiled, f"plan {CALL}")
    other = SCRATCH if reasoning is THINK else THINK
    assert not accepts(tokenizer, compiled, f"{other.open}plan{other.close}\n{CALL}")


def test_json_mode_may_think_first_within_the_budget(tokenizer: Any, grammars: GrammarCache) -> None:
    compiled = grammars.for_json(SCHEMA, THINK)
    thought, text = walk(tokenizer, compiled, "<think>")
    assert thought == THINK.budget
    value = json.loads(text.split("</think>", 1)[1])
    assert set(value) == {"ok", "unit"}
    assert accepts(tokenizer, compiled, '{"ok": true, "unit": "kelvin"}')
    assert accepts(tokenizer, compiled, '<think>\nok\n</think>\n\n{"ok": true, "unit": "kelvin"}')
    assert not accepts(tokenizer, compiled, 'sure {"ok": true, "unit": "kelvin"}')


def test_without_reasoning_forced_replies_cannot_think(tokenizer: Any, grammars: GrammarCache) -> None:
    calls = grammars.for_tools([UNIT], NormalizedToolChoice("required"), False)
    assert not accepts(tokenizer, calls, f"<think>plan</think>\n{CALL}")
    assert not accepts(tokenizer, grammars.for_json(SCHEMA), '<think>x</think>{"ok": true, "unit": "kelvin"}')


def test_free_and_auto_replies_cannot_dodge_the_budget(tokenizer: Any, grammars: GrammarCache) -> None:
    """Where text is free, a second opening tag is refused, so thinking happens in the budgeted block only."""
    free = grammars.reasoning_constraint(THINK).compiled
    thought, _ = walk(tokenizer, free, "<think>", finish=False)
    assert thought == THINK.budget
    assert accepts(tokenizer, free, "Hello there.")
    assert accepts(tokenizer, free, "<think>hm</think>\nHello.")
    assert not accepts(tokenizer, free, "Hello <think>more</think>")
    auto = grammars.for_tools([UNIT], NormalizedToolChoice("auto"), True, THINK)
    assert accepts(tokenizer, auto, f"<think>hm</think>\nSure.\n{CALL}")
    assert not accepts(tokenizer, auto, f"Sure. <think>hm</think>\n{CALL}")


def test_source_only_constraints_carry_the_reasoning_block(tokenizer: Any, grammars: GrammarCache) -> None:
    """An engine across a wire gets the same shape: its source compiles to a grammar that behaves the same."""
    source = json_constraint(SCHEMA, THINK)
    assert source.kind == "structural_tag"
    assert '"max_tokens": 7' in json.dumps(source.source) and '"begin": "<think>"' in json.dumps(
        source.source
    )
    compiled = grammars.compiler.compile_structural_tag(json.dumps(source.source))
    assert accepts(tokenizer, compiled, '<think>x</think>{"ok": false, "unit": "celsius"}')
    calls = tool_call_constraint([UNIT], NormalizedToolChoice("required"), False, reasoning=SCRATCH)
    assert calls is not None and '"begin": "<scratch_pad>"' in json.dumps(calls.source)
    assert json_constraint(SCHEMA).kind == "json_schema"  # unchanged without reasoning


# ---------------------------------------------------------------------------------- frontend
@pytest.fixture(scope="module")
def qwen3(tiny_model_dir: Any) -> Any:
    """The tiny ChatML model prompted as Qwen3 (which reasons by default)."""
    return load_engine(str(tiny_model_dir), max_new_tokens=40, variant="qwen3")


def think_block(constraint: Any) -> dict[str, Any] | None:
    """The reasoning tag of a constraint's source, if it has one."""
    found: list[dict[str, Any]] = []

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "tag" and node.get("begin") in ("<think>", "<scratch_pad>"):
                found.append(node)
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(constraint.source if constraint is not None else None)
    return found[0] if found else None


def test_frontend_builds_prompt_and_grammar_for_the_variants_reasoning(qwen3: Any) -> None:
    assert qwen3.variant.name == "qwen3"
    thinking = qwen3._prepare(ASK, tools=[UNIT], tool_choice="required")
    block = think_block(thinking.request.constraint)
    assert block is not None and block["content"]["max_tokens"] == 20  # half of max_new_tokens by default
    text = qwen3.tokenizer.decode(thinking.prompt_ids)
    assert text.endswith("<|im_start|>assistant\n") and "# Tools" in text

    quiet = qwen3._prepare(ASK, tools=[UNIT], tool_choice="required", reasoning=False)
    assert think_block(quiet.request.constraint) is None
    assert qwen3.tokenizer.decode(quiet.prompt_ids).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")

    bounded = qwen3._prepare(ASK, response_format=SCHEMA, reasoning_budget=12)
    assert think_block(bounded.request.constraint)["content"]["max_tokens"] == 12
    free = qwen3._prepare(ASK)  # no tools: the reasoning block is still bounded
    assert think_block(free.request.constraint)["content"]["max_tokens"] == 20
    assert qwen3._prepare(ASK, constrained=False).request.constraint is None


def test_frontend_generates_valid_forced_calls_with_reasoning_on(qwen3: Any) -> None:
    """The random model, sampling, sometimes thinks first; the call after its reasoning is always valid."""
    thought = 0
    for seed in range(4):
        result = qwen3.generate(
            ASK,
            tools=[UNIT],
            tool_choice="required",
            temperature=1.0,
            seed=seed,
            max_new_tokens=200,
            reasoning_budget=8,
        )
        assert [c.name for c in result.tool_calls] == ["set_unit"] and not result.invalid_tool_calls, seed
        thought += result.raw_text.startswith("<think>")
    assert thought  # the grammar let it think, and then it still called the tool


def test_reasoning_options_fail_early_with_the_fix(tiny_model_dir: Any, qwen3: Any) -> None:
    with pytest.raises(UnsupportedOptionError, match="writes no reasoning block"):
        load_engine(str(tiny_model_dir), reasoning=True)  # no chat template: Hermes 2 Pro's card format
    with pytest.raises(UnsupportedOptionError, match="reasoning_budget must be"):
        qwen3._prepare(ASK, reasoning_budget=0)
    with pytest.raises(UnsupportedOptionError, match="leaves no room for the reply"):
        qwen3._prepare(ASK, tools=[UNIT], tool_choice="required", reasoning_budget=40)
    with pytest.raises(UnsupportedOptionError, match="Unknown variant"):
        load_engine(str(tiny_model_dir), variant="hermes-9")
