"""The tokenizer of the model a server serves, loaded locally without any weights.

The frontend renders prompts to token ids and detokenizes replies itself (so untrusted text never
passes through the server's special-token parsing), so it needs the served model's tokenizer:
``model=None`` is the embedded SmolLM2 GGUF (from its converted cache entry when there is one, else
read from the GGUF), a ``.gguf`` file likewise, a directory, or a Hugging Face id in the local cache.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hermes_core.engines.local import gguf_cache
from hermes_core.engines.local.loading import (
    EMBEDDED_NAME,
    ChatTokens,
    chat_tokens_of,
    embedded_gguf_path,
    stop_token_ids_of,
)
from hermes_core.errors import ModelLoadError, UnsupportedOptionError


@dataclass
class ServerTokenizer:
    """A tokenizer with what the frontend needs to know about it."""

    tokenizer: Any
    model_name: str
    chat_tokens: ChatTokens
    stop_token_ids: list[int]


def load_server_tokenizer(model: Any = None) -> ServerTokenizer:
    """Load only the tokenizer of ``model`` (None = the embedded SmolLM2); raises ModelLoadError."""
    from hermes_core.engines.local.loading import _looks_like_path

    if model is not None and not isinstance(model, (str, os.PathLike)):
        raise UnsupportedOptionError(
            f"With base_url, model names the served model's tokenizer: a path or Hugging Face id, "
            f"not {type(model).__name__}."
        )
    if model is None:
        tokenizer, name = _from_gguf(embedded_gguf_path()), EMBEDDED_NAME
    else:
        text = os.fspath(model)
        path = Path(text).expanduser()
        if path.is_file():
            if path.suffix.lower() != ".gguf":
                raise ModelLoadError(
                    f"{text!r} is a file but not a .gguf model; pass a .gguf file or a directory."
                )
            tokenizer, name = _from_gguf(path.resolve()), path.stem
        elif path.is_dir():
            ggufs = sorted(path.glob("*.gguf"))
            if not (path / "tokenizer_config.json").is_file() and not (path / "tokenizer.json").is_file():
                if len(ggufs) != 1:
                    raise ModelLoadError(
                        f"{text!r} holds no tokenizer files (tokenizer.json / tokenizer_config.json) and "
                        f"{len(ggufs)} .gguf files; pass the served model's directory or its .gguf file."
                    )
                tokenizer, name = _from_gguf(ggufs[0].resolve()), ggufs[0].stem
            else:
                tokenizer, name = _from_pretrained(str(path), text, local_only=True), path.resolve().name
        elif _looks_like_path(text):
            raise ModelLoadError(f"model path {text!r} does not exist; check the path.")
        else:
            tokenizer, name = _from_hub(text), text
    chat = chat_tokens_of(tokenizer, name)
    return ServerTokenizer(tokenizer, name, chat, stop_token_ids_of(tokenizer, None, chat))


def _from_gguf(gguf: Path) -> Any:
    """The tokenizer of a GGUF: from its converted cache entry if one exists, else read from the file."""
    from transformers import AutoTokenizer

    entry = gguf_cache.gguf_cache_root() / gguf_cache.cache_key(gguf)
    if gguf_cache.is_complete(entry):
        return _from_pretrained(str(entry), gguf.name, local_only=True)
    try:
        return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    except Exception as exc:
        raise ModelLoadError(
            f"cannot read the tokenizer of GGUF file {str(gguf)!r} ({type(exc).__name__}: {exc}); "
            "check it is a complete GGUF, or pass the model's directory."
        ) from exc


def _from_pretrained(where: str, name: str, *, local_only: bool) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(where, local_files_only=local_only)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(
            f"cannot load the tokenizer of {name!r} from {where!r} ({type(exc).__name__}: {reason}); "
            "check the directory holds tokenizer files (tokenizer.json or tokenizer_config.json)."
        ) from exc


def _from_hub(repo_id: str) -> Any:
    """A Hugging Face id: from the local cache (downloaded only when online and not cached)."""
    from hermes_core.engines.local.loading import _hub_missing, _hub_offline, _in_hub_cache

    local_only = _hub_offline() or _in_hub_cache(repo_id)
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(repo_id, local_files_only=local_only)
    except Exception as exc:
        if not _in_hub_cache(repo_id):
            raise _hub_missing(repo_id, exc) from exc
        raise ModelLoadError(
            f"cannot load the tokenizer of {repo_id!r} ({type(exc).__name__}: {exc})."
        ) from exc
