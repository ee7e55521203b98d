"""The vLLM dialect: ``POST /v1/completions`` with a token-id prompt and ``structured_outputs``.

Written from vLLM's documented API (0.12 and later; the ``guided_*`` fields were removed in 0.12):
the prompt is a list of ints (passed to the engine unchanged), the tool-call constraint goes as
``structured_outputs.structural_tag`` (xgrammar's structural tag, JSON-encoded as a string), JSON mode
as ``structured_outputs.json``. ``return_token_ids`` makes every streamed chunk carry its token ids;
control tokens are banned with ``logit_bias`` while a constraint is active. Not run against a live
vLLM here: the request bodies are checked against a schema written from vLLM's docs.
"""

from __future__ import annotations

import json
from typing import Any

from hermes_core.engines.base import GenerationRequest
from hermes_core.engines.server.dialect import (
    BodyContext,
    Dialect,
    EventReader,
    ServerInfo,
    Step,
    banned_bias,
    finish_reason,
    first_model,
    optional_get,
    positive_int,
    sampling_params,
    tokenize_or_none,
)
from hermes_core.engines.server.http import Transport


def structured_outputs(constraint: Any) -> dict[str, Any]:
    """The constraint as vLLM's ``structured_outputs`` object (exactly one kind set)."""
    if constraint.kind == "json_schema":
        return {"json": constraint.source, "disable_any_whitespace": True}
    return {"structural_tag": json.dumps(constraint.source)}


class Vllm(Dialect):
    name = "vllm"
    server = "vLLM server"
    generate_path = "/v1/completions"

    def describe(self, transport: Transport) -> ServerInfo:
        model = first_model(optional_get(transport, "/v1/models"))
        return ServerInfo(
            model_id=model.get("id"),
            context_window=positive_int(model.get("max_model_len")),
            raw={"model": model},
        )

    def tokenize(self, transport: Transport, text: str) -> list[int] | None:
        return tokenize_or_none(transport, "/tokenize", {"prompt": text, "add_special_tokens": False})

    def body(self, request: GenerationRequest, context: BodyContext) -> dict[str, Any]:
        body: dict[str, Any] = {
            "prompt": list(request.prompt_ids),
            "max_tokens": request.max_new_tokens,
            **sampling_params(request),
            "return_token_ids": True,
            "stream": True,
            "stream_options": {"include_usage": True},
            "n": 1,
        }
        if context.model_id is not None:
            body["model"] = context.model_id
        if request.seed is not None:
            body["seed"] = request.seed
        if request.constraint is not None:
            body["structured_outputs"] = structured_outputs(request.constraint)
            if context.banned_token_ids:
                body["logit_bias"] = banned_bias(context.banned_token_ids)
        return body

    def reader(self) -> EventReader:
        return _Reader()


class _Reader(EventReader):
    def read(self, event: dict[str, Any]) -> Step:
        usage = event.get("usage") if isinstance(event.get("usage"), dict) else {}
        prompt = positive_int(usage.get("prompt_tokens"))
        choices = event.get("choices") or []
        choice = choices[0] if choices and isinstance(choices[0], dict) else {}
        if prompt is None and isinstance(choice.get("prompt_token_ids"), list):
            prompt = len(choice["prompt_token_ids"])
        ids = [int(t) for t in choice.get("token_ids") or []]
        reason = choice.get("finish_reason")
        if reason is None:
            return Step(ids, None, prompt)
        return Step(ids, finish_reason(reason), prompt)
