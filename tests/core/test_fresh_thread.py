"""Model loading runs on a thread that ends with it (``cpu/threads.py``), with results and errors handed back."""

from __future__ import annotations

import threading

import pytest

from hermes_core.engines.local import loading
from hermes_core.engines.local.cpu.threads import on_fresh_thread
from hermes_core.errors import ModelLoadError


def test_result_comes_back_from_another_thread_that_has_ended() -> None:
    seen: list[threading.Thread] = []

    def work(a: int, *, b: int) -> int:
        seen.append(threading.current_thread())
        return a * b

    assert on_fresh_thread(work, 6, b=7) == 42
    assert seen[0] is not threading.current_thread()
    assert not seen[0].is_alive()


def test_the_exception_is_raised_in_the_caller_unchanged() -> None:
    error = ValueError("bad option x; pass y")

    def fail() -> None:
        raise error

    with pytest.raises(ValueError, match="bad option x; pass y") as raised:
        on_fresh_thread(fail)
    assert raised.value is error


def test_load_model_does_its_torch_work_off_the_callers_thread(tiny_model_dir, monkeypatch) -> None:
    threads: list[threading.Thread] = []
    real = loading._load_model

    def recording(*args, **kwargs):
        threads.append(threading.current_thread())
        return real(*args, **kwargs)

    monkeypatch.setattr(loading, "_load_model", recording)
    loaded = loading.load_model(str(tiny_model_dir), progress=False)
    assert loaded.model is not None and loaded.tokenizer is not None
    assert threads and threads[0] is not threading.current_thread()
    assert not threads[0].is_alive()  # its OpenMP team went with it


def test_a_load_error_still_reaches_the_caller_as_one_line(tmp_path) -> None:
    not_a_model = tmp_path / "notes.txt"
    not_a_model.write_text("hello")
    with pytest.raises(ModelLoadError, match=r"not a \.gguf model"):
        loading.load_model(str(not_a_model), progress=False)
