"""Errors of the server engine, one class per thing a user must fix: each message is one line naming it."""

from __future__ import annotations

from hermes_core.errors import HermesError


class ServerError(HermesError, RuntimeError):
    """A generation server could not serve a request (base class of the errors below)."""


class ServerUnreachableError(ServerError):
    """No connection to the server (refused, no such host, timed out) after every retry."""


class ServerModelMismatchError(ServerError):
    """The server's model does not use the tokenizer the prompt is rendered with."""


class ServerGrammarError(ServerError):
    """The server refused the grammar (no grammar backend, or a grammar it cannot parse)."""


class ServerHTTPError(ServerError):
    """The server answered with an HTTP error; the message is the server's own."""

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code
