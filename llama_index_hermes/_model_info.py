"""What ``HermesLLM.metadata`` can know about a model before its weights are loaded.

LlamaIndex reads ``metadata`` often (every callback payload, prompt helpers, memory sizing), so it
must never load weights. Once the engine is loaded its exact values are used; before that, the
context window is read from whatever is cheap: an in-memory ``(model, tokenizer)`` pair, or a
``config.json`` in a local directory or the local Hugging Face cache. GGUF files (the embedded
default included) have no cheap config, so until loading ``DEFAULT_CONTEXT_WINDOW`` (the core's own
conservative fallback) is reported; pass ``context_window=`` to state it.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from hermes_core.engines.local.loading import DEFAULT_CONTEXT_WINDOW, EMBEDDED_NAME, context_window_of


def model_label(model: Any) -> str:
    """The model's display name without loading it (as the core names it once loaded, where known)."""
    if model is None:
        return EMBEDDED_NAME
    if isinstance(model, tuple) and model:
        config = getattr(model[0], "config", None)
        return str(getattr(config, "name_or_path", "") or type(model[0]).__name__)
    text = os.fspath(model) if isinstance(model, (str, os.PathLike)) else str(model)
    path = Path(text).expanduser()
    if path.suffix.lower() == ".gguf":
        return path.stem
    return path.resolve().name if path.is_dir() else text


def peek_context_window(model: Any) -> int | None:
    """The context window if it can be read without loading weights, else None."""
    if isinstance(model, tuple) and len(model) == 2:
        return context_window_of(model[0], model[1])
    if not isinstance(model, (str, os.PathLike)):
        return None
    text = os.fspath(model)
    path = Path(text).expanduser()
    if path.is_dir() and not (path / "config.json").is_file():
        return None
    if path.suffix.lower() == ".gguf":
        return None
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(text, local_files_only=True)
    except (OSError, ValueError):
        return None
    return context_window_of(SimpleNamespace(config=config), None)


def fallback_context_window() -> int:
    """What is reported when nothing cheaper is known (see the module docstring)."""
    return DEFAULT_CONTEXT_WINDOW
