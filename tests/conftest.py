"""Shared fixtures: the tiny ChatML model (built once per session, no download), torch threads."""

from __future__ import annotations

import os

import pytest

from tests.tiny_model import build_tiny_model


def pytest_configure(config: pytest.Config) -> None:
    """Run torch single-threaded in tests unless HERMES_TEST_THREADS says otherwise.

    On a small shared machine, OpenMP threads of concurrent processes spin against each other:
    2 threads were measured 5x slower than 1 under load, while on an idle 2-core machine 1
    thread costs little for a 135M model. Tests assert behaviour, never speed.
    """
    import torch

    torch.set_num_threads(int(os.environ.get("HERMES_TEST_THREADS", "1")))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory):
    """Directory holding a tiny random Llama + ChatML tokenizer (see tests/tiny_model.py)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-chatml-llama"))
