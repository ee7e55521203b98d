"""ChatHermes and HermesLLM give the same answer as the bare engine for the same conversation.

Every case runs through each adapter, whole and streamed, over the same engine, and must match
the engine's own result: same text, same calls (names and arguments), same number of invalid
attempts, and no call markup in streamed text. Greedy decoding, or sampling with a fixed seed,
makes the runs comparable; the local engine's prefix cache is off so every run computes the prompt
the same way. Every test runs on both engines: the tiny model in process, and a real llama-server
(started by the session fixture) serving the embedded SmolLM2 GGUF.
"""

from __future__ import annotations

import pytest

from tests.conformance.conversations import CASES, TOOLS, Case
from tests.conformance.drivers import ADAPTERS, Outcome, run_engine

_REFERENCE: dict[tuple[str, str], Outcome] = {}


def _warm(engine, case: Case, model: str) -> None:
    """Put the case's prompt in llama-server's prompt cache, so the next runs all compute it alike.

    llama-server reuses a cached prompt prefix, and llama.cpp's logits after a reused prefix differ
    in the last bits from those of a full evaluation (other batch shapes), enough to flip a sampled
    token. Once a prompt is cached, every repeat reuses the same prefix and computes the same.
    """
    if model == "llama-server":
        run_engine(engine, case, stream=False)


def _reference(engine, case: Case, model: str) -> Outcome:
    key = (model, case.id)
    if key not in _REFERENCE:
        _warm(engine, case, model)
        _REFERENCE[key] = run_engine(engine, case, stream=False)
    return _REFERENCE[key]


@pytest.fixture(scope="module", params=["local", "llama-server"])
def engine(request, tiny_model_dir):
    """Each engine: the tiny model in process, and a real llama-server serving the embedded GGUF."""
    from hermes_core import get_engine

    if request.param == "llama-server":
        return get_engine(base_url=request.getfixturevalue("llama_server_url"))
    return get_engine(str(tiny_model_dir), prefix_cache=False)


def _model(engine) -> str:
    return "llama-server" if hasattr(engine.engine, "base_url") else "tiny"


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("adapter", sorted(ADAPTERS))
@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_adapter_matches_engine(engine, case: Case, adapter: str, stream: bool) -> None:
    expected = _reference(engine, case, _model(engine))
    outcome = ADAPTERS[adapter](engine, case, stream)
    assert not outcome.markup_in_deltas
    assert outcome == expected


def test_engine_stream_matches_engine_whole(engine) -> None:
    for case in CASES:
        expected = _reference(engine, case, _model(engine))
        _warm(engine, case, _model(engine))
        assert run_engine(engine, case, stream=True) == expected, case.id


def test_cases_exercise_what_they_claim(engine) -> None:
    """Guard against a case silently testing nothing (e.g. the truncated call coming out valid)."""
    outcomes = {case.id: _reference(engine, case, _model(engine)) for case in CASES}
    for free_text in ("plain_text", "tool_choice_none", "round_trip_after_parallel_calls"):
        assert outcomes[free_text].text.strip(), free_text
    assert len(outcomes["forced_single_call"].calls) == 1
    assert [name for name, _ in outcomes["forced_named_call"].calls] == ["set_mode"]
    assert outcomes["tool_choice_none"].calls == []
    truncated = outcomes["truncated_call_is_invalid"]
    assert truncated.calls == [] and truncated.n_invalid == 1
    assert outcomes["json_mode"].text.lstrip().startswith("{")


@pytest.fixture(scope="module")
def smol_engine():
    from hermes_core import get_engine

    return get_engine(prefix_cache=False)


_SLOW_CASES = [
    Case(
        "smol_forced_call", CASES[1].messages, TOOLS, "required", parallel_tool_calls=False, max_new_tokens=48
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize("adapter", sorted(ADAPTERS))
@pytest.mark.parametrize("case", _SLOW_CASES, ids=[case.id for case in _SLOW_CASES])
def test_adapter_matches_engine_on_embedded_model(smol_engine, case: Case, adapter: str) -> None:
    expected = _reference(smol_engine, case, "smol")
    assert ADAPTERS[adapter](smol_engine, case, False) == expected
    assert ADAPTERS[adapter](smol_engine, case, True) == expected
