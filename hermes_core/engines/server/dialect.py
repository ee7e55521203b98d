"""What differs between servers: the endpoint, the request body, the streamed events, the server facts.

A ``Dialect`` turns a ``GenerationRequest`` into one server's request body (prompt as token ids,
sampling, stop tokens, the constraint in the form that server takes) and reads its streamed events
back into token ids and a finish reason. ``llama_server``, ``vllm`` and ``sglang`` implement it;
``detect_dialect`` asks a server which one it is.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from hermes_core.engines.base import GenerationRequest
from hermes_core.engines.server.errors import ServerError, ServerHTTPError
from hermes_core.engines.server.http import Transport


@dataclass
class ServerInfo:
    """What a server says about itself (None where it does not say)."""

    model_id: str | None = None
    context_window: int | None = None
    vocab_size: int | None = None
    slots: int | None = None
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass
class BodyContext:
    """Per-engine facts a request body needs beyond the request itself."""

    model_id: str | None
    banned_token_ids: list[int]
    """Control tokens a constrained reply may not contain (its grammar reads them as text)."""
    cache_prompt: bool = True
    """llama-server: reuse the slot's KV cache for a shared prompt prefix."""


@dataclass
class Step:
    """What one streamed event adds: new token ids, and at the end the finish reason and prompt size."""

    token_ids: list[int]
    finish_reason: str | None = None
    """``stop`` (end of turn, stop token or stop string), ``length`` or ``abort``; None until the end."""
    prompt_tokens: int | None = None


class EventReader(ABC):
    """Reads one generation's events (a fresh reader per request: some servers send running totals)."""

    @abstractmethod
    def read(self, event: dict[str, Any]) -> Step:
        """The new tokens (and finish) in ``event``."""


class Dialect(ABC):
    """One server's API for token-id generation with a constraint."""

    name: ClassVar[str]
    """The option value: ``llama-server``, ``vllm`` or ``sglang``."""
    server: ClassVar[str]
    """The server's name in messages."""
    generate_path: ClassVar[str]
    stream_headers: ClassVar[dict[str, str]] = {}
    """Extra headers of a generation request."""

    @abstractmethod
    def describe(self, transport: Transport) -> ServerInfo:
        """Ask the server for its model, context window and vocabulary size."""

    def tokenize(self, transport: Transport, text: str) -> list[int] | None:
        """The server's token ids of ``text`` with special tokens parsed (None where it cannot say)."""
        return None

    @abstractmethod
    def body(self, request: GenerationRequest, context: BodyContext) -> dict[str, Any]:
        """The streaming request body for ``request``."""

    @abstractmethod
    def reader(self) -> EventReader:
        """A reader for one generation's events."""

    def abort(self, transport: Transport, body: dict[str, Any]) -> None:
        """Stop a generation whose stream was closed early, where closing alone is slow to (SGLang)."""
        return None

    async def aabort(self, transport: Transport, body: dict[str, Any]) -> None:
        """Async ``abort``."""
        return None


def optional_get(transport: Transport, path: str) -> Any:
    """GET ``path``, or None when the server does not have it (404/405)."""
    try:
        return transport.get(path)
    except ServerHTTPError as exc:
        if exc.status_code in (404, 405, 501):
            return None
        raise


def positive_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def first_model(models: Any) -> dict[str, Any]:
    """The first entry of an OpenAI ``/v1/models`` answer ({} when there is none)."""
    data = models.get("data") if isinstance(models, dict) else None
    return data[0] if isinstance(data, list) and data and isinstance(data[0], dict) else {}


def detect_dialect(transport: Transport) -> str:
    """Which server answers at ``transport.base_url``: from ``/v1/models``' owner, else server-only routes."""
    models = optional_get(transport, "/v1/models")
    owner = str(first_model(models).get("owned_by", "")).lower()
    if owner == "llamacpp":
        return "llama-server"
    if owner == "vllm":
        return "vllm"
    if owner == "sglang":
        return "sglang"
    props = optional_get(transport, "/props")
    if isinstance(props, dict) and "default_generation_settings" in props:
        return "llama-server"
    info = optional_get(transport, "/model_info")
    if isinstance(info, dict) and "model_path" in info:
        return "sglang"
    raise ServerError(
        f"Cannot tell which server runs at {transport.base_url} (its /v1/models names owner {owner or 'none'!r}); "
        "pass dialect='llama-server', 'vllm' or 'sglang'."
    )


def tokenize_or_none(transport: Transport, path: str, body: dict[str, Any]) -> list[int] | None:
    """The server's ``tokens`` for ``body`` posted to ``path``; None where it has no such endpoint."""
    try:
        answer = transport.post(path, body)
    except ServerHTTPError as exc:
        if exc.status_code in (404, 405, 501):
            return None
        raise
    tokens = answer.get("tokens") if isinstance(answer, dict) else None
    return [int(t) for t in tokens] if isinstance(tokens, list) else None


BANNED_BIAS = -100.0
"""OpenAI's strongest negative logit bias: the token is never sampled."""


def banned_bias(token_ids: list[int]) -> dict[str, float]:
    """An OpenAI-style ``logit_bias`` (vLLM, SGLang) that bans ``token_ids``."""
    return {str(token): BANNED_BIAS for token in token_ids}


def sampling_params(request: GenerationRequest) -> dict[str, Any]:
    """The sampling parameters vLLM and SGLang share (vLLM's ``SamplingParams`` names), every one explicit
    so the server's defaults cannot change a reply; special tokens stay in the stream, as ids and as text."""
    return {
        "temperature": request.temperature,
        "top_p": request.top_p if request.top_p is not None else 1.0,
        "min_p": 0.0,
        "repetition_penalty": request.repetition_penalty if request.repetition_penalty is not None else 1.0,
        "stop_token_ids": list(request.stop_token_ids),
        "skip_special_tokens": False,
        "spaces_between_special_tokens": False,
    }


def finish_reason(reason: Any) -> str:
    """A server's finish reason as a ``Step``'s: ``length``, ``abort``, else ``stop``."""
    return reason if reason in ("length", "abort") else "stop"
