"""The engine interface: what the request frontend hands an engine, and what it gets back.

The frontend (``hermes_core.frontend``) does everything about formats: it renders the prompt to token
ids, builds the constraint, detokenizes, parses and validates. An engine only turns a
``GenerationRequest`` into generated token ids, streamed as ``EngineOutput``s whose last one says why
generation ended and what it cost. ``LocalEngine`` (transformers, in process) implements it; an engine
behind a server can implement ``agenerate`` natively and send the constraint's ``source`` over the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from hermes_core.types import Usage

EngineFinishReason = Literal["stop", "length", "cancelled"]


@dataclass(frozen=True)
class Constraint:
    """What generated text must match, in two forms: compiled for local decoding, and its source.

    ``kind`` says what ``source`` is: ``structural_tag`` (xgrammar's structural tag as JSON, the form
    vLLM and SGLang accept) or ``json_schema`` (a JSON schema the reply is one compact value of).
    ``compiled`` is the ``xgrammar.CompiledGrammar`` an in-process engine masks logits with (None when
    the engine compiles nothing itself).
    """

    kind: Literal["structural_tag", "json_schema"]
    source: dict[str, Any]
    compiled: Any = None


@dataclass
class GenerationRequest:
    """One generation as an engine sees it: token ids in, sampling settings, stop conditions.

    Generation ends at a token in ``stop_token_ids``, once the output text contains one of
    ``stop_strings`` (the frontend cuts the text there; the engine only has to stop soon after),
    after ``max_new_tokens``, or when ``cancel`` is set. ``chunk_starts`` are the prompt's turn
    boundaries, where an engine with a prefix cache splits its prefill (others ignore them).
    """

    prompt_ids: list[int]
    max_new_tokens: int
    temperature: float = 0.0
    top_p: float | None = None
    repetition_penalty: float | None = None
    seed: int | None = None
    stop_token_ids: list[int] = field(default_factory=list)
    stop_strings: list[str] = field(default_factory=list)
    constraint: Constraint | None = None
    chunk_starts: list[int] = field(default_factory=list)
    cancel: threading.Event = field(default_factory=threading.Event)


@dataclass
class EngineOutput:
    """Token ids generated since the previous output; the last output also has a finish reason and usage."""

    token_ids: list[int]
    finish_reason: EngineFinishReason | None = None
    usage: Usage | None = None


class Engine(ABC):
    """Generates token ids for prepared requests; knows nothing about prompts, tool calls or parsing.

    Besides ``generate`` the frontend reads the tokenizer (to render and detokenize), the special
    token ids, the context window, and ``grammars()`` (the grammar compiler for constraints).
    """

    model_name: str
    tokenizer: Any
    """A Hugging Face tokenizer of the model (``encode``/``decode``/``__call__``)."""
    context_window: int
    stop_token_ids: list[int]
    """Tokens that end an assistant turn (``<|im_end|>``, EOS, ...)."""
    chat_tokens: Any
    """Ids of ``<|im_start|>`` and ``<|im_end|>`` (``.im_start`` / ``.im_end``, None where not single tokens)."""

    def grammars(self) -> Any:
        """The ``GrammarCache`` that compiles constraints for this tokenizer, or None (source only)."""
        return None

    @abstractmethod
    def generate(self, request: GenerationRequest) -> Iterator[EngineOutput]:
        """Generate for ``request``, yielding token ids as they come; the last output has the finish reason.

        Closing the iterator early stops generation (as setting ``request.cancel`` does).
        """

    async def agenerate(self, request: GenerationRequest) -> AsyncIterator[EngineOutput]:
        """Async ``generate``; by default ``generate`` runs on a worker thread so the event loop never blocks."""
        loop = asyncio.get_running_loop()
        outputs: asyncio.Queue[Any] = asyncio.Queue()
        left = threading.Event()

        def deliver(item: Any) -> None:
            try:
                loop.call_soon_threadsafe(outputs.put_nowait, item)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                left.set()
                request.cancel.set()

        def pump() -> None:
            try:
                with contextlib.closing(self.generate(request)) as generated:  # type: ignore[type-var]
                    for output in generated:
                        if left.is_set():
                            break
                        deliver(output)
            except BaseException as exc:  # handed to the event loop and re-raised there
                deliver(_Failure(exc))
            finally:
                deliver(_END)

        thread = threading.Thread(target=pump, name="hermes-agenerate", daemon=True)
        thread.start()
        try:
            while True:
                item = await outputs.get()
                if item is _END:
                    break
                if isinstance(item, _Failure):
                    raise item.error
                yield item
        finally:
            left.set()
            request.cancel.set()


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


_END = object()
