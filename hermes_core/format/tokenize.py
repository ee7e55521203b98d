"""Thread-safe text to token ids: every tokenizer call of the core goes through ``encode``.

A transformers fast tokenizer applies ``split_special_tokens`` by setting a flag on its one shared
Rust tokenizer before encoding, and the Rust encode releases the GIL. Two threads encoding at once
(concurrent requests rendering prompts: one its structure, one its untrusted content) could then
read each other's flag: ``<|im_end|>`` in a prompt's structure came out as plain text ids, or a
user's ``<|im_end|>`` as the special token. One lock around flag and encode keeps every call exact.
"""

from __future__ import annotations

import threading
from typing import Any

_LOCK = threading.Lock()


def encode(
    tokenizer: Any, text: str, *, split_special_tokens: bool = False, add_special_tokens: bool = False
) -> list[int]:
    """Token ids of ``text``; ``split_special_tokens=True`` reads special-token text as plain text."""
    with _LOCK:
        encoded = tokenizer(
            text, add_special_tokens=add_special_tokens, split_special_tokens=split_special_tokens
        )
    return list(encoded["input_ids"])
