"""Fixtures for the LlamaIndex adapter: the tiny random model (fast) and the embedded model (slow)."""

from typing import Literal

import pytest
from llama_index.core.tools import FunctionTool

from llama_index_hermes import HermesLLM


def get_weather(city: Literal["Paris", "Rome", "Oslo"], unit: Literal["celsius", "fahrenheit"]) -> str:
    """Get the current weather in a city.

    Args:
        city: The city to look up.
        unit: The temperature unit.
    """
    return f"18 degrees {unit} in {city}"


def set_mode(mode: Literal["fast", "slow"]) -> str:
    """Switch the assistant's speed mode.

    Args:
        mode: The mode to switch to.
    """
    return f"mode is {mode}"


@pytest.fixture(scope="session")
def tiny_engine(tiny_model_dir):
    """The shared engine over the tiny random ChatML model (same key a plain HermesLLM(model=dir) uses)."""
    from hermes_core import get_engine

    return get_engine(str(tiny_model_dir))


@pytest.fixture
def tiny_llm(tiny_engine) -> HermesLLM:
    """HermesLLM on the tiny model; enum-only tool arguments keep its (random) calls short."""
    return HermesLLM(engine=tiny_engine, max_new_tokens=48)


@pytest.fixture
def weather_tools() -> list[FunctionTool]:
    return [FunctionTool.from_defaults(get_weather), FunctionTool.from_defaults(set_mode)]


@pytest.fixture(scope="session")
def smol_llm() -> HermesLLM:
    """HermesLLM on the embedded SmolLM2-135M-Instruct (loaded once per process)."""
    return HermesLLM(max_new_tokens=64)
