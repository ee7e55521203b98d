"""The local engine: transformers models in this process, decoding concurrent requests together.

It implements ``hermes_core.engines.base.Engine`` and knows nothing about prompts or tool calls: the
frontend hands it prompt token ids, an optional xgrammar constraint, sampling settings and stop
conditions. Each request prefills its prompt chunk by chunk (reusing chunks from the prefix cache,
stopping between chunks when cancelled), then joins the running batch of its engine's scheduler
(``scheduler.py``), which decodes every active request one token per step (``batch_step.py``) and
streams each one's token ids to its caller.

Scheduling: continuous batching per engine (up to ``max_batch_size`` requests, FIFO beyond it); a
lock per model keeps engines sharing weights from running forward passes at the same time.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import queue
import threading
import weakref
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import Any

from hermes_core.engines.base import Engine, EngineOutput, GenerationRequest
from hermes_core.engines.local.prefix_cache import PrefixCache
from hermes_core.engines.local.scheduler import Scheduler, Submission, copy_prefix

DEFAULT_MAX_BATCH_SIZE = 8
# Prefill pieces at most this long: a request joining a running batch prefills one piece between
# two decode steps, so the batch waits for one piece, not a whole prompt.
DEFAULT_PREFILL_CHUNK_TOKENS = 512


def piece_ends(done: int, starts: list[int], total: int, piece_tokens: int | None) -> list[int]:
    """Where the prefill pieces after position ``done`` end: turn chunks (``starts``) cut every ``piece_tokens``."""
    bounds = [0, *starts, total]
    ends: list[int] = []
    for begin, end in itertools.pairwise(bounds):
        if end <= done:
            continue
        step = piece_tokens or end - begin
        ends.extend(cut for cut in range(begin + step, end, step) if cut > done)
        ends.append(end)
    return ends


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
    """Counters for observability (and tests): prefix reuse, requests served, batching."""

    requests: int = 0
    reused_prefix_tokens: int = 0
    prompt_tokens: int = 0
    last_completion_tokens: int = 0
    last_reused_prefix_tokens: int = 0
    decode_steps: int = 0
    peak_batch: int = 0
    shared_prefix_rows: int = 0  # requests that decoded over a SharedPrefix instead of their own copy
    extra: dict[str, Any] = field(default_factory=dict)


class LocalEngine(Engine):
    """Generates with transformers on a model loaded in this process (``load_model``'s ``LoadedModel``).

    ``max_batch_size`` requests decode together; ``kv_budget_tokens`` bounds the sum of their
    prompts and generation budgets (default: ``max_batch_size`` full context windows), a shared
    prompt prefix counted once. Requests beyond either wait, first come first served.
    ``prefill_chunk_tokens``: a request joining a running batch prefills at most this many prompt
    tokens between two decode steps (None: whole turn chunks); with ``fuse_prefill`` its last piece
    goes through the decode step with the running rows. ``share_prefixes``: requests decoding together over the same cached prompt chunks hold their KV
    once and attend over it together (``shared_prefix.py``; stock Llama models, prefix cache on).
    """

    def __init__(
        self,
        loaded: Any,
        *,
        prefix_cache: bool = True,
        prefix_cache_size: int = 4,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        kv_budget_tokens: int | None = None,
        share_prefixes: bool = True,
        prefill_chunk_tokens: int | None = DEFAULT_PREFILL_CHUNK_TOKENS,
        fuse_prefill: bool = True,
    ) -> None:
        if not isinstance(max_batch_size, int) or max_batch_size < 1:
            raise ValueError(f"max_batch_size must be a positive integer, got {max_batch_size!r}.")
        if kv_budget_tokens is not None and (not isinstance(kv_budget_tokens, int) or kv_budget_tokens < 1):
            raise ValueError(
                f"kv_budget_tokens must be a positive integer (or None for max_batch_size context windows), "
                f"got {kv_budget_tokens!r}."
            )
        if prefill_chunk_tokens is not None and (
            not isinstance(prefill_chunk_tokens, int) or prefill_chunk_tokens < 1
        ):
            raise ValueError(
                f"prefill_chunk_tokens must be a positive integer (or None for whole turn chunks), "
                f"got {prefill_chunk_tokens!r}."
            )
        self.prefill_chunk_tokens = prefill_chunk_tokens
        self.fuse_prefill = fuse_prefill
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
        self._lean_step: Any = None  # built on first use (see _one_token_step)
        budget = kv_budget_tokens if kv_budget_tokens is not None else max_batch_size * self.context_window
        self.scheduler = Scheduler(
            self, max_batch_size=max_batch_size, kv_budget_tokens=budget, share_prefixes=share_prefixes
        )

    def grammars(self) -> Any:
        """The ``GrammarCache`` for this tokenizer and vocabulary, built on first use."""
        with self._grammar_lock:
            if self._grammar_cache is None:
                from hermes_core.grammar import GrammarCache

                vocab_size = int(getattr(self.model.config, "vocab_size", 0) or len(self.tokenizer))
                self._grammar_cache = GrammarCache(self.tokenizer, vocab_size, self.stop_token_ids)
            return self._grammar_cache

    def generate(self, request: GenerationRequest) -> Iterator[EngineOutput]:
        """Queue ``request`` with the scheduler and yield each token id as it is sampled."""
        self._check(request)
        tokens: queue.SimpleQueue[Any] = queue.SimpleQueue()
        submission = Submission(request, tokens.put, on_finish=lambda: tokens.put(_END))
        self.scheduler.submit(submission)
        try:
            while (item := tokens.get()) is not _END:
                yield EngineOutput([item])
            if submission.error is not None:
                raise submission.error
            final = submission.final
            assert final is not None
            yield EngineOutput([], final.finish_reason, final.usage)  # its tokens were yielded one by one
        finally:
            request.cancel.set()
            submission.done.wait()

    def run(self, request: GenerationRequest, on_token: Callable[[int], None] | None = None) -> EngineOutput:
        """Generate for ``request`` (batched with whatever else runs), calling ``on_token`` per new token.

        Returns every generated token id with the finish reason and usage.
        """
        self._check(request)
        submission = Submission(request, on_token or (lambda token: None))
        self.scheduler.submit(submission)
        submission.done.wait()
        if submission.error is not None:
            raise submission.error
        assert submission.final is not None
        return submission.final

    def _check(self, request: GenerationRequest) -> None:
        """Reject what the scheduler could only fail on later, naming the fix."""
        if request.constraint is not None and request.constraint.compiled is None:
            raise ValueError("LocalEngine needs a compiled constraint: build it with engine.grammars().")

    # -- called by the scheduler, under the model lock ---------------------------------------------

    def _prefill_prompt(self, request: GenerationRequest) -> tuple[Any, int, Any, Any]:
        """Prefill the whole prompt at once: ``_prefill_pieces`` run to its end."""
        pieces = self._prefill_pieces(request)
        while True:
            try:
                next(pieces)
            except StopIteration as finished:
                return finished.value[:4]

    def _prefill_pieces(
        self, request: GenerationRequest, fuse_last: Callable[[], bool] | None = None
    ) -> Generator[None, None, tuple[Any, int, Any, Any, list[int]]]:
        """Prefill the prompt piece by piece, pausing (``yield``) after each piece but the last.

        Returns its cache, the tokens reused, the last token's logits, the shared prefix, and the
        ids of a last piece left to the caller: where ``fuse_last()`` says so when the last piece comes,
        it is not run here (logits None) but fed with the next decode step (``LlamaBatchStep.mixed``). The
        logits are None when the request was cancelled between pieces (what was computed is kept in
        the prefix cache). With a ``SharedPrefix`` the returned cache holds only the positions after it.
        Pieces are the prompt's turn chunks, each cut into pieces of at most ``prefill_chunk_tokens``
        from its start, the same cut whether the request is alone, joins a batch or reuses the prefix
        cache, so the KV of every chunk start is computed alike (see ``prefix_cache``).
        """
        prompt_ids, starts, cancel = request.prompt_ids, request.chunk_starts, request.cancel
        cache, reused, prefix = self._prefill_start(prompt_ids, starts)
        done = reused
        for end in piece_ends(done, starts, len(prompt_ids), self.prefill_chunk_tokens):
            if cancel.is_set():
                if self.prefix_cache is not None and cache.get_seq_length():
                    self.prefix_cache.put(prompt_ids, cache, cache.get_seq_length())
                return cache, reused, None, None, []
            if end == len(prompt_ids) and fuse_last is not None and fuse_last():
                if prefix is not None:
                    from hermes_core.engines.local.kv_cache import new_kv_cache
                    from hermes_core.engines.local.shared_prefix import suffix_cache

                    untouched = cache.get_seq_length() == prefix.length  # still the prefix by reference
                    cache = (
                        new_kv_cache(self.model)
                        if untouched
                        else suffix_cache(cache, prefix.length, self.model)
                    )
                return cache, reused, None, prefix, list(prompt_ids[done:end])
            logits = self._prefill_piece(prompt_ids[done:end], cache, last=end == len(prompt_ids))
            done = end
            if end < len(prompt_ids):
                yield
        if prefix is not None:
            from hermes_core.engines.local.shared_prefix import suffix_cache

            cache = suffix_cache(cache, prefix.length, self.model)  # the whole one was transient
        return cache, reused, logits, prefix, []

    def _prefill_piece(self, ids: list[int], cache: Any, last: bool) -> Any:
        """Feed ``ids`` to ``cache``; the last piece returns the logits of its last token."""
        from hermes_core.engines.local.batch_step import single_row_logits

        with _inference():
            if last:
                return single_row_logits(self.model, _cache_argument_name(), ids, cache)
            import torch

            chunk = torch.tensor([ids], dtype=torch.long, device=self.model.device)
            self.model(
                input_ids=chunk,
                use_cache=True,
                **{_cache_argument_name(): cache},
                **_logits_to_keep(self.model),
            )
            return None

    def _row_logits(self, tokens: list[int], cache: Any) -> Any:
        """Logits after feeding ``tokens`` to one request's cache: the model's own forward, or for one
        token of a model with lean decode layers its operations without the wrappers (``one_token``)."""
        from hermes_core.engines.local.batch_step import single_row_logits

        with _inference():
            if len(tokens) == 1 and (step := self._one_token_step()) is not None:
                return step.one_token(tokens[0], cache)
            return single_row_logits(self.model, _cache_argument_name(), tokens, cache)

    def _one_token_step(self) -> Any:
        """The Llama step whose ``one_token`` runs a lone request's decode, where the lean step is on; else None."""
        if self._lean_step is None:
            from hermes_core.engines.local.batch_step import LlamaBatchStep

            lean = getattr(self.loaded, "lean_decode_layers", 0)
            native = getattr(self.loaded, "native_decode", False)
            step = LlamaBatchStep.for_model(self.model, native=native) if lean else None
            self._lean_step = step if step is not None else False
        return self._lean_step or None

    def _decode_step(self) -> Any:
        """The batched one-token step for this model (``batch_step.decode_step_for``); call it in inference mode."""
        from hermes_core.engines.local.batch_step import decode_step_for

        return decode_step_for(self.model, _cache_argument_name())

    def _count(self, request: GenerationRequest, new_ids: list[int], reused: int) -> None:
        self.stats.requests += 1
        self.stats.reused_prefix_tokens += reused
        self.stats.prompt_tokens += len(request.prompt_ids)
        self.stats.last_completion_tokens = len(new_ids)
        self.stats.last_reused_prefix_tokens = reused

    def _prefill(self, prompt_ids: list[int], starts: list[int], cancel: threading.Event) -> tuple[Any, int]:
        """KV of every prompt chunk but the last, in ``_prefill_pieces``' pieces: a whole cache, tokens reused."""
        cache, reused, _ = self._prefill_start(prompt_ids, starts)
        done = reused
        for end in piece_ends(done, starts, starts[-1] if starts else 0, self.prefill_chunk_tokens):
            if cancel.is_set():
                break
            self._prefill_piece(prompt_ids[done:end], cache, last=False)
            done = end
        return cache, reused

    def _prefill_start(self, prompt_ids: list[int], starts: list[int]) -> tuple[Any, int, Any]:
        """The cache a prefill starts from: reused chunks from the prefix cache or the running batch.

        Returns the cache (one that appends in place, see ``kv_cache``) and how many tokens came
        from the prefix cache. Cold and warm requests run the same chunks, so their output is identical.
        While other requests decode or wait, a reused entry is copied and stays cached, and the
        running requests' caches are searched too, so requests arriving together all reuse a prefix.
        Where the batched step shares prefixes, a request joining others references their
        ``SharedPrefix`` (returned third) instead of copying it: its prefill runs on a transient
        whole cache, of which only the part after the prefix is kept.
        """

        from hermes_core.engines.local.kv_cache import new_kv_cache

        hit = self.prefix_cache.take(prompt_ids, starts) if self.prefix_cache is not None else None
        reused = hit.length if hit is not None else 0
        sharing = self.scheduler.busy()
        prefix = None
        if sharing and self.prefix_cache is not None and self.scheduler.shares_prefixes:
            from hermes_core.engines.local.shared_prefix import SharedPrefix

            prefix = self.scheduler.shared_prefix_for(prompt_ids, starts, reused)
            if hit is not None:
                if prefix is None:
                    prefix = SharedPrefix.from_cache(hit.cache, prompt_ids[:reused])
                self.prefix_cache.put(prompt_ids, hit.cache, reused)  # the entry stays for later requests
            if prefix is not None:
                cache, reused = prefix.as_cache(self.model), prefix.length
            else:
                cache = new_kv_cache(self.model)
        elif hit is not None and sharing and self.prefix_cache is not None:
            # Others decode or wait: they may want this entry too, so it stays and we take a copy.
            cache = copy_prefix(hit.cache, reused, self.model)
            self.prefix_cache.put(prompt_ids, hit.cache, reused)
        else:
            cache = hit.cache if hit is not None else new_kv_cache(self.model)
        if (
            self.prefix_cache is not None
            and sharing
            and prefix is None
            and not self.scheduler.shares_prefixes
        ):
            # A request decoding now may hold a longer run of this prompt's chunks (its entry was
            # taken when it started): copy those whole chunks from its cache.
            row_cache, length = self.scheduler.longest_shared_prefix(prompt_ids, starts)
            if length > reused and length >= self.prefix_cache.min_reuse_tokens:
                cache, reused = copy_prefix(row_cache, length, self.model), length
        return cache, reused, prefix


def _inference() -> Any:
    import torch

    return torch.inference_mode()


_END = object()
