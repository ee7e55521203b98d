"""HTTP to a generation server: pooled httpx clients, timeouts, retries, bearer auth, SSE, clear errors.

One ``Transport`` per engine holds one ``httpx.Client`` (thread-safe, shared by every sync request)
and one ``httpx.AsyncClient`` per event loop (an async connection pool belongs to the loop that made
it). Connection failures before the server has the request (refused, no route, connect timeout, a
pooled connection the server had already closed) and 503 answers (a server still loading) are
retried with exponential backoff; nothing is retried once the server may have started generating.
Leaving a stream early closes its response, which closes the connection: llama-server, vLLM and
SGLang all abort a generation whose client has gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import weakref
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx

from hermes_core.engines.server.errors import (
    ServerError,
    ServerGrammarError,
    ServerHTTPError,
    ServerUnreachableError,
)

_RETRIED = (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError, httpx.PoolTimeout)
_GRAMMAR_WORDS = ("grammar", "structured output", "structured_output", "structural_tag", "ebnf", "xgrammar")


class Transport:
    """Requests to one server: JSON calls and server-sent-event streams, sync and async."""

    def __init__(
        self,
        base_url: str,
        *,
        server: str = "server",
        api_key: str | None = None,
        timeout: float | None = 600.0,
        max_retries: int = 2,
        backoff: float = 0.5,
        transport: httpx.BaseTransport | None = None,
        async_transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 64,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.server = server
        self.max_retries = max_retries
        self.backoff = backoff
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        connect = 10.0 if timeout is None else min(10.0, timeout)
        self._options: dict[str, Any] = {
            "base_url": self.base_url,
            "headers": headers,
            "timeout": httpx.Timeout(timeout, connect=connect),
            "limits": httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
        }
        self._async_transport = async_transport
        self.timeout = timeout
        self.client = httpx.Client(transport=transport, **self._options)
        self._async_clients: weakref.WeakKeyDictionary[Any, httpx.AsyncClient] = weakref.WeakKeyDictionary()

    def _aclient(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        client = self._async_clients.get(loop)
        if client is None:
            client = httpx.AsyncClient(transport=self._async_transport, **self._options)
            self._async_clients[loop] = client
        return client

    def close(self) -> None:
        """Close the sync connection pool (async pools close with their event loop)."""
        self.client.close()

    # ------------------------------------------------------------------ errors
    def _unreachable(self, error: Exception, attempts: int) -> ServerUnreachableError:
        reason = str(error).strip() or type(error).__name__
        return ServerUnreachableError(
            f"Cannot reach the {self.server} at {self.base_url} ({reason}; {attempts} attempt"
            f"{'s' if attempts != 1 else ''}); start the server or fix base_url."
        )

    def _timed_out(self, error: Exception) -> ServerError:
        return ServerError(
            f"The {self.server} at {self.base_url} sent nothing for {self.timeout} s ({type(error).__name__}); "
            "it may be overloaded, or raise timeout=."
        )

    def http_error(self, status: int, body: bytes, path: str) -> ServerError:
        """The server's own error message as an exception (grammar refusals get their own class)."""
        message = error_message(body) or f"HTTP {status}"
        text = f"The {self.server} at {self.base_url} answered {status} to {path}: {message}"
        if status in (400, 422, 500, 501) and any(word in message.lower() for word in _GRAMMAR_WORDS):
            return ServerGrammarError(
                f"{text} (the server cannot take this grammar: check it was started with a grammar "
                "backend, or pass constrained=False)"
            )
        return ServerHTTPError(text, status)

    def _send_failed(self, error: Exception, attempt: int) -> None:
        """Raise for a request that could not be sent, unless it is retried (a retried failure, attempts left)."""
        if isinstance(error, _RETRIED):
            if attempt >= self.max_retries:
                raise self._unreachable(error, attempt + 1) from error
            return
        raise self._timed_out(error) from error

    @contextlib.contextmanager
    def _stream_errors(self, path: str) -> Iterator[None]:
        """Turn a timeout or a broken connection while a response is read into a one-line ``ServerError``."""
        try:
            yield
        except httpx.TimeoutException as exc:
            raise self._timed_out(exc) from exc
        except httpx.TransportError as exc:
            raise ServerError(
                f"The connection to the {self.server} at {self.base_url} broke during {path} "
                f"({type(exc).__name__}: {exc}); retry the request."
            ) from exc

    def _delay(self, attempt: int) -> float:
        return self.backoff * (2**attempt)

    # ------------------------------------------------------------------- sync
    def get(self, path: str) -> Any:
        """GET ``path`` and return its JSON (``ServerHTTPError`` on an error status)."""
        return self._json("GET", path, None)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        """POST ``body`` as JSON and return the JSON answer."""
        return self._json("POST", path, body)

    def _json(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
        with self._open(method, path, body, None) as response:
            response.read()
            return _decode_json(response, self, path)

    @contextlib.contextmanager
    def _open(
        self, method: str, path: str, body: dict[str, Any] | None, headers: dict[str, str] | None
    ) -> Iterator[httpx.Response]:
        """An open response with a success status, after retrying connection failures and 503s."""
        attempt = 0
        while True:
            try:
                request = self.client.build_request(method, path, json=body, headers=headers)
                response = self.client.send(request, stream=True)
            except (*_RETRIED, httpx.TimeoutException) as exc:
                self._send_failed(exc, attempt)
            else:
                if response.status_code == 503 and attempt < self.max_retries:
                    response.close()
                elif response.status_code >= 400:
                    try:
                        raise self.http_error(response.status_code, response.read(), path)
                    finally:
                        response.close()
                else:
                    try:
                        with self._stream_errors(path):
                            yield response
                    finally:
                        response.close()
                    return
            time.sleep(self._delay(attempt))
            attempt += 1

    @contextlib.contextmanager
    def events(
        self, path: str, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> Iterator[Iterator[dict[str, Any]]]:
        """POST ``body`` and yield its server-sent events' JSON; leaving the block closes the stream."""
        with self._open("POST", path, body, headers) as response:
            yield _sse(response.iter_lines(), self, path)

    # ------------------------------------------------------------------ async
    async def aget(self, path: str) -> Any:
        return await self._ajson("GET", path, None)

    async def apost(self, path: str, body: dict[str, Any]) -> Any:
        return await self._ajson("POST", path, body)

    async def _ajson(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
        async with self._aopen(method, path, body, None) as response:
            await response.aread()
            return _decode_json(response, self, path)

    @contextlib.asynccontextmanager
    async def _aopen(
        self, method: str, path: str, body: dict[str, Any] | None, headers: dict[str, str] | None
    ) -> AsyncIterator[httpx.Response]:
        client = self._aclient()
        attempt = 0
        while True:
            try:
                request = client.build_request(method, path, json=body, headers=headers)
                response = await client.send(request, stream=True)
            except (*_RETRIED, httpx.TimeoutException) as exc:
                self._send_failed(exc, attempt)
            else:
                if response.status_code == 503 and attempt < self.max_retries:
                    await response.aclose()
                elif response.status_code >= 400:
                    try:
                        raise self.http_error(response.status_code, await response.aread(), path)
                    finally:
                        await response.aclose()
                else:
                    try:
                        with self._stream_errors(path):
                            yield response
                    finally:
                        await response.aclose()
                    return
            await asyncio.sleep(self._delay(attempt))
            attempt += 1

    @contextlib.asynccontextmanager
    async def aevents(
        self, path: str, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
        """Async ``events``: leaving the block (or cancelling the task) closes the stream."""
        async with self._aopen("POST", path, body, headers) as response:
            yield _asse(response.aiter_lines(), self, path)


def error_message(body: bytes) -> str:
    """The message in an error body: OpenAI-style ``{"error": {"message"}}``, ``{"detail"}``, or the text."""
    text = body.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
    except ValueError:
        return " ".join(text.split())[:500]
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, dict):
            for key in ("message", "detail", "msg"):
                if error.get(key):
                    return _one_line(error[key])
        elif isinstance(error, str):
            return _one_line(error)
        if data.get("detail"):
            return _one_line(data["detail"])
    return " ".join(text.split())[:500]


def _one_line(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return " ".join(text.split())[:500]


def _decode_json(response: httpx.Response, transport: Transport, path: str) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        raise ServerError(
            f"The {transport.server} at {transport.base_url} answered {path} with something that is not "
            f"JSON ({response.text[:80]!r}); check base_url points at the server's root."
        ) from exc


def _event(data: str, transport: Transport, path: str) -> dict[str, Any] | None:
    """One event's JSON; None for the end marker; raises the server's in-stream error."""
    if data.strip() == "[DONE]":
        return None
    try:
        event = json.loads(data)
    except ValueError as exc:
        raise ServerError(
            f"The {transport.server} at {transport.base_url} sent an event that is not JSON on {path}: "
            f"{data[:80]!r}."
        ) from exc
    if isinstance(event, dict) and "error" in event and len(event) <= 2:
        raise transport.http_error(int(_status_of(event["error"])), json.dumps(event).encode(), path)
    return event


def _status_of(error: Any) -> int:
    if isinstance(error, dict):
        for key in ("code", "status_code"):
            if isinstance(error.get(key), int) and 400 <= error[key] < 600:
                return error[key]
    return 500


class _EventReader:
    """Server-sent events, line by line: ``data:`` lines joined per event; comments (``:``) and other fields
    skipped. After ``[DONE]`` the rest of the body is read (and ignored), so the connection can be reused."""

    def __init__(self, transport: Transport, path: str) -> None:
        self.transport = transport
        self.path = path
        self.data: list[str] = []
        self.done = False

    def line(self, line: str) -> dict[str, Any] | None:
        """The event ``line`` completes, if any."""
        if self.done:
            return None
        if line.startswith("data:"):
            self.data.append(line[5:].removeprefix(" "))
            return None
        if line or not self.data:
            return None  # a comment/ping, another field, or a blank line between events
        event = _event("\n".join(self.data), self.transport, self.path)
        self.data = []
        self.done = event is None
        return event

    def end(self) -> dict[str, Any] | None:
        """The last event when the body ends without the blank line that closes it."""
        if self.data and not self.done:
            return _event("\n".join(self.data), self.transport, self.path)
        return None


def _sse(lines: Iterator[str], transport: Transport, path: str) -> Iterator[dict[str, Any]]:
    """The JSON of each server-sent event in ``lines`` (see ``_EventReader``)."""
    reader = _EventReader(transport, path)
    for line in lines:
        if (event := reader.line(line)) is not None:
            yield event
    if (event := reader.end()) is not None:
        yield event


async def _asse(lines: AsyncIterator[str], transport: Transport, path: str) -> AsyncIterator[dict[str, Any]]:
    """Async ``_sse``."""
    reader = _EventReader(transport, path)
    async for line in lines:
        if (event := reader.line(line)) is not None:
            yield event
    if (event := reader.end()) is not None:
        yield event
