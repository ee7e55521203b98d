"""A Hugging Face id that is not in the local cache fails in seconds, with the download hint, when the hub is out of reach."""

from __future__ import annotations

import time

import pytest

from hermes_core import ModelLoadError, load_model

MADE_UP = "made-up-org/no-such-hermes-model"


@pytest.fixture
def empty_hub_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)


def _load_error_and_seconds() -> tuple[str, float]:
    started = time.perf_counter()
    with pytest.raises(ModelLoadError) as info:
        load_model(MADE_UP, progress=False)
    return str(info.value), time.perf_counter() - started


def _assert_download_hint(message: str) -> None:
    assert f"{MADE_UP!r} is not a local path and was not found in the local Hugging Face cache" in message
    assert f"hf download {MADE_UP}" in message and "\n" not in message


@pytest.mark.timeout(60)
def test_unreachable_hub_fails_fast_with_the_download_hint(empty_hub_cache, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: connection refused
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    message, seconds = _load_error_and_seconds()
    _assert_download_hint(message)
    assert "cannot reach http://127.0.0.1:9" in message
    assert seconds < 10  # huggingface_hub alone retries for about a minute


@pytest.mark.timeout(60)
def test_offline_mode_fails_fast_with_the_same_hint(empty_hub_cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    message, seconds = _load_error_and_seconds()
    _assert_download_hint(message)
    assert seconds < 10
