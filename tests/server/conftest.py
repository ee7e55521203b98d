"""Fixtures of the server-engine tests: the tiny model's tokenizer, and fake vLLM / SGLang servers over it."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    """The tiny test model's tokenizer as a server engine loads it (no weights)."""
    from hermes_core.engines.server.tokenizer import load_server_tokenizer

    return load_server_tokenizer(str(tiny_model_dir))


@pytest.fixture(scope="session")
def tiny_local(tiny_model_dir):
    """The tiny model in a local engine: what the fake servers generate with."""
    from hermes_core import get_engine

    return get_engine(str(tiny_model_dir), prefix_cache=False)
