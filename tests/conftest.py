"""Shared fixtures: the tiny ChatML model (built once per session, no download), torch threads."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.llama_server import llama_server
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


@pytest.fixture(scope="session")
def llama_server_url() -> Iterator[str]:
    """Base URL of a real llama.cpp ``llama-server`` serving the embedded SmolLM2 GGUF (2 slots x 4096 tokens).

    Started once per session on a free 127.0.0.1 port, with HERMES_TEST_THREADS threads (default 1),
    and stopped with its process group at the end (see tests/llama_server.py).
    """
    from hermes_core.engines.local.loading import embedded_gguf_path

    threads = int(os.environ.get("HERMES_TEST_THREADS", "1"))
    with llama_server(embedded_gguf_path(), parallel=2, ctx_per_slot=4096, threads=threads) as url:
        yield url
