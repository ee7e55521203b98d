"""Shared fixtures: the tiny ChatML model (built once per session, no download)."""

from __future__ import annotations

import pytest

from tests.tiny_model import build_tiny_model


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory):
    """Directory holding a tiny random Llama + ChatML tokenizer (see tests/tiny_model.py)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-chatml-llama"))
