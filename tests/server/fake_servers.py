"""Stand-ins for a vLLM and an SGLang server, behind ``httpx.MockTransport`` (neither server runs here).

Each fake checks every request body against a JSON schema written from that server's documentation
(``schemas/``) and answers 400 with the server's error shape when it does not fit, as the real server's
request validation would. It then generates for real: the token-id prompt goes to a local engine on
the tiny test model, constrained by what the body carries, compiled the way those servers compile it
(the ``structural_tag`` string with xgrammar's ``compile_structural_tag``, a JSON schema with
``compile_json_schema``), and it streams the documented event format: vLLM's delta chunks with
``token_ids``, a usage chunk and ``[DONE]``; SGLang's running totals of ``output_ids`` with
``meta_info`` and ``[DONE]``. Closing a stream early cancels the generation, as both servers abort a
generation whose client has gone.
"""

from __future__ import annotations

import asyncio
import json
import queue
import threading
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import xgrammar as xgr

from hermes_core.engines.base import Constraint, GenerationRequest

SCHEMAS = Path(__file__).parent / "schemas"
_END = object()


def load_schema(name: str) -> dict[str, Any]:
    return json.loads((SCHEMAS / name).read_text())


class _EventStream(httpx.SyncByteStream, httpx.AsyncByteStream):
    """Server-sent events produced by a generation on a worker thread; closing early cancels it."""

    def __init__(self, server: FakeServer, request: GenerationRequest, format_events: Any) -> None:
        self.server = server
        self.request = request
        self.format_events = format_events
        self.items: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.finished = False
        self.started = False

    def _start(self) -> None:
        if self.started:
            return
        self.started = True

        def work() -> None:
            try:
                final = self.server.engine.run(self.request, lambda token: self.items.put(token))
                self.items.put(("final", final))
            except BaseException as exc:  # reported as an in-stream error event
                self.items.put(("error", exc))
            finally:
                self.items.put(_END)

        threading.Thread(target=work, daemon=True).start()

    def _chunks(self, item: Any) -> list[bytes]:
        return [f"data: {json.dumps(event)}\n\n".encode() for event in self.format_events(item)]

    def __iter__(self):  # type: ignore[override]
        self._start()
        while (item := self.items.get()) is not _END:
            yield from self._chunks(item)
        self.finished = True
        yield b"data: [DONE]\n\n"

    async def __aiter__(self):  # type: ignore[override]
        self._start()
        while (item := await asyncio.to_thread(self.items.get)) is not _END:
            for chunk in self._chunks(item):
                yield chunk
        self.finished = True
        yield b"data: [DONE]\n\n"

    def close(self) -> None:
        if not self.finished:
            self.server.closed_early += 1
        self.request.cancel.set()

    async def aclose(self) -> None:
        self.close()


class FakeServer:
    """Common routing, body checking and generation; subclasses speak one server's API."""

    generate_path = ""
    schema_name = ""
    model_id = "served-model"

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.tokenizer = engine.tokenizer
        self.vocab_size = int(getattr(engine.model.config, "vocab_size", 0) or len(engine.tokenizer))
        self.schema = load_schema(self.schema_name)
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[httpx.Headers] = []
        self.closed_early = 0
        self.aborted: list[str] = []
        self.transport = httpx.MockTransport(self.handle)

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.headers.append(request.headers)
        body = json.loads(request.content) if request.content else None
        path = request.url.path
        if request.method == "POST" and path == self.generate_path:
            self.bodies.append(body)
            try:
                jsonschema.validate(body, self.schema)
            except jsonschema.ValidationError as exc:
                return self.error(400, f"invalid request: {exc.message}")
            return self.generate(body)
        return self.route(request.method, path, body)

    def error(self, status: int, message: str) -> httpx.Response:
        return httpx.Response(
            status, json={"error": {"message": message, "type": "BadRequestError", "code": status}}
        )

    def route(self, method: str, path: str, body: Any) -> httpx.Response:
        if method == "POST" and path == "/tokenize":
            ids = self.tokenizer(
                body["prompt"], add_special_tokens=bool(body.get("add_special_tokens", True))
            )
            return httpx.Response(200, json={"tokens": ids["input_ids"], "count": len(ids["input_ids"])})
        return httpx.Response(404, json={"detail": "Not Found"})

    def compile(
        self, kind: str, value: Any, banned: dict[str, float] | None, any_whitespace: bool = True
    ) -> Constraint:
        """Compile what a body carries as these servers' xgrammar backend does, with its token bans applied.

        The vocabulary is read as ``TokenizerInfo.from_huggingface`` reads it (special tokens spelled as
        their text); a token the body's ``logit_bias`` bans is removed from it, which is what a -100
        bias does to sampling.
        """
        info = xgr.TokenizerInfo.from_huggingface(
            self.tokenizer, vocab_size=self.vocab_size, stop_token_ids=self.engine.stop_token_ids
        )
        vocab = info.decoded_vocab
        for token, bias in (banned or {}).items():
            if bias <= -100:
                vocab[int(token)] = b""
        raw = xgr.TokenizerInfo(
            vocab, xgr.VocabType.RAW, vocab_size=self.vocab_size, stop_token_ids=self.engine.stop_token_ids
        )
        compiler = xgr.GrammarCompiler(raw, cache_enabled=False)
        if kind == "structural_tag":
            compiled = compiler.compile_structural_tag(value)
        elif kind == "ebnf":
            compiled = compiler.compile_grammar(value)
        else:
            text = value if isinstance(value, str) else json.dumps(value)
            compiled = compiler.compile_json_schema(text, any_whitespace=any_whitespace)
        return Constraint("structural_tag" if kind == "structural_tag" else "json_schema", {}, compiled)

    def generate(self, body: dict[str, Any]) -> httpx.Response:
        raise NotImplementedError


class FakeVllm(FakeServer):
    generate_path = "/v1/completions"
    schema_name = "vllm_completions.json"

    def route(self, method: str, path: str, body: Any) -> httpx.Response:
        if method == "GET" and path == "/v1/models":
            card = {
                "id": self.model_id,
                "object": "model",
                "owned_by": "vllm",
                "root": "/models/x",
                "max_model_len": 2048,
            }
            return httpx.Response(200, json={"object": "list", "data": [card]})
        return super().route(method, path, body)

    def generate(self, body: dict[str, Any]) -> httpx.Response:
        structured = body.get("structured_outputs")
        constraint = None
        if structured is not None:
            bias = body.get("logit_bias")
            if "structural_tag" in structured:
                constraint = self.compile("structural_tag", structured["structural_tag"], bias)
            else:
                whitespace = not structured.get("disable_any_whitespace")
                constraint = self.compile("json", structured["json"], bias, whitespace)
        request = GenerationRequest(
            prompt_ids=body["prompt"],
            max_new_tokens=body["max_tokens"],
            temperature=body["temperature"],
            top_p=body.get("top_p"),
            seed=body.get("seed"),
            stop_token_ids=body.get("stop_token_ids") or [],
            constraint=constraint,
        )
        first = [True]

        def events(item: Any) -> list[dict[str, Any]]:
            if isinstance(item, int):
                choice = {
                    "index": 0,
                    "text": self.tokenizer.decode([item]),
                    "token_ids": [item],
                    "finish_reason": None,
                }
                if first[0]:
                    choice["prompt_token_ids"] = body["prompt"]
                    first[0] = False
                return [
                    {"id": "cmpl-1", "object": "text_completion", "model": self.model_id, "choices": [choice]}
                ]
            kind, value = item
            if kind == "error":
                return [{"error": {"message": str(value), "type": "InternalServerError", "code": 500}}]
            reason = "length" if value.finish_reason == "length" else "stop"
            done = {"index": 0, "text": "", "token_ids": [], "finish_reason": reason, "stop_reason": None}
            usage = {"prompt_tokens": len(body["prompt"]), "completion_tokens": len(value.token_ids)}
            return [
                {"id": "cmpl-1", "object": "text_completion", "choices": [done], "usage": None},
                {"id": "cmpl-1", "object": "text_completion", "choices": [], "usage": usage},
            ]

        return httpx.Response(
            200, headers={"content-type": "text/event-stream"}, stream=_EventStream(self, request, events)
        )


class FakeSglang(FakeServer):
    generate_path = "/generate"
    schema_name = "sglang_generate.json"

    def route(self, method: str, path: str, body: Any) -> httpx.Response:
        if method == "GET" and path == "/model_info":
            return httpx.Response(
                200, json={"model_path": "/models/x", "tokenizer_path": "/models/x", "is_generation": True}
            )
        if method == "GET" and path == "/v1/models":
            card = {
                "id": self.model_id,
                "object": "model",
                "owned_by": "sglang",
                "root": "/models/x",
                "max_model_len": 2048,
            }
            return httpx.Response(200, json={"object": "list", "data": [card]})
        if method == "POST" and path == "/abort_request":
            self.aborted.append(body["rid"])
            return httpx.Response(200, json={})
        return super().route(method, path, body)

    def generate(self, body: dict[str, Any]) -> httpx.Response:
        params = body["sampling_params"]
        constraint = None
        if "structural_tag" in params:
            constraint = self.compile("structural_tag", params["structural_tag"], params.get("logit_bias"))
        elif "json_schema" in params:
            constraint = self.compile("json", params["json_schema"], params.get("logit_bias"))
        elif "ebnf" in params:
            constraint = self.compile("ebnf", params["ebnf"], params.get("logit_bias"))
        request = GenerationRequest(
            prompt_ids=body["input_ids"],
            max_new_tokens=params["max_new_tokens"],
            temperature=params["temperature"],
            top_p=params.get("top_p"),
            seed=params.get("sampling_seed"),
            stop_token_ids=params.get("stop_token_ids") or [],
            constraint=constraint,
        )
        ids: list[int] = []

        def events(item: Any) -> list[dict[str, Any]]:
            meta = {"id": body["rid"], "prompt_tokens": len(body["input_ids"]), "finish_reason": None}
            if isinstance(item, int):
                ids.append(item)
                meta["completion_tokens"] = len(ids)
                return [{"text": self.tokenizer.decode(ids), "output_ids": list(ids), "meta_info": meta}]
            kind, value = item
            if kind == "error":
                return [{"error": {"message": str(value), "type": "invalid_request_error", "code": 500}}]
            if value.finish_reason == "length":
                meta["finish_reason"] = {"type": "length", "length": len(ids)}
            else:
                meta["finish_reason"] = {"type": "stop", "matched": ids[-1] if ids else None}
            meta["completion_tokens"] = len(ids)
            return [{"text": self.tokenizer.decode(ids), "output_ids": list(ids), "meta_info": meta}]

        return httpx.Response(
            200, headers={"content-type": "text/event-stream"}, stream=_EventStream(self, request, events)
        )


__all__ = ["FakeServer", "FakeSglang", "FakeVllm"]
