"""The SGLang dialect: native ``POST /generate`` with ``input_ids`` and the constraint in ``sampling_params``.

Written from SGLang's documented API (0.5): ``input_ids`` are used as given (no BOS, nothing parsed),
the tool-call constraint goes as ``sampling_params.structural_tag`` (JSON-encoded string) and JSON mode as
``sampling_params.ebnf`` (the compact-JSON grammar xgrammar makes of the schema; SGLang's
``json_schema`` would allow any whitespace). SGLang rejects objects there, and unknown keys.
Streamed ``output_ids`` are running totals by default (deltas with ``--incremental-streaming-output``;
``meta_info.completion_tokens`` tells which). A stream left early is also aborted by its ``rid``, since
SGLang otherwise waits 2 s after a disconnect. Not run against a live SGLang here: the request bodies
are checked against a schema written from SGLang's docs.
"""

from __future__ import annotations

import json
import uuid
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
from hermes_core.grammar import json_mode_ebnf


class Sglang(Dialect):
    name = "sglang"
    server = "SGLang server"
    generate_path = "/generate"

    def describe(self, transport: Transport) -> ServerInfo:
        info = optional_get(transport, "/model_info") or {}
        model = first_model(optional_get(transport, "/v1/models"))
        return ServerInfo(
            model_id=model.get("id") or info.get("served_model_name") or info.get("model_path"),
            context_window=positive_int(model.get("max_model_len")),
            raw={"model_info": info, "model": model},
        )

    def tokenize(self, transport: Transport, text: str) -> list[int] | None:
        return tokenize_or_none(transport, "/tokenize", {"prompt": text, "add_special_tokens": False})

    def body(self, request: GenerationRequest, context: BodyContext) -> dict[str, Any]:
        params: dict[str, Any] = {
            "max_new_tokens": request.max_new_tokens,
            **sampling_params(request),
            "top_k": -1,
            "no_stop_trim": True,
        }
        if request.seed is not None:
            params["sampling_seed"] = request.seed
        if request.constraint is not None:
            if request.constraint.kind == "json_schema":
                # SGLang's json_schema allows any whitespace (a server-wide setting); the EBNF is the
                # compact JSON the local engine constrains to.
                params["ebnf"] = json_mode_ebnf(request.constraint.source)
            else:
                params["structural_tag"] = json.dumps(request.constraint.source)
            if context.banned_token_ids:
                params["logit_bias"] = banned_bias(context.banned_token_ids)
        return {
            "input_ids": list(request.prompt_ids),
            "rid": f"hermes-{uuid.uuid4().hex}",
            "stream": True,
            "sampling_params": params,
        }

    def abort(self, transport: Transport, body: dict[str, Any]) -> None:
        transport.post("/abort_request", {"rid": body["rid"]})

    async def aabort(self, transport: Transport, body: dict[str, Any]) -> None:
        await transport.apost("/abort_request", {"rid": body["rid"]})

    def reader(self) -> EventReader:
        return _Reader()


class _Reader(EventReader):
    """Tracks how many ids were seen, as ``output_ids`` may be running totals."""

    def __init__(self) -> None:
        self.seen = 0

    def read(self, event: dict[str, Any]) -> Step:
        meta = event.get("meta_info") if isinstance(event.get("meta_info"), dict) else {}
        ids = [int(t) for t in event.get("output_ids") or []]
        total = meta.get("completion_tokens")
        if isinstance(total, int) and len(ids) == total and total >= self.seen:
            new = ids[self.seen :]  # running totals (the default)
        else:
            new = ids  # deltas (--incremental-streaming-output)
        self.seen += len(new)
        finish = meta.get("finish_reason")
        prompt = positive_int(meta.get("prompt_tokens"))
        if not isinstance(finish, dict):
            return Step(new, None, prompt)
        return Step(new, finish_reason(finish.get("type")), prompt)
