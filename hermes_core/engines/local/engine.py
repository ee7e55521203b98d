"""The local engine: transformers ``generate`` on one loaded model, with its KV and prefix caches.

It implements ``hermes_core.engines.base.Engine`` and knows nothing about prompts or tool calls: the
frontend hands it prompt token ids, an optional xgrammar constraint, sampling settings and stop
conditions. It prefills the prompt's earlier turns chunk by chunk (reusing chunks from the prefix
cache, stopping between chunks when cancelled), then runs ``model.generate`` with the grammar's
logits processor and streams the new token ids out of a worker thread.

Scheduling: one generation runs at a time per loaded model (a lock per model); other callers,
sync or async, wait their turn.
"""

from __future__ import annotations

import copy
import functools
import inspect
import queue
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from hermes_core.engines.base import Engine, EngineOutput, GenerationRequest
from hermes_core.engines.local.prefix_cache import PrefixCache
from hermes_core.types import Usage


@functools.cache
def _cache_argument_name() -> str:
    """transformers renamed ``past_key_values`` to ``cache`` (5.2x); use whichever this version has."""
    from transformers.generation.utils import GenerateDecoderOnlyOutput

    return "cache" if "cache" in GenerateDecoderOnlyOutput.__dataclass_fields__ else "past_key_values"


def _logits_to_keep(model: Any) -> dict[str, int]:
    """``logits_to_keep=1`` where the model takes it: prefill chunks need no logits at all."""
    accepts = "logits_to_keep" in inspect.signature(model.forward).parameters
    return {"logits_to_keep": 1} if accepts else {}


_MODEL_LOCKS: weakref.WeakKeyDictionary[Any, threading.Lock] = weakref.WeakKeyDictionary()
_MODEL_LOCKS_GUARD = threading.Lock()


def _lock_for(model: Any) -> threading.Lock:
    """The one lock serialising generations on ``model``, shared by every engine over it."""
    with _MODEL_LOCKS_GUARD:
        lock = _MODEL_LOCKS.get(model)
        if lock is None:
            lock = _MODEL_LOCKS[model] = threading.Lock()
        return lock


@dataclass
class EngineStats:
    """Counters for observability (and tests): prefix reuse and requests served."""

    requests: int = 0
    reused_prefix_tokens: int = 0
    prompt_tokens: int = 0
    last_completion_tokens: int = 0
    last_reused_prefix_tokens: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class _CancelCriteria:
    """Stops ``generate`` as soon as the consumer has gone away (or a stop sequence matched)."""

    def __init__(self, cancel: threading.Event) -> None:
        self._cancel = cancel

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        return torch.full(
            (input_ids.shape[0],), self._cancel.is_set(), dtype=torch.bool, device=input_ids.device
        )


class _StopStringCriteria:
    """Stops ``generate`` once the decoded tail of the output contains a stop sequence.

    transformers' own ``stop_strings`` precomputes tables over the whole vocabulary for every
    request (0.4-1 s for a 49k vocabulary); decoding the last few tokens per step costs microseconds.
    """

    def __init__(self, tokenizer: Any, stops: Sequence[str], prompt_length: int) -> None:
        self._tokenizer = tokenizer
        self._stops = list(stops)
        self._window = max(len(s) for s in stops) + 2
        self._prompt_length = prompt_length

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        tail_ids = input_ids[0, max(self._prompt_length, input_ids.shape[1] - self._window) :].tolist()
        tail = self._tokenizer.decode(tail_ids, skip_special_tokens=False)
        hit = any(stop in tail for stop in self._stops)
        return torch.full((input_ids.shape[0],), hit, dtype=torch.bool, device=input_ids.device)


class _TokenStreamer:
    """A transformers streamer that forwards each new token id to a callback."""

    def __init__(self, on_token: Callable[[int], None]) -> None:
        self._on_token = on_token
        self._skipped_prompt = False

    def put(self, value: Any) -> None:
        if not self._skipped_prompt:  # generate first pushes the prompt itself
            self._skipped_prompt = True
            return
        for token_id in value.reshape(-1).tolist():
            self._on_token(int(token_id))

    def end(self) -> None:
        pass


class LocalEngine(Engine):
    """Generates with transformers on a model loaded in this process (``load_model``'s ``LoadedModel``)."""

    def __init__(self, loaded: Any, *, prefix_cache: bool = True, prefix_cache_size: int = 4) -> None:
        self.loaded = loaded
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.model_name: str = loaded.model_name
        self.context_window: int = int(loaded.context_window)
        self.stop_token_ids: list[int] = list(loaded.stop_token_ids)
        self.chat_tokens = loaded.chat_tokens
        self.prefix_cache: PrefixCache | None = PrefixCache(prefix_cache_size) if prefix_cache else None
        self.stats = EngineStats()
        self._lock = _lock_for(self.model)
        self._grammar_cache: Any = None
        self._grammar_lock = threading.Lock()

    def grammars(self) -> Any:
        """The ``GrammarCache`` for this tokenizer and vocabulary, built on first use."""
        with self._grammar_lock:
            if self._grammar_cache is None:
                from hermes_core.grammar import GrammarCache

                vocab_size = int(getattr(self.model.config, "vocab_size", 0) or len(self.tokenizer))
                self._grammar_cache = GrammarCache(self.tokenizer, vocab_size, self.stop_token_ids)
            return self._grammar_cache

    def generate(self, request: GenerationRequest) -> Iterator[EngineOutput]:
        """Run ``model.generate`` on a worker thread and yield each token id as it is sampled."""
        tokens: queue.SimpleQueue[Any] = queue.SimpleQueue()
        outcome: dict[str, Any] = {}

        def work() -> None:
            try:
                outcome["final"] = self.run(request, tokens.put)
            except BaseException as exc:  # handed to the consumer thread and re-raised there
                outcome["error"] = exc
            finally:
                tokens.put(_END)

        worker = threading.Thread(target=work, name="hermes-generate", daemon=True)
        worker.start()
        try:
            while (item := tokens.get()) is not _END:
                yield EngineOutput([item])
            if "error" in outcome:
                raise outcome["error"]
            final = outcome["final"]
            yield EngineOutput([], final.finish_reason, final.usage)  # its tokens were yielded one by one
        finally:
            request.cancel.set()
            worker.join()

    def run(self, request: GenerationRequest, on_token: Callable[[int], None] | None = None) -> EngineOutput:
        """Generate for ``request`` on this thread under the model lock, calling ``on_token`` per new token.

        Returns every generated token id with the finish reason and usage.
        """
        import torch
        from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

        prompt_ids, cancel = request.prompt_ids, request.cancel
        stop_ids = request.stop_token_ids or self.stop_token_ids
        with self._lock:
            if cancel.is_set():
                return _outcome(request, [], stop_ids)
            starts = request.chunk_starts
            kv_cache, reused = self._prefill(prompt_ids, starts, cancel)
            if cancel.is_set():  # the consumer left while the earlier turns were prefilled
                if self.prefix_cache is not None and kv_cache is not None:
                    # What was computed ends at a chunk start: keep it for the next request.
                    self.prefix_cache.put(prompt_ids, kv_cache, kv_cache.get_seq_length())
                return _outcome(request, [], stop_ids)
            sampling = request.temperature > 0
            config = copy.deepcopy(self.model.generation_config) if self.model.generation_config else None
            config = config or GenerationConfig()
            config.update(
                max_new_tokens=request.max_new_tokens,
                min_new_tokens=None,
                max_length=None,
                do_sample=sampling,
                temperature=request.temperature if sampling else None,
                top_p=request.top_p if sampling else None,
                top_k=None,
                repetition_penalty=request.repetition_penalty,
                eos_token_id=stop_ids,
                pad_token_id=self.tokenizer.pad_token_id,
                return_dict_in_generate=True,
                output_scores=False,
            )
            processors = LogitsProcessorList()
            if request.constraint is not None:
                if request.constraint.compiled is None:
                    raise ValueError(
                        "LocalEngine needs a compiled constraint: build it with engine.grammars()."
                    )
                processors.append(self.grammars().logits_processor(request.constraint.compiled))
            if sampling and request.seed is not None:
                torch.manual_seed(request.seed)
            criteria: list[Any] = [_CancelCriteria(cancel)]
            if request.stop_strings:
                criteria.append(_StopStringCriteria(self.tokenizer, request.stop_strings, len(prompt_ids)))
            input_ids = torch.tensor([prompt_ids], dtype=torch.long, device=self.model.device)
            with torch.inference_mode():
                output = self.model.generate(
                    input_ids=input_ids,
                    attention_mask=torch.ones_like(input_ids),
                    generation_config=config,
                    logits_processor=processors,
                    stopping_criteria=StoppingCriteriaList(criteria),
                    streamer=_TokenStreamer(on_token) if on_token is not None else None,
                    **{_cache_argument_name(): kv_cache},
                )
            new_ids = output.sequences[0, len(prompt_ids) :].tolist()
            kv_cache = getattr(output, _cache_argument_name(), None)
            if self.prefix_cache is not None and kv_cache is not None and starts:
                # Only whole prompt chunks are stored: the last chunk and the generated tokens were
                # computed in shapes a later prompt would not reproduce.
                self.prefix_cache.put(prompt_ids, kv_cache, starts[-1])
            self.stats.requests += 1
            self.stats.reused_prefix_tokens += reused
            self.stats.prompt_tokens += len(prompt_ids)
            self.stats.last_completion_tokens = len(new_ids)
            self.stats.last_reused_prefix_tokens = reused
        return _outcome(request, new_ids, stop_ids)

    def _prefill(self, prompt_ids: list[int], starts: list[int], cancel: threading.Event) -> tuple[Any, int]:
        """KV of every prompt chunk but the last (reused from the prefix cache where possible).

        Returns the cache (one that appends in place, see ``kv_cache``) and how many tokens came
        from the prefix cache. Cold and warm requests run the same chunks, so their output is identical.
        Stops between chunks once ``cancel`` is set (a long prompt on a big model takes seconds).
        """
        import torch

        from hermes_core.engines.local.kv_cache import new_kv_cache

        hit = self.prefix_cache.take(prompt_ids, starts) if self.prefix_cache is not None else None
        reused = hit.length if hit is not None else 0
        cache = hit.cache if hit is not None else new_kv_cache(self.model)
        pending = [start for start in starts if start > reused]
        done = reused
        with torch.inference_mode():
            for start in pending:
                if cancel.is_set():
                    break
                chunk = torch.tensor([prompt_ids[done:start]], dtype=torch.long, device=self.model.device)
                self.model(
                    input_ids=chunk,
                    use_cache=True,
                    **{_cache_argument_name(): cache},
                    **_logits_to_keep(self.model),
                )
                done = start
        return cache, reused


def _outcome(request: GenerationRequest, new_ids: list[int], stop_ids: Sequence[int]) -> EngineOutput:
    """The last output of a generation: all its token ids, why it ended, and its token counts."""
    if request.cancel.is_set():
        reason = "cancelled"
    elif new_ids and new_ids[-1] in stop_ids:
        reason = "stop"
    elif len(new_ids) >= request.max_new_tokens:
        reason = "length"
    else:
        reason = "stop"  # a stop string matched
    usage = Usage(prompt_tokens=len(request.prompt_ids), completion_tokens=len(new_ids))
    return EngineOutput(new_ids, reason, usage)  # type: ignore[arg-type]


_END = object()
