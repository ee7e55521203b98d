"""The llama.cpp ``llama-server`` dialect: ``POST /completion`` with token ids and a GBNF grammar.

The prompt goes as a list of ints, which llama-server evaluates as given (no BOS added, nothing
parsed). The constraint goes as GBNF written from its source (``hermes_core.gbnf``); control tokens
other than the stop tokens are banned with ``logit_bias``, because llama.cpp's grammar reads a special
token as its text. Every sampler is named explicitly (llama-server's defaults add top-k 40, min-p
0.05 and more). Streamed events carry the new tokens' ids; the last has ``stop: true``.
"""

from __future__ import annotations

from typing import Any

from hermes_core.engines.base import GenerationRequest
from hermes_core.engines.server.dialect import (
    BodyContext,
    Dialect,
    EventReader,
    ServerInfo,
    Step,
    first_model,
    optional_get,
    positive_int,
    tokenize_or_none,
)
from hermes_core.engines.server.http import Transport
from hermes_core.gbnf import constraint_gbnf


class LlamaServer(Dialect):
    name = "llama-server"
    server = "llama-server"
    generate_path = "/completion"
    # llama-server closes the connection after every streamed reply (despite its Keep-Alive header);
    # a pooled client reusing it would meet a dead socket, so the stream asks for the close itself.
    stream_headers = {"Connection": "close"}  # noqa: RUF012

    def describe(self, transport: Transport) -> ServerInfo:
        props = optional_get(transport, "/props") or {}
        model = first_model(optional_get(transport, "/v1/models"))
        meta = model.get("meta") if isinstance(model.get("meta"), dict) else {}
        settings = props.get("default_generation_settings", {}) if isinstance(props, dict) else {}
        context = positive_int(settings.get("n_ctx")) or positive_int(meta.get("n_ctx"))
        return ServerInfo(
            model_id=model.get("id") or props.get("model_alias") or props.get("model_path"),
            context_window=context,
            vocab_size=positive_int(meta.get("n_vocab")),
            slots=positive_int(props.get("total_slots")),
            raw={"props": props, "model": model},
        )

    def tokenize(self, transport: Transport, text: str) -> list[int] | None:
        return tokenize_or_none(
            transport, "/tokenize", {"content": text, "add_special": False, "parse_special": True}
        )

    def body(self, request: GenerationRequest, context: BodyContext) -> dict[str, Any]:
        body: dict[str, Any] = {
            "prompt": list(request.prompt_ids),
            "n_predict": request.max_new_tokens,
            "stream": True,
            "return_tokens": True,
            "cache_prompt": context.cache_prompt,
            "temperature": request.temperature,
            "top_p": request.top_p if request.top_p is not None else 1.0,
            "top_k": 0,
            "min_p": 0.0,
            "typical_p": 1.0,
            "repeat_penalty": request.repetition_penalty if request.repetition_penalty is not None else 1.0,
            "repeat_last_n": len(request.prompt_ids) + request.max_new_tokens,  # the whole sequence
            "presence_penalty": 0.0,
            "frequency_penalty": 0.0,
            "dry_multiplier": 0.0,
            "xtc_probability": 0.0,
            "mirostat": 0,
            "samplers": ["penalties", "top_p", "temperature"],
            "seed": request.seed if request.seed is not None else -1,
            "n_probs": 0,
        }
        if request.constraint is not None:
            body["grammar"] = constraint_gbnf(request.constraint)
            if context.banned_token_ids:
                body["logit_bias"] = [[token, False] for token in context.banned_token_ids]
        return body

    def reader(self) -> EventReader:
        return _Reader()


class _Reader(EventReader):
    def read(self, event: dict[str, Any]) -> Step:
        tokens = event.get("tokens")
        ids = [int(t) for t in tokens] if isinstance(tokens, list) else []
        if not event.get("stop"):
            return Step(ids)
        reason = "length" if event.get("stop_type") == "limit" else "stop"
        return Step(ids, reason, positive_int(event.get("tokens_evaluated")))
