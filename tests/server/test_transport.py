"""The server engine's HTTP behaviour, against scripted servers (``httpx.MockTransport``) and a closed port.

Each failure a user can meet must surface as one line naming the fix: an unreachable server (with its
URL, after retrying with backoff), a server that serves another model, a server that refuses the
grammar, any other HTTP error (the server's own message), a stream cut short. Retries must cover
connection failures and 503 (still loading) only.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from hermes_core.engines.base import GenerationRequest
from hermes_core.engines.server.engine import ServerEngine, get_server_engine
from hermes_core.engines.server.errors import (
    ServerError,
    ServerGrammarError,
    ServerHTTPError,
    ServerModelMismatchError,
    ServerUnreachableError,
)
from hermes_core.errors import UnsupportedOptionError

URL = "http://scripted:8000"


def _sse(*events: Any, done: bool = True) -> bytes:
    lines = [f"data: {json.dumps(e)}\n\n" for e in events]
    return ("".join(lines) + ("data: [DONE]\n\n" if done else "")).encode()


class Scripted:
    """A vLLM-shaped server whose answers the test decides; records every request."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.requests: list[httpx.Request] = []
        self.generate: Callable[[dict[str, Any]], httpx.Response] = self.ok
        self.tokenize: Callable[[str], list[int]] = lambda text: tokenizer(text, add_special_tokens=False)[
            "input_ids"
        ]
        self.models: dict[str, Any] = {"data": [{"id": "m", "owned_by": "vllm", "max_model_len": 4096}]}

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path == "/v1/models":
            return httpx.Response(200, json=self.models)
        if request.url.path == "/tokenize":
            return httpx.Response(200, json={"tokens": self.tokenize(json.loads(request.content)["prompt"])})
        if request.url.path == "/v1/completions":
            return self.generate(json.loads(request.content))
        return httpx.Response(404, json={"detail": "Not Found"})

    def ok(self, body: dict[str, Any]) -> httpx.Response:
        ids = self.tokenizer("Hello there", add_special_tokens=False)["input_ids"]
        events = [{"choices": [{"index": 0, "token_ids": [t], "finish_reason": None}]} for t in ids]
        events.append({"choices": [{"index": 0, "token_ids": [], "finish_reason": "stop"}]})
        return httpx.Response(200, content=_sse(*events))

    def engine(self, **options: Any) -> ServerEngine:
        transport = httpx.MockTransport(self.handler)
        return ServerEngine(
            URL,
            dialect=options.pop("dialect", "vllm"),
            tokenizer=options.pop("tokenizer", None) or self.server_tokenizer,
            transport=transport,
            async_transport=transport,
            **options,
        )


@pytest.fixture
def scripted(tiny_tokenizer) -> Scripted:
    server = Scripted(tiny_tokenizer.tokenizer)
    server.server_tokenizer = tiny_tokenizer  # type: ignore[attr-defined]
    return server


def _request(engine: ServerEngine, **options: Any) -> GenerationRequest:
    ids = engine.tokenizer("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")["input_ids"]
    return GenerationRequest(prompt_ids=ids, max_new_tokens=options.pop("max_new_tokens", 16), **options)


def _text(engine: ServerEngine, request: GenerationRequest) -> tuple[str, Any]:
    outputs = list(engine.generate(request))
    ids = [t for o in outputs for t in o.token_ids]
    return engine.tokenizer.decode(ids), outputs[-1]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens once the socket is closed


def test_an_unreachable_server_is_named_after_retrying(tiny_tokenizer) -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(
        ServerUnreachableError,
        match=rf"Cannot reach the vLLM server at {re.escape(url)} .*2 attempts.*start the server",
    ):
        ServerEngine(url, dialect="vllm", tokenizer=tiny_tokenizer, max_retries=1)


def test_base_url_dialect_and_limits_are_checked_before_any_connection(tiny_tokenizer) -> None:
    with pytest.raises(UnsupportedOptionError, match="base_url must be the server's http"):
        ServerEngine("127.0.0.1:8080", tokenizer=tiny_tokenizer)
    with pytest.raises(UnsupportedOptionError, match="Unknown server dialect 'tgi'"):
        ServerEngine("http://127.0.0.1:9", dialect="tgi", tokenizer=tiny_tokenizer)
    with pytest.raises(UnsupportedOptionError, match="max_retries must be >= 0"):
        ServerEngine("http://127.0.0.1:9", max_retries=-1, tokenizer=tiny_tokenizer)
    with pytest.raises(UnsupportedOptionError, match="quantization does not apply with base_url"):
        get_server_engine(base_url="http://127.0.0.1:9", quantization="4bit")
    with pytest.raises(UnsupportedOptionError, match=r"Unknown option 'temprature'.*temperature"):
        get_server_engine(base_url="http://127.0.0.1:9", temprature=0.5)


def test_503_and_connection_failures_are_retried_then_served(scripted) -> None:
    failures = iter(
        [httpx.ConnectError("refused"), httpx.Response(503, json={"error": {"message": "Loading model"}})]
    )
    plain = scripted.handler

    attempts = []

    def flaky(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/completions":
            attempts.append(request)
            step = next(failures, None)
            if isinstance(step, Exception):
                raise step
            if step is not None:
                return step
        return plain(request)

    scripted.handler = flaky  # type: ignore[method-assign]
    engine = scripted.engine(max_retries=2)
    engine.transport.backoff = 0.01
    text, final = _text(engine, _request(engine))
    assert text == "Hello there" and final.finish_reason == "stop"
    assert len(attempts) == 3


def test_the_servers_http_error_message_is_surfaced(scripted) -> None:
    scripted.generate = lambda body: httpx.Response(
        400, json={"error": {"message": "This model's maximum context length is 4096 tokens", "code": 400}}
    )
    engine = scripted.engine()
    with pytest.raises(
        ServerHTTPError, match=r"answered 400 to /v1/completions: This model's maximum context"
    ) as info:
        _text(engine, _request(engine))
    assert info.value.status_code == 400


def test_a_refused_grammar_gets_its_own_error(scripted) -> None:
    scripted.generate = lambda body: httpx.Response(
        400, json={"error": {"message": "Invalid structural_tag: grammar backend not available"}}
    )
    engine = scripted.engine()
    with pytest.raises(ServerGrammarError, match=r"cannot take this grammar.*constrained=False"):
        _text(engine, _request(engine))


def test_an_error_event_inside_the_stream_is_raised(scripted) -> None:
    first = {"choices": [{"index": 0, "token_ids": [5], "finish_reason": None}]}
    scripted.generate = lambda body: httpx.Response(
        200, content=_sse(first, {"error": {"message": "CUDA out of memory", "code": 500}})
    )
    engine = scripted.engine()
    with pytest.raises(ServerHTTPError, match="answered 500 to /v1/completions: CUDA out of memory"):
        _text(engine, _request(engine))


def test_a_stream_that_ends_before_the_generation_is_an_error(scripted) -> None:
    first = {"choices": [{"index": 0, "token_ids": [5], "finish_reason": None}]}
    scripted.generate = lambda body: httpx.Response(200, content=_sse(first, done=False))
    engine = scripted.engine()
    with pytest.raises(ServerError, match="closed the stream before the generation finished"):
        _text(engine, _request(engine))


def test_comments_pings_and_split_data_lines_are_read_as_sse(scripted) -> None:
    ids = scripted.tokenizer("Hi", add_special_tokens=False)["input_ids"]
    chunk = json.dumps({"choices": [{"index": 0, "token_ids": ids, "finish_reason": None}]})
    head, tail = chunk.split(", ", 1)  # a data field over two lines is joined with a newline
    body = (
        ": ping\n\n"
        f"event: message\ndata: {head},\ndata: {tail}\n\n"
        ":\n\n"
        'data: {"choices": [{"index": 0, "token_ids": [], "finish_reason": "length"}]}\n\n'
        "data: [DONE]\n\n"
    )
    scripted.generate = lambda b: httpx.Response(200, content=body.encode())
    engine = scripted.engine()
    text, final = _text(engine, _request(engine))
    assert text == "Hi" and final.finish_reason == "length"


def test_a_server_with_another_tokenizer_is_refused_at_construction(scripted) -> None:
    scripted.tokenize = lambda text: [1, 2, 3]
    with pytest.raises(ServerModelMismatchError, match=r"does not match the tokenizer of .*pass model="):
        scripted.engine()


def test_the_api_key_is_sent_as_a_bearer_token_and_not_shown(scripted) -> None:
    engine = scripted.engine(api_key="sk-secret")
    _text(engine, _request(engine))
    assert {r.headers.get("authorization") for r in scripted.requests} == {"Bearer sk-secret"}
    assert "sk-secret" not in repr(engine)


def test_a_non_json_answer_names_the_url(scripted) -> None:
    scripted.models = None  # type: ignore[assignment]
    plain = scripted.handler

    def html(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, text="<html>proxy login</html>")
        return plain(request)

    scripted.handler = html  # type: ignore[method-assign]
    with pytest.raises(ServerError, match=rf"{URL} answered /v1/models with something that is not JSON"):
        scripted.engine()


def test_the_dialect_is_told_by_the_server(scripted, tiny_tokenizer) -> None:
    assert scripted.engine(dialect="auto").dialect.name == "vllm"
    scripted.models = {
        "data": [{"id": "x", "owned_by": "llamacpp", "meta": {"n_vocab": len(scripted.tokenizer)}}]
    }
    transport = httpx.MockTransport(
        lambda r: (
            httpx.Response(200, json=scripted.models) if r.url.path == "/v1/models" else httpx.Response(404)
        )
    )
    engine = ServerEngine(URL, tokenizer=tiny_tokenizer, transport=transport, check_model=False)
    assert engine.dialect.name == "llama-server"
    unknown = httpx.MockTransport(lambda r: httpx.Response(404))
    with pytest.raises(ServerError, match=r"Cannot tell which server runs at .*pass dialect="):
        ServerEngine(URL, tokenizer=tiny_tokenizer, transport=unknown)


async def test_async_streams_share_one_pool_per_event_loop(scripted) -> None:
    engine = scripted.engine()
    first = [o async for o in engine.agenerate(_request(engine))]
    second = [o async for o in engine.agenerate(_request(engine))]
    assert first[-1].finish_reason == second[-1].finish_reason == "stop"
    assert len(engine.transport._async_clients) == 1


class _Broken(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A response body that sends ``head`` and then fails with ``error`` (read sync or async)."""

    def __init__(self, head: bytes, error: Exception) -> None:
        self.head, self.error = head, error

    def __iter__(self):
        yield self.head
        raise self.error

    async def __aiter__(self):
        yield self.head
        raise self.error


async def _atext(engine: ServerEngine, request: GenerationRequest) -> tuple[str, Any]:
    outputs = [output async for output in engine.agenerate(request)]
    ids = [t for o in outputs for t in o.token_ids]
    return engine.tokenizer.decode(ids), outputs[-1]


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (httpx.ReadError("connection reset"), r"connection to the .* broke during /v1/completions .*retry"),
        (httpx.ReadTimeout("slow"), r"sent nothing for 600.0 s \(ReadTimeout\).*raise timeout="),
    ],
)
async def test_a_stream_broken_midway_is_one_line_sync_and_async(scripted, error, message) -> None:
    first = _sse({"choices": [{"index": 0, "token_ids": [5], "finish_reason": None}]}, done=False)
    scripted.generate = lambda body: httpx.Response(200, stream=_Broken(first, error))
    engine = scripted.engine()
    with pytest.raises(ServerError, match=message):
        _text(engine, _request(engine))
    with pytest.raises(ServerError, match=message):
        await _atext(engine, _request(engine))


async def test_a_last_event_without_its_blank_line_is_read_sync_and_async(scripted) -> None:
    ids = scripted.tokenizer("Hi", add_special_tokens=False)["input_ids"]
    body = _sse({"choices": [{"index": 0, "token_ids": ids, "finish_reason": None}]}, done=False)
    body += b'data: {"choices": [{"index": 0, "token_ids": [], "finish_reason": "length"}]}'
    scripted.generate = lambda b: httpx.Response(200, content=body)
    engine = scripted.engine()
    assert _text(engine, _request(engine))[0] == "Hi"
    assert _text(engine, _request(engine))[1].finish_reason == "length"
    text, final = await _atext(engine, _request(engine))
    assert text == "Hi" and final.finish_reason == "length"
