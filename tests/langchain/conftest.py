"""Fixtures for the LangChain adapter tests: ``ChatHermes`` over the tiny random ChatML model."""

from __future__ import annotations

import pytest

from langchain_hermes import ChatHermes


@pytest.fixture(scope="session")
def tiny_path(tiny_model_dir) -> str:
    """Path of the tiny random ChatML Llama (fast; greedy output is deterministic)."""
    return str(tiny_model_dir)


@pytest.fixture
def tiny_llm(tiny_path) -> ChatHermes:
    """A ``ChatHermes`` on the tiny model; its engine is shared process-wide after the first load."""
    return ChatHermes(model=tiny_path, max_tokens=40)
