"""An ``Engine`` that replies with a given text, token by token, so a scripted reply runs the real path.

The reasoning models whose replies open with ``<think>`` (Hermes 4, Qwen3) cannot run here, and the tiny
random model writes no meaningful reasoning. Replaying such a reply through this engine still sends it
through everything real: the frontend's incremental detokenizer, stop strings, the parser, validation,
and both adapters. Only the choice of tokens is scripted.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from hermes_core.engines.base import Engine, EngineOutput, GenerationRequest
from hermes_core.engines.local.loading import ChatTokens
from hermes_core.types import Usage


class ReplayEngine(Engine):
    """Yields the token ids of ``reply`` (two per output), then ends as a model that stopped would."""

    def __init__(self, tokenizer: Any, reply: str) -> None:
        vocab = tokenizer.get_vocab()
        self.tokenizer = tokenizer
        self.model_name = "replay"
        self.context_window = 4096
        self.stop_token_ids = [vocab["<|im_end|>"]]
        self.chat_tokens = ChatTokens(vocab["<|im_start|>"], vocab["<|im_end|>"])
        self.reply_ids = list(tokenizer(reply, add_special_tokens=False)["input_ids"])
        assert tokenizer.decode(self.reply_ids, skip_special_tokens=False) == reply
        self.prompts: list[str] = []  # every prompt it was given, decoded

    def generate(self, request: GenerationRequest) -> Iterator[EngineOutput]:
        self.prompts.append(self.tokenizer.decode(request.prompt_ids, skip_special_tokens=False))
        ids = self.reply_ids[: request.max_new_tokens]
        for start in range(0, len(ids), 2):
            if request.cancel.is_set():
                break
            yield EngineOutput(ids[start : start + 2])
        finish = "length" if len(ids) < len(self.reply_ids) else "stop"
        yield EngineOutput([], finish_reason=finish, usage=Usage(len(request.prompt_ids), len(ids)))
