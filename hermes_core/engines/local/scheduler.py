"""Continuous batching for the local engine: one scheduler thread decodes every active request together.

Requests wait in a FIFO queue. Between decode steps the scheduler admits waiting requests, oldest
first, while the batch has room (``max_batch_size`` rows, ``kv_budget_tokens`` reserved tokens);
each admitted request prefills its prompt alone (reusing prefix-cache chunks exactly as a lone
request does), samples its first token and joins the batch. Every step then feeds each row's last
token through ``batch_step`` at once and processes each row's logits on its own: repetition penalty,
grammar bitmask (xgrammar's batch matcher fills one row per constrained request), temperature,
top-p and its own seeded generator. A row leaves as soon as it stops, hits its budget, is cancelled
or fails; the others go on. See docs/engine.md ("How concurrent requests are scheduled").
"""

from __future__ import annotations

import atexit
import copy
import threading
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from hermes_core.engines.base import EngineOutput, GenerationRequest
from hermes_core.types import Usage


@dataclass
class Submission:
    """A request handed to the scheduler, and how its tokens and outcome get back to the caller."""

    request: GenerationRequest
    on_token: Callable[[int], None]
    on_finish: Callable[[], None] | None = None
    done: threading.Event = field(default_factory=threading.Event)
    final: EngineOutput | None = None
    error: BaseException | None = None

    def finish(self, final: EngineOutput | None = None, error: BaseException | None = None) -> None:
        self.final, self.error = final, error
        self.done.set()
        if self.on_finish is not None:
            self.on_finish()


@dataclass
class _Row:
    """One request in the running batch: its cache, tokens so far and per-request logits state."""

    submission: Submission
    cache: Any
    stop_ids: frozenset[int]
    reused: int
    generated: list[int] = field(default_factory=list)
    matcher: Any = None
    generator: Any = None
    prefix: Any = None  # a SharedPrefix: then ``cache`` holds only the positions after it
    pending: list[int] = field(default_factory=list)  # its last prompt piece, fed with the next step

    @property
    def length(self) -> int:
        """Tokens of KV this row attends over (prefix included)."""
        return self.cache.get_seq_length() + (self.prefix.length if self.prefix is not None else 0)

    @property
    def request(self) -> GenerationRequest:
        return self.submission.request


@dataclass
class _Joining:
    """An admitted request prefilling its prompt piece by piece between decode steps."""

    submission: Submission
    pieces: Any = None  # the engine's ``_prefill_pieces`` generator, made at its first piece


def reserved_tokens(request: GenerationRequest) -> int:
    """The KV a request may grow to: its prompt and its whole generation budget."""
    return len(request.prompt_ids) + max(0, request.max_new_tokens)


class Scheduler:
    """Admits, steps and retires the requests of one ``LocalEngine`` (see the module docstring)."""

    def __init__(
        self, engine: Any, *, max_batch_size: int, kv_budget_tokens: int, share_prefixes: bool = True
    ) -> None:
        self.engine = engine
        self.max_batch_size = max_batch_size
        self.kv_budget_tokens = kv_budget_tokens
        self.share_prefixes = share_prefixes
        self._waiting: deque[Submission] = deque()
        self._rows: list[_Row] = []
        self._condition = threading.Condition()
        self._running = False
        self._step: Any = None
        self._joining: deque[_Joining] = deque()  # admitted, prefilling (the first one is in progress)
        self._fusing: list[_Row] = []  # joined but for their last prompt piece, fed with the next step
        self._batch_matcher: Any = None
        self._thread: threading.Thread | None = None
        _SCHEDULERS.add(self)

    def submit(self, submission: Submission) -> None:
        """Queue ``submission``; the scheduler thread starts if it is not running."""
        with self._condition:
            self._waiting.append(submission)
            if not self._running:
                self._running = True
                self._thread = threading.Thread(target=self._loop, name="hermes-scheduler", daemon=True)
                self._thread.start()

    def drain(self, timeout: float) -> None:
        """Cancel every request and wait up to ``timeout`` s for the scheduler thread to leave torch."""
        with self._condition:
            thread = self._thread if self._running else None
            held = [row.submission for row in [*self._rows, *self._fusing]] + list(self._waiting)
            held += [joining.submission for joining in self._joining]  # still prefilling: cancel them too
            for submission in held:
                submission.request.cancel.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def busy(self) -> bool:
        """Whether other requests decode or wait (called from the scheduler thread during admission)."""
        return bool(self._rows or self._fusing or self._waiting or len(self._joining) > 1)

    @property
    def shares_prefixes(self) -> bool:
        """Whether rows over a common prompt prefix hold one ``SharedPrefix`` (the batched Llama step)."""
        return self.share_prefixes and bool(getattr(self.step(), "shares_prefixes", False))

    def step(self) -> Any:
        """The batched decode step for the engine's model (made on first use)."""
        if self._step is None:
            self._step = self.engine._decode_step()
        return self._step

    def shared_prefix_for(self, prompt_ids: Sequence[int], starts: Sequence[int], at_least: int) -> Any:
        """The ``SharedPrefix`` a new request over ``prompt_ids`` should reference, if one beats ``at_least`` tokens.

        A running row's prefix is taken as it is; a longer run of whole chunks in a running row's own
        cache becomes a new ``SharedPrefix`` (copied once), and that row then references it too.
        Called from the scheduler thread under the model lock.
        """
        from hermes_core.engines.local.shared_prefix import SharedPrefix, shares_chunks, suffix_cache

        best: Any = None
        for row in [*self._rows, *self._fusing]:
            prefix = row.prefix
            if prefix is not None and prefix.length >= max(at_least, best.length if best else 0):
                if best is None or prefix.length > best.length:
                    if shares_chunks(
                        prompt_ids, starts, row.request.prompt_ids, row.request.chunk_starts, prefix.length
                    ):
                        best = prefix
        donor, length = self.longest_shared_prefix(prompt_ids, starts, unshared_only=True)
        cache = self.engine.prefix_cache
        minimum = cache.min_reuse_tokens if cache is not None else 1
        if donor is not None and length >= minimum and length > max(at_least, best.length if best else 0):
            best = SharedPrefix.from_cache(donor.cache, prompt_ids[:length])
            donor.cache, donor.prefix = suffix_cache(donor.cache, length, self.engine.model), best
            self.engine.stats.shared_prefix_rows += 1
        return best

    def longest_shared_prefix(
        self, prompt_ids: Sequence[int], starts: Sequence[int], unshared_only: bool = False
    ) -> tuple[Any, int]:
        """The running request's cache holding the longest run of ``prompt_ids``' whole chunks, and its length.

        A length qualifies only where both prompts start a chunk and every earlier chunk start is the
        same, so the copied tokens were computed in exactly the chunks a cold prefill would use.
        """
        from hermes_core.engines.local.prefix_cache import _common_prefix_length

        best: tuple[Any, int] = (None, 0)
        for row in [*self._rows, *self._fusing]:
            if row.prefix is not None and unshared_only:
                continue
            theirs = row.request.chunk_starts
            common = _common_prefix_length(row.request.prompt_ids, prompt_ids)
            for start in reversed(starts):
                if start <= best[1]:
                    break
                if (
                    start <= common
                    and start in theirs
                    and [s for s in theirs if s <= start] == [s for s in starts if s <= start]
                ):
                    best = (row if unshared_only else row.cache, start)
                    break
        return best

    @property
    def active(self) -> int:
        """Requests decoding now."""
        return len(self._rows)

    @property
    def waiting(self) -> int:
        """Requests queued for a place in the batch."""
        return len(self._waiting)

    def _loop(self) -> None:
        try:
            self._serve()
        except BaseException as exc:  # a bug in the scheduler itself: answer everyone rather than hang them
            with self._condition:
                stranded = [row.submission for row in self._rows] + list(self._waiting)
                stranded += [joining.submission for joining in self._joining]
                stranded += [row.submission for row in self._fusing]
                self._fusing.clear()
                self._rows.clear()
                self._joining.clear()
                self._waiting.clear()
                self._running = False
            for submission in stranded:
                if not submission.done.is_set():
                    submission.finish(error=exc)

    def _serve(self) -> None:
        while True:
            admitted = self._admit()
            with self._condition:
                if not (self._rows or admitted or self._waiting or self._joining or self._fusing):
                    self._running = False
                    return
            self._joining.extend(_Joining(submission) for submission in admitted)
            self._prefill_next()
            if self._rows or self._fusing:
                self._decode()

    def _prefill_next(self) -> None:
        """One prefill piece of the oldest joining request while rows decode; with none decoding, until one joins."""
        budget = self.engine.prefill_chunk_tokens or float("inf")
        while self._joining:
            fused = len(self._fusing)
            if self._prefill_piece(self._joining[0]):
                self._joining.popleft()
            if len(self._fusing) > fused:  # its last piece rides on the next step: the next may join too
                if sum(len(row.pending) for row in self._fusing) >= budget:
                    return
                continue
            if self._rows or self._fusing:
                return

    def _can_fuse(self) -> bool:
        """Whether a joining request's last piece should go with the next step (others decode or join)."""
        if not self.engine.fuse_prefill or not hasattr(self.step(), "mixed"):
            return False
        return bool(self._rows or self._fusing or len(self._joining) > 1)

    def _admit(self) -> list[Submission]:
        """Take waiting requests, oldest first, while they fit; a cancelled one is answered at once."""
        admitted: list[Submission] = []
        sharing = bool(self._waiting) and self.kv_budget_tokens < self._unbounded() and self.shares_prefixes
        with self._condition:
            reserved = self._reserved() + sum(reserved_tokens(j.submission.request) for j in self._joining)
            while self._waiting:
                head = self._waiting[0]
                if head.request.cancel.is_set():
                    self._waiting.popleft()
                    admitted.append(head)  # _prefill_piece answers it without prefilling
                    continue
                rows = len(self._rows) + len(self._fusing) + len(self._joining) + len(admitted)
                need = reserved_tokens(head.request)
                if sharing:  # a shared prefix is counted once, with the row or request that holds it first
                    earlier = [j.submission.request for j in self._joining] + [s.request for s in admitted]
                    need -= self._shared_length(head.request, earlier)
                alone = rows == 0
                if not alone and (rows >= self.max_batch_size or reserved + need > self.kv_budget_tokens):
                    break  # FIFO: nobody overtakes the head of the queue
                self._waiting.popleft()
                admitted.append(head)
                reserved += need
        return admitted

    def _unbounded(self) -> int:
        """A budget no batch can reach: sharing cannot change admission, so it is not worked out."""
        return self.max_batch_size * self.engine.context_window

    def _reserved(self) -> int:
        """KV tokens the running rows may grow to, each shared prefix counted once."""
        rows = [*self._rows, *self._fusing]
        prefixes = {id(row.prefix): row.prefix.length for row in rows if row.prefix is not None}
        own = sum(
            reserved_tokens(row.request) - (row.prefix.length if row.prefix is not None else 0)
            for row in rows
        )
        return own + sum(prefixes.values())

    def _shared_length(self, request: GenerationRequest, admitted: Sequence[GenerationRequest]) -> int:
        """Prompt tokens ``request`` will share with a running row or a request admitted before it."""
        from hermes_core.engines.local.shared_prefix import shares_chunks

        minimum = self.engine.prefix_cache.min_reuse_tokens if self.engine.prefix_cache is not None else 1
        others = [row.request for row in [*self._rows, *self._fusing]] + list(admitted)
        best = 0
        for other in others:
            for start in reversed(request.chunk_starts):
                if start <= best:
                    break
                if start >= minimum and shares_chunks(
                    request.prompt_ids, request.chunk_starts, other.prompt_ids, other.chunk_starts, start
                ):
                    best = start
                    break
        return best

    # -- admission ---------------------------------------------------------------------------------

    def _prefill_piece(self, joining: _Joining) -> bool:
        """Prefill one piece of a joining request's prompt; after the last, sample its first token and add it.

        Returns whether the request is done joining (joined, answered or failed).
        """
        submission = joining.submission
        request = submission.request
        engine = self.engine
        stop_ids = frozenset(request.stop_token_ids or engine.stop_token_ids)
        if joining.pieces is None:
            if request.cancel.is_set() or request.max_new_tokens <= 0:
                submission.finish(_outcome(request, [], stop_ids))
                return True
            joining.pieces = engine._prefill_pieces(request, fuse_last=self._can_fuse)
        try:
            with engine._lock:
                try:
                    next(joining.pieces)
                    return False
                except StopIteration as finished:
                    cache, reused, logits, prefix, pending = finished.value
            if logits is None and not pending:  # cancelled between prompt pieces
                submission.finish(_outcome(request, [], stop_ids))
                return True
            row = _Row(submission, cache, stop_ids, reused, prefix=prefix, pending=pending)
            if prefix is not None:
                engine.stats.shared_prefix_rows += 1
            constraint = request.constraint
            if constraint is not None:
                if constraint.compiled is None:
                    raise ValueError(
                        "LocalEngine needs a compiled constraint: build it with engine.grammars()."
                    )
                import xgrammar as xgr

                row.matcher = xgr.GrammarMatcher(constraint.compiled)
            if request.temperature > 0 and request.seed is not None:
                import torch

                row.generator = torch.Generator(device="cpu").manual_seed(request.seed)
            if pending:
                self._fusing.append(row)
                return True
            self._rows.append(row)
        except BaseException as exc:  # this request fails; the batch goes on
            submission.finish(error=exc)
            return True
        self._advance([row], logits)
        return True

    # -- decoding ----------------------------------------------------------------------------------

    def _decode(self) -> None:
        """Retire cancelled rows, then one step for every other row (and the last pieces of joining ones)."""
        for row in [row for row in [*self._rows, *self._fusing] if row.request.cancel.is_set()]:
            self._retire(row)
        rows, fusing = list(self._rows), list(self._fusing)
        self._fusing.clear()
        if not rows and not fusing:
            return
        engine = self.engine
        try:
            with engine._lock:
                if len(rows) == 1 and rows[0].prefix is None and not fusing:
                    # One request: the model's own forward, the path a request alone has always taken.
                    logits = engine._row_logits([rows[0].generated[-1]], rows[0].cache)
                else:
                    import torch

                    everyone = [*rows, *fusing]
                    caches, prefixes = [row.cache for row in everyone], [row.prefix for row in everyone]
                    with torch.inference_mode():
                        if fusing:
                            pieces = [[row.generated[-1]] for row in rows] + [row.pending for row in fusing]
                            logits = self.step().mixed(pieces, caches, prefixes)
                        else:
                            logits = self.step()([row.generated[-1] for row in rows], caches, prefixes)
        except BaseException as exc:  # the shared forward failed: every row in it fails
            for row in [*rows, *fusing]:
                self._retire(row, error=exc)
            return
        for row in fusing:
            row.pending = []
        self._rows.extend(fusing)
        rows = [*rows, *fusing]
        engine.stats.decode_steps += 1
        engine.stats.peak_batch = max(engine.stats.peak_batch, len(rows))
        self._advance(rows, logits)

    def _advance(self, rows: Sequence[_Row], logits: Any) -> None:
        """Pick each row's next token from its logits row, hand it over, and retire rows that are done."""
        import torch

        with torch.inference_mode():  # the logits are inference tensors, processed in place
            self._advance_rows(rows, logits)

    def _advance_rows(self, rows: Sequence[_Row], logits: Any) -> None:
        try:
            self._mask(rows, logits)
        except BaseException as exc:
            for row in rows:
                self._retire(row, error=exc)
            return
        for index, row in enumerate(rows):
            try:
                token = self._choose(row, logits[index : index + 1])
                row.generated.append(token)
                row.submission.on_token(token)
                if self._finished(row, token):
                    self._retire(row)
            except BaseException as exc:  # only this request fails
                self._retire(row, error=exc)

    def _mask(self, rows: Sequence[_Row], logits: Any) -> None:
        """Repetition penalty per row, then each constrained row's grammar bitmask (in place)."""
        import torch

        for index, row in enumerate(rows):
            penalty = row.request.repetition_penalty
            if penalty is not None and penalty != 1.0:
                from transformers import RepetitionPenaltyLogitsProcessor

                ids = torch.tensor([row.request.prompt_ids + row.generated], dtype=torch.long)
                logits[index : index + 1] = RepetitionPenaltyLogitsProcessor(penalty)(
                    ids, logits[index : index + 1]
                )
        constrained = [index for index, row in enumerate(rows) if row.matcher is not None]
        if not constrained:
            return
        import xgrammar as xgr

        vocab_size = self.engine.grammars().vocab_size
        bitmask = xgr.allocate_token_bitmask(len(rows), vocab_size)
        live = [index for index in constrained if not rows[index].matcher.is_terminated()]
        if live:  # a terminated grammar (its stop token taken) leaves its row free, as generate did
            if self._batch_matcher is None:
                self._batch_matcher = xgr.BatchGrammarMatcher()
            self._batch_matcher.batch_fill_next_token_bitmask(
                [rows[index].matcher for index in live], bitmask, indices=live
            )
            width = min(vocab_size, logits.shape[-1])
            xgr.apply_token_bitmask_inplace(logits, bitmask, vocab_size=width, indices=live)
        if logits.shape[-1] > vocab_size:
            logits[constrained, vocab_size:] = float("-inf")  # padding ids beyond the tokenizer never decode

    def _choose(self, row: _Row, scores: Any) -> int:
        """Greedy, or temperature / top-p sampling with the row's own generator (transformers' warpers)."""
        import torch

        request = row.request
        if request.temperature > 0:
            from transformers import TemperatureLogitsWarper, TopPLogitsWarper

            ids = None  # the warpers ignore input_ids
            if request.temperature != 1.0:
                scores = TemperatureLogitsWarper(request.temperature)(ids, scores)
            if request.top_p is not None and request.top_p != 1.0:
                scores = TopPLogitsWarper(top_p=request.top_p, min_tokens_to_keep=1)(ids, scores)
            probs = torch.nn.functional.softmax(scores, dim=-1)
            token = int(torch.multinomial(probs, num_samples=1, generator=row.generator)[0, 0])
        else:
            token = int(torch.argmax(scores, dim=-1)[0])
        if (
            row.matcher is not None
            and not row.matcher.is_terminated()
            and not row.matcher.accept_token(token)
        ):
            raise RuntimeError(f"Token {token} violates the grammar of its request.")
        return token

    def _finished(self, row: _Row, token: int) -> bool:
        request = row.request
        if token in row.stop_ids or len(row.generated) >= request.max_new_tokens or request.cancel.is_set():
            return True
        return bool(request.stop_strings) and _stop_string_hit(
            self.engine.tokenizer, request.stop_strings, row.generated
        )

    def _retire(self, row: _Row, error: BaseException | None = None) -> None:
        """Remove ``row`` from the batch, keep its whole prompt chunks in the prefix cache, answer its caller."""
        if row in self._rows:
            self._rows.remove(row)
        if row in self._fusing:
            self._fusing.remove(row)
        request = row.request
        engine = self.engine
        if error is None:
            starts = request.chunk_starts
            if engine.prefix_cache is not None and starts:
                # Only whole prompt chunks are kept: the last chunk and the generated tokens were
                # computed in shapes a later prompt would not reproduce.
                if row.prefix is None:
                    engine.prefix_cache.put(request.prompt_ids, row.cache, starts[-1])
                elif not engine.prefix_cache.holds(request.prompt_ids[: starts[-1]]):
                    whole = row.prefix.as_cache(engine.model)  # the prefix by reference, no copy
                    if starts[-1] > row.prefix.length:
                        kept = starts[-1] - row.prefix.length
                        for index, layer in enumerate(row.cache.layers):
                            whole.update(layer.keys[..., :kept, :], layer.values[..., :kept, :], index)
                    engine.prefix_cache.put(request.prompt_ids, whole, starts[-1])
            engine._count(request, row.generated, row.reused)
            row.submission.finish(_outcome(request, row.generated, row.stop_ids))
        else:
            row.submission.finish(error=error)


def _stop_string_hit(tokenizer: Any, stops: Sequence[str], generated: Sequence[int]) -> bool:
    """Whether the decoded tail of the output contains a stop sequence (a few tokens decoded per step).

    transformers' own ``stop_strings`` precomputes tables over the whole vocabulary for every request
    (0.4-1 s for a 49k vocabulary); decoding the last few tokens costs microseconds.
    """
    window = max(len(stop) for stop in stops) + 2
    tail = tokenizer.decode(list(generated[-window:]), skip_special_tokens=False)
    return any(stop in tail for stop in stops)


def _outcome(request: GenerationRequest, new_ids: list[int], stop_ids: frozenset[int]) -> EngineOutput:
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
    return EngineOutput(list(new_ids), reason, usage)  # type: ignore[arg-type]


def copy_prefix(cache: Any, length: int, model: Any) -> Any:
    """A new in-place KV cache holding a copy of ``cache``'s first ``length`` tokens."""
    from hermes_core.engines.local.kv_cache import new_kv_cache

    if any(type(layer).__name__ != "GrowingLayer" for layer in cache.layers):
        copied = copy.deepcopy(cache)  # other layer kinds (sliding window): copy whole, then crop
        if copied.get_seq_length() > length:
            copied.crop(length)
        return copied
    copied = new_kv_cache(model)
    for index, layer in enumerate(cache.layers):
        copied.update(layer.keys[..., :length, :], layer.values[..., :length, :], index)
    return copied


_SCHEDULERS: weakref.WeakSet[Scheduler] = weakref.WeakSet()


@atexit.register
def _drain_at_exit() -> None:
    """Stop scheduler threads before the interpreter finalizes.

    A daemon thread still inside a torch kernel while the process tears down its C++ thread pools ends
    the process with ``terminate called without an active exception`` (seen at the end of a script that
    had just finished its last request); cancelling and joining first makes exit clean.
    """
    for scheduler in list(_SCHEDULERS):
        scheduler.drain(timeout=10.0)
