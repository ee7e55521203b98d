"""``ServerEngine``: generation on a llama-server, vLLM or SGLang server, behind the same ``Engine`` interface.

The frontend renders the prompt to token ids with the served model's tokenizer (loaded here, without
weights), so the server receives exactly the ids the core built: untrusted text never goes through a
server's special-token parsing. The constraint goes as its source (``grammars()`` is None), in the
form the dialect takes. Every generation streams; the engine itself stops at the request's stop tokens
and stop strings and on cancel, by closing the stream, which makes the server abort the generation.

``get_server_engine`` shares one engine (one tokenizer, one connection pool) per server and options
across a process and returns the ``Frontend`` over it.
"""

from __future__ import annotations

import contextlib
import inspect
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx

from hermes_core.engines.base import Engine, EngineOutput, GenerationRequest
from hermes_core.engines.server.dialect import BodyContext, Dialect, ServerInfo, Step, detect_dialect
from hermes_core.engines.server.errors import ServerError, ServerModelMismatchError
from hermes_core.engines.server.http import Transport
from hermes_core.engines.server.tokenizer import load_server_tokenizer
from hermes_core.errors import UnsupportedOptionError
from hermes_core.format.tokenize import encode
from hermes_core.types import Usage

DIALECTS = ("llama-server", "vllm", "sglang")
_ALIASES = {"llama.cpp": "llama-server", "llamacpp": "llama-server", "llama_server": "llama-server"}
_PROBE = "<|im_start|>assistant\nThe quick brown fox, 42 times.<|im_end|>\n"
"""Text whose tokenization (special tokens parsed) must be the same on the server and locally."""
_FALLBACK_CONTEXT = 2048


def dialect_named(name: str) -> Dialect:
    """The dialect object for an option value (``llama-server``, ``vllm``, ``sglang``)."""
    name = _ALIASES.get(name, name)
    if name == "llama-server":
        from hermes_core.engines.server.llama_server import LlamaServer

        return LlamaServer()
    if name == "vllm":
        from hermes_core.engines.server.vllm import Vllm

        return Vllm()
    if name == "sglang":
        from hermes_core.engines.server.sglang import Sglang

        return Sglang()
    raise UnsupportedOptionError(
        f"Unknown server dialect {name!r}; pass dialect='auto' (detect), 'llama-server', 'vllm' or 'sglang'."
    )


def check_base_url(base_url: Any) -> str:
    """``base_url`` if it is an http(s) URL with a host; else a one-line error naming the expected form."""
    try:
        url = httpx.URL(str(base_url))
    except Exception:
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        raise UnsupportedOptionError(
            f"base_url must be the server's http(s) address such as 'http://127.0.0.1:8080', got {base_url!r}."
        )
    return str(base_url).rstrip("/")


def check_dialect(dialect: str) -> str:
    name = _ALIASES.get(dialect, dialect)
    if name != "auto" and name not in DIALECTS:
        dialect_named(name)  # raises the error naming the choices
    return name


class ServerEngine(Engine):
    """Generates on a server that takes token-id prompts and a grammar (llama-server, vLLM, SGLang).

    ``model`` names the served model's tokenizer (None: the embedded SmolLM2, which llama-server can
    serve from the same GGUF). ``dialect='auto'`` asks the server which it is. Construction contacts
    the server: it fails fast, with one line, when the server is unreachable or serves a model whose
    tokenizer differs from ``model``'s. ``transport``/``async_transport`` replace httpx's network
    transports (tests use ``httpx.MockTransport``). ``cache_prompt=False`` (llama-server) evaluates
    every prompt in full: llama.cpp's logits depend in the last bits on how a prompt's evaluation was
    split between cached and new tokens, so only then do repeated requests reproduce exactly.
    """

    def __init__(
        self,
        base_url: str,
        *,
        model: Any = None,
        dialect: str = "auto",
        api_key: str | None = None,
        timeout: float | None = 600.0,
        max_retries: int = 2,
        max_connections: int = 64,
        transport: httpx.BaseTransport | None = None,
        async_transport: httpx.AsyncBaseTransport | None = None,
        tokenizer: Any = None,
        check_model: bool = True,
        cache_prompt: bool = True,
    ) -> None:
        self.base_url = check_base_url(base_url)
        name = check_dialect(dialect)
        if max_retries < 0:
            raise UnsupportedOptionError(f"max_retries must be >= 0, got {max_retries}.")
        if timeout is not None and timeout <= 0:
            raise UnsupportedOptionError(f"timeout must be > 0 seconds (or None), got {timeout}.")
        self.transport = Transport(
            self.base_url,
            api_key=api_key,
            timeout=timeout,
            max_retries=max_retries,
            transport=transport,
            async_transport=async_transport,
            max_connections=max_connections,
        )
        if name == "auto":
            name = detect_dialect(self.transport)
        self.dialect: Dialect = dialect_named(name)
        self.transport.server = self.dialect.server
        self.info: ServerInfo = self.dialect.describe(self.transport)
        loaded = tokenizer if tokenizer is not None else load_server_tokenizer(model)
        self.tokenizer = loaded.tokenizer
        self.model_name: str = loaded.model_name
        self.chat_tokens = loaded.chat_tokens
        self.stop_token_ids: list[int] = list(loaded.stop_token_ids)
        if check_model:
            self._check_model()
        self.context_window: int = self.info.context_window or _tokenizer_limit(self.tokenizer)
        self._context = BodyContext(self.info.model_id, self._banned_tokens(), cache_prompt)

    def __repr__(self) -> str:
        return f"ServerEngine({self.base_url!r}, dialect={self.dialect.name!r}, model={self.model_name!r})"

    # ------------------------------------------------------------------ checks
    def _check_model(self) -> None:
        """Refuse a server whose model tokenizes differently from the local tokenizer."""
        ours = len(self.tokenizer)
        what = f"the tokenizer of {self.model_name}"
        fix = f"pass model= the model the {self.dialect.server} serves ({self.info.model_id or 'see its /v1/models'})"
        theirs = self.dialect.tokenize(self.transport, _PROBE)
        if theirs is not None:
            expected = encode(self.tokenizer, _PROBE)
            if theirs != expected:
                raise ServerModelMismatchError(
                    f"The {self.dialect.server} at {self.base_url} serves a model that does not match {what}: "
                    f"the same text is tokens {theirs[:8]}... there and {expected[:8]}... here; {fix}."
                )
        vocab = self.info.vocab_size
        if vocab is not None and (vocab < ours or (theirs is None and vocab != ours)):
            raise ServerModelMismatchError(
                f"The {self.dialect.server} at {self.base_url} serves a model with {vocab} tokens but {what} "
                f"has {ours}; {fix}."
            )

    def _banned_tokens(self) -> list[int]:
        """Control tokens a constrained reply may not produce: every special token but the stop tokens."""
        from hermes_core.grammar import CALL_CLOSE, CALL_OPEN

        decoder = getattr(self.tokenizer, "added_tokens_decoder", None) or {}
        keep = set(self.stop_token_ids)
        return sorted(
            int(i)
            for i, added in decoder.items()
            if getattr(added, "special", False)
            and int(i) not in keep
            and getattr(added, "content", "") not in (CALL_OPEN, CALL_CLOSE)
        )

    # -------------------------------------------------------------- generation
    def generate(self, request: GenerationRequest) -> Iterator[EngineOutput]:
        """Stream the generation from the server; closing the iterator closes the HTTP stream."""
        run = _Run(self, request)
        body = self.dialect.body(request, self._context)
        if not request.cancel.is_set():
            try:
                with self.transport.events(
                    self.dialect.generate_path, body, self.dialect.stream_headers
                ) as events:
                    for event in events:
                        new = run.read(event)
                        if new:
                            yield EngineOutput(new)
                        if run.must_close():
                            break
            finally:
                if not run.server_finished:
                    with contextlib.suppress(Exception):
                        self.dialect.abort(self.transport, body)
        yield run.final()

    async def agenerate(self, request: GenerationRequest) -> AsyncIterator[EngineOutput]:
        """Native async streaming over the loop's pooled connections; cancelling the task closes the stream."""
        run = _Run(self, request)
        body = self.dialect.body(request, self._context)
        if not request.cancel.is_set():
            try:
                async with self.transport.aevents(
                    self.dialect.generate_path, body, self.dialect.stream_headers
                ) as events:
                    async for event in events:
                        new = run.read(event)
                        if new:
                            yield EngineOutput(new)
                        if run.must_close():
                            break
            finally:
                if not run.server_finished:
                    with contextlib.suppress(Exception):
                        await self.dialect.aabort(self.transport, body)
        yield run.final()

    def close(self) -> None:
        """Close the connection pool."""
        self.transport.close()


class _Run:
    """One generation's progress: tokens so far, and whether a stop token, stop string or the budget ended it."""

    def __init__(self, engine: ServerEngine, request: GenerationRequest) -> None:
        self.engine = engine
        self.request = request
        self.reader = engine.dialect.reader()
        self.stop_ids = set(request.stop_token_ids or engine.stop_token_ids)
        self.stops = [s for s in request.stop_strings if s]
        self.window = max((len(s) for s in self.stops), default=0) + 2
        self.ids: list[int] = []
        self.reason: str | None = None
        self.prompt_tokens: int | None = None
        self.finished = False
        self.server_finished = False
        self.server_ends_too = False
        self.overran = False

    def must_close(self) -> bool:
        """Whether to close the stream now: the reply ended (or was cancelled) before the server finished.

        After a stop token or at the token budget the server finishes too (it was told both, or ends a
        turn at the stop tokens), so the stream is read on until the server's own end unless more
        tokens come;
        once the server has finished, the rest of the stream is read, so the connection goes back to
        the pool. A stop string or a cancel closes the stream at once, which aborts the generation.
        """
        if self.server_finished:
            return False
        if self.request.cancel.is_set():
            return True
        return self.finished and (not self.server_ends_too or self.overran)

    def read(self, event: dict[str, Any]) -> list[int]:
        """The new token ids of ``event`` that belong to the reply (none after the reply ended)."""
        step: Step = self.reader.read(event)
        if step.prompt_tokens is not None:
            self.prompt_tokens = step.prompt_tokens
        new: list[int] = []
        for token in step.token_ids:
            if self.finished:
                self.overran = True  # the server goes on past our end: close the stream
                break
            new.append(token)
            self.ids.append(token)
            if token in self.stop_ids:
                self._finish("stop", server_ends_too=True)
            elif self._stop_string_ended():
                self._finish("stop")
            elif len(self.ids) >= self.request.max_new_tokens:
                self._finish("length", server_ends_too=True)
        if step.finish_reason is not None:
            self.server_finished = True
            if not self.finished:
                self._finish({"length": "length", "abort": "cancelled"}.get(step.finish_reason, "stop"))
        return new

    def _stop_string_ended(self) -> bool:
        if not self.stops:
            return False
        tail = self.engine.tokenizer.decode(self.ids[-self.window :], skip_special_tokens=False)
        return any(stop in tail for stop in self.stops)

    def _finish(self, reason: str, *, server_ends_too: bool = False) -> None:
        """End the reply; ``server_ends_too`` when the server stops here as well (stop token, budget)."""
        self.reason = reason
        self.finished = True
        self.server_ends_too = server_ends_too

    def final(self) -> EngineOutput:
        """The last output: why the generation ended and its token counts."""
        if self.request.cancel.is_set() and self.reason != "stop":
            reason = "cancelled"
        elif self.reason is None:
            raise ServerError(
                f"The {self.engine.dialect.server} at {self.engine.base_url} closed the stream before the "
                "generation finished; check the server's log."
            )
        else:
            reason = self.reason
        prompt = self.prompt_tokens if self.prompt_tokens is not None else len(self.request.prompt_ids)
        return EngineOutput([], reason, Usage(prompt_tokens=prompt, completion_tokens=len(self.ids)))  # type: ignore[arg-type]


def _tokenizer_limit(tokenizer: Any) -> int:
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and 0 < limit < 10_000_000 else _FALLBACK_CONTEXT


# ------------------------------------------------------------------ registry
_SERVER_ENGINES: dict[Any, ServerEngine] = {}
_FRONTENDS: dict[Any, Any] = {}
_LOCK = threading.Lock()
_LOCAL_ONLY = {
    "quantization": "the server loads its own weights",
    "device_map": "the server places its own weights",
    "torch_dtype": "the server chooses its own dtype",
    "prefix_cache": "the server keeps its own prompt cache",
    "prefix_cache_size": "the server keeps its own prompt cache",
}


def get_server_engine(
    model: Any = None,
    *,
    base_url: str,
    dialect: str = "auto",
    api_key: str | None = None,
    timeout: float | None = 600.0,
    max_retries: int = 2,
    cache_prompt: bool = True,
    constrained: bool = True,
    max_new_tokens: int = 512,
    temperature: float = 0.0,
    top_p: float | None = None,
    repetition_penalty: float | None = None,
    variant: Any = "auto",
    reasoning: bool | None = None,
    reasoning_budget: int | None = None,
    **local_options: Any,
) -> Any:
    """The process-wide ``Frontend`` over a ``ServerEngine`` for this server and options.

    One ``ServerEngine`` (tokenizer, connection pools) is shared by every frontend on the same server,
    tokenizer, dialect and connection options.
    """
    from hermes_core.frontend import Frontend

    for option in local_options:
        reason = _LOCAL_ONLY.get(option)
        if reason is None:
            known = ", ".join(
                sorted(set(inspect.signature(get_server_engine).parameters) - {"local_options"})
            )
            raise UnsupportedOptionError(
                f"Unknown option {option!r} for a server engine; options are: {known}."
            )
        raise UnsupportedOptionError(
            f"{option} does not apply with base_url ({reason}); remove it or drop base_url to run locally."
        )
    url = check_base_url(base_url)
    name = check_dialect(dialect)
    model_key = None if model is None else str(model)
    engine_key = (url, model_key, name, api_key, timeout, max_retries, cache_prompt)
    frontend_key = (
        engine_key,
        constrained,
        max_new_tokens,
        temperature,
        top_p,
        repetition_penalty,
        repr(variant),
        reasoning,
        reasoning_budget,
    )
    with _LOCK:
        frontend = _FRONTENDS.get(frontend_key)
        engine = _SERVER_ENGINES.get(engine_key)
    if frontend is not None:
        return frontend
    if engine is None:
        engine = ServerEngine(
            url,
            model=model,
            dialect=name,
            api_key=api_key,
            timeout=timeout,
            max_retries=max_retries,
            cache_prompt=cache_prompt,
        )
        with _LOCK:
            engine = _SERVER_ENGINES.setdefault(engine_key, engine)
    frontend = Frontend(
        engine,
        constrained=constrained,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        repetition_penalty=repetition_penalty,
        variant=variant,
        reasoning=reasoning,
        reasoning_budget=reasoning_budget,
    )
    with _LOCK:
        return _FRONTENDS.setdefault(frontend_key, frontend)
