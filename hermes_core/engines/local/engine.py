"""The local engine: one loaded model, its grammar and prefix caches, and generate/stream calls.

A request flows: messages -> ``render_conversation`` (Hermes/ChatML prompt, untrusted content
kept out of the special-token space) -> token ids -> ``model.generate`` (xgrammar logits
processor when constrained, KV prefix reuse) -> decoded text -> ``parse_tool_calls`` /
``ToolCallStreamParser`` -> ``validate_tool_calls`` -> ``GenerationResult`` / ``StreamEvent``.

Scheduling: one generation runs at a time per loaded model (a lock per model); other callers,
sync or async, wait their turn. Streaming runs ``generate`` on a worker thread and hands tokens
to the consumer through a queue, so stopping iteration stops generation within a token.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import inspect
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from hermes_core.engines.local.prefix_cache import PrefixCache, chunk_starts
from hermes_core.errors import UnsupportedOptionError
from hermes_core.types import GenerationResult, Message, ParsedResponse, StreamEvent, Usage


@functools.cache
def _cache_argument_name() -> str:
    """transformers renamed ``past_key_values`` to ``cache`` (5.2x); use whichever this version has."""
    from transformers.generation.utils import GenerateDecoderOnlyOutput

    return "cache" if "cache" in GenerateDecoderOnlyOutput.__dataclass_fields__ else "past_key_values"


def _logits_to_keep(model: Any) -> dict[str, int]:
    """``logits_to_keep=1`` where the model takes it: prefill chunks need no logits at all."""
    accepts = "logits_to_keep" in inspect.signature(model.forward).parameters
    return {"logits_to_keep": 1} if accepts else {}


def _role_ids(tokenizer: Any, im_start: int | None, role: str) -> list[int]:
    """Token ids of ``role`` right after ``<|im_start|>``, as the prompt renders them ([] if unknown)."""
    if im_start is None:
        return []
    ids = list(tokenizer(f"<|im_start|>{role}", add_special_tokens=False)["input_ids"])
    return ids[1:] if ids[:1] == [im_start] and len(ids) > 1 else []


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
class _Request:
    """A prepared request: prompt tokens, offered tools, grammar and sampling settings."""

    prompt_ids: list[int]
    tools: list[dict[str, Any]]
    json_mode: bool
    grammar: Any
    max_new_tokens: int
    temperature: float
    top_p: float | None
    repetition_penalty: float | None
    stop: list[str]
    seed: int | None


@dataclass
class _Generated:
    """Raw outcome of one ``model.generate`` call."""

    token_ids: list[int]
    cancelled: bool
    hit_stop_token: bool
    reused_prefix_tokens: int = 0


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


class HermesEngine:
    """Runs a Hermes-format chat model locally: constrained tool calls, JSON mode, streaming."""

    def __init__(
        self,
        loaded: Any,
        *,
        constrained: bool = True,
        prefix_cache: bool = True,
        prefix_cache_size: int = 4,
        max_new_tokens: int = 512,
        temperature: float = 0.0,
        top_p: float | None = None,
        repetition_penalty: float | None = None,
    ) -> None:
        self.loaded = loaded
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.model_name: str = loaded.model_name
        self.context_window: int = int(loaded.context_window)
        self.stop_token_ids: list[int] = list(loaded.stop_token_ids)
        self.constrained = constrained
        self.default_max_new_tokens = max_new_tokens
        self.default_temperature = temperature
        self.default_top_p = top_p
        self.default_repetition_penalty = repetition_penalty
        self.prefix_cache: PrefixCache | None = PrefixCache(prefix_cache_size) if prefix_cache else None
        self.stats = EngineStats()
        self._lock = _lock_for(self.model)
        self._grammar_cache: Any = None
        self._grammar_lock = threading.Lock()
        self._assistant_ids = _role_ids(self.tokenizer, loaded.chat_tokens.im_start, "assistant")

    # ------------------------------------------------------------------ tokens
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` as plain content (special-token text is not special)."""
        return list(self.tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])

    def count_tokens(self, text: str) -> int:
        """Number of tokens ``text`` takes as content."""
        return len(self.encode(text))

    # ----------------------------------------------------------------- prepare
    def _grammars(self) -> Any:
        if self._grammar_cache is None:
            from hermes_core.grammar import GrammarCache

            vocab_size = int(getattr(self.model.config, "vocab_size", 0) or len(self.tokenizer))
            self._grammar_cache = GrammarCache(self.tokenizer, vocab_size, self.stop_token_ids)
        return self._grammar_cache

    def _prepare(
        self,
        messages: Sequence[Message | dict[str, Any]],
        *,
        tools: Sequence[Any] | None = None,
        tool_choice: Any = None,
        parallel_tool_calls: bool = True,
        response_format: Any = None,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        repetition_penalty: float | None = None,
        stop: Sequence[str] | str | None = None,
        seed: int | None = None,
        constrained: bool | None = None,
    ) -> _Request:
        from hermes_core.format.chatml import render_conversation
        from hermes_core.format.tool_choice import normalize_tool_choice
        from hermes_core.format.tool_specs import to_tool_specs

        if not messages:
            raise UnsupportedOptionError("messages is empty: pass at least one user message.")
        specs = to_tool_specs(list(tools)) if tools else []
        choice = normalize_tool_choice(tool_choice, [s["function"]["name"] for s in specs])
        if choice.mode == "required" and choice.tool_name is not None:
            specs_offered = specs
        else:
            specs_offered = [] if choice.mode == "none" else specs
        schema = _response_schema(response_format)
        # With tools offered, a schema shapes the final answer (a forced call comes first); without, JSON mode.
        json_mode = schema is not None and not specs_offered
        rendered = render_conversation(
            list(messages),
            tools=None if json_mode else (specs_offered or None),
            response_format=schema,
        )
        prompt_ids = rendered.token_ids(self.tokenizer)
        if len(prompt_ids) >= self.context_window:
            raise UnsupportedOptionError(
                f"The prompt is {len(prompt_ids)} tokens but {self.model_name} has a context window of "
                f"{self.context_window}; shorten the conversation or the tool list."
            )
        use_grammar = self.constrained if constrained is None else constrained
        grammar = None
        if use_grammar:
            with self._grammar_lock:
                if json_mode:
                    grammar = self._grammars().for_json(
                        None if schema.get("type") == "json_object" else schema
                    )
                elif specs_offered and schema is not None and choice.mode == "auto":
                    grammar = self._grammars().for_tools_or_answer(specs_offered, schema, parallel_tool_calls)
                elif specs_offered:
                    # Forcing a named tool means one call of it (as OpenAI's named tool_choice does);
                    # small models otherwise repeat the forced call until the token budget runs out.
                    parallel = parallel_tool_calls and choice.tool_name is None
                    grammar = self._grammars().for_tools(specs_offered, choice, parallel)
        budget = self.default_max_new_tokens if max_new_tokens is None else int(max_new_tokens)
        if budget < 1:
            raise UnsupportedOptionError(f"max_new_tokens must be at least 1, got {budget}.")
        budget = min(budget, self.context_window - len(prompt_ids))
        temp = self.default_temperature if temperature is None else float(temperature)
        if temp < 0:
            raise UnsupportedOptionError(f"temperature must be >= 0, got {temp}.")
        nucleus = self.default_top_p if top_p is None else float(top_p)
        if nucleus is not None and not 0 < nucleus <= 1:
            raise UnsupportedOptionError(f"top_p must be in (0, 1], got {nucleus}.")
        penalty = self.default_repetition_penalty if repetition_penalty is None else float(repetition_penalty)
        if penalty is not None and penalty <= 0:
            raise UnsupportedOptionError(f"repetition_penalty must be > 0 (1.0 = off), got {penalty}.")
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        if not json_mode:
            # A tool result is never the model's to write: small models imitate the tool turn
            # (`<tool_response>{...}`) as prose, which agents would take as the final answer.
            stops.append(TOOL_RESPONSE_TAG)
        return _Request(prompt_ids, specs, json_mode, grammar, budget, temp, nucleus, penalty, stops, seed)

    # ---------------------------------------------------------------- generate
    def _run_generate(
        self, req: _Request, cancel: threading.Event, on_token: Callable[[int], None] | None = None
    ) -> _Generated:
        """Run ``model.generate`` for one request under the model lock."""
        import torch
        from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

        with self._lock:
            if cancel.is_set():
                return _Generated([], cancelled=True, hit_stop_token=False)
            starts = chunk_starts(req.prompt_ids, self.loaded.chat_tokens.im_start, self._assistant_ids)
            kv_cache, reused = self._prefill(req.prompt_ids, starts, cancel)
            if cancel.is_set():  # the consumer left while the earlier turns were prefilled
                if self.prefix_cache is not None and kv_cache is not None:
                    # What was computed ends at a chunk start: keep it for the next request.
                    self.prefix_cache.put(req.prompt_ids, kv_cache, kv_cache.get_seq_length())
                return _Generated([], cancelled=True, hit_stop_token=False, reused_prefix_tokens=reused)
            sampling = req.temperature > 0
            config = copy.deepcopy(self.model.generation_config) if self.model.generation_config else None
            config = config or GenerationConfig()
            config.update(
                max_new_tokens=req.max_new_tokens,
                min_new_tokens=None,
                max_length=None,
                do_sample=sampling,
                temperature=req.temperature if sampling else None,
                top_p=req.top_p if sampling else None,
                top_k=None,
                repetition_penalty=req.repetition_penalty,
                eos_token_id=self.stop_token_ids,
                pad_token_id=self.tokenizer.pad_token_id,
                return_dict_in_generate=True,
                output_scores=False,
            )
            processors = LogitsProcessorList()
            if req.grammar is not None:
                processors.append(self._grammars().logits_processor(req.grammar))
            if sampling and req.seed is not None:
                torch.manual_seed(req.seed)
            criteria: list[Any] = [_CancelCriteria(cancel)]
            if req.stop:
                criteria.append(_StopStringCriteria(self.tokenizer, req.stop, len(req.prompt_ids)))
            input_ids = torch.tensor([req.prompt_ids], dtype=torch.long, device=self.model.device)
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
            new_ids = output.sequences[0, len(req.prompt_ids) :].tolist()
            kv_cache = getattr(output, _cache_argument_name(), None)
            if self.prefix_cache is not None and kv_cache is not None and starts:
                # Only whole prompt chunks are stored: the last chunk and the generated tokens were
                # computed in shapes a later prompt would not reproduce.
                self.prefix_cache.put(req.prompt_ids, kv_cache, starts[-1])
            self.stats.requests += 1
            self.stats.reused_prefix_tokens += reused
            self.stats.prompt_tokens += len(req.prompt_ids)
            self.stats.last_completion_tokens = len(new_ids)
            self.stats.last_reused_prefix_tokens = reused
        return _Generated(
            new_ids,
            cancelled=cancel.is_set(),
            hit_stop_token=bool(new_ids) and new_ids[-1] in self.stop_token_ids,
            reused_prefix_tokens=reused,
        )

    def _prefill(self, prompt_ids: list[int], starts: list[int], cancel: threading.Event) -> tuple[Any, int]:
        """KV of every prompt chunk but the last (reused from the prefix cache where possible).

        Returns the cache (one that appends in place, see ``_kv_cache``) and how many tokens came
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

    def _finish(
        self, req: _Request, gen: _Generated, parsed: ParsedResponse, raw: str, stopped: bool
    ) -> GenerationResult:
        """Validate calls and assemble the result with finish reason and usage."""
        from hermes_core.format.validation import validate_tool_calls

        if not req.json_mode:
            parsed = validate_tool_calls(parsed, req.tools)
        if gen.hit_stop_token or stopped or gen.cancelled:
            reason = "stop"
        elif len(gen.token_ids) >= req.max_new_tokens:
            reason = "length"
        else:
            reason = "stop"
        if reason == "stop" and parsed.tool_calls:
            reason = "tool_calls"
        usage = Usage(prompt_tokens=len(req.prompt_ids), completion_tokens=len(gen.token_ids))
        return GenerationResult(parsed, reason, usage, raw_text=raw, model_name=self.model_name)

    def _parse_whole(self, req: _Request, text: str) -> ParsedResponse:
        from hermes_core.format.parser import parse_tool_calls

        return parse_tool_calls(text)

    def _complete(self, req: _Request, cancel: threading.Event) -> GenerationResult:
        from hermes_core._decoding import cut_at_stop_sequences

        gen = self._run_generate(req, cancel)
        raw = self.tokenizer.decode(
            gen.token_ids, skip_special_tokens=False, clean_up_tokenization_spaces=False
        )
        text, stopped = cut_at_stop_sequences(raw, req.stop)
        return self._finish(req, gen, self._parse_whole(req, text), raw, stopped)

    def generate(self, messages: Sequence[Message | dict[str, Any]], **options: Any) -> GenerationResult:
        """Generate one assistant turn; see ``HermesEngine._prepare`` for the options."""
        return self._complete(self._prepare(messages, **options), threading.Event())

    # ------------------------------------------------------------------ stream
    def _stream_request(self, req: _Request, cancel: threading.Event) -> Iterator[StreamEvent]:
        """Generate on a worker thread, decoding and parsing tokens as they arrive."""
        import queue

        from hermes_core._decoding import IncrementalDecoder, StopSequenceFilter
        from hermes_core.format.stream_parser import ToolCallStreamParser

        tokens: queue.SimpleQueue[Any] = queue.SimpleQueue()
        outcome: dict[str, Any] = {}

        def work() -> None:
            try:
                outcome["generated"] = self._run_generate(req, cancel, tokens.put)
            except BaseException as exc:  # handed to the consumer thread and re-raised there
                outcome["error"] = exc
            finally:
                tokens.put(_END)

        worker = threading.Thread(target=work, name="hermes-generate", daemon=True)
        worker.start()
        decoder = IncrementalDecoder(self.tokenizer)
        stops = StopSequenceFilter(req.stop)
        parser = ToolCallStreamParser()
        pieces: list[str] = []
        count = 0
        try:
            while True:
                item = tokens.get()
                if item is _END:
                    break
                count += 1
                piece = decoder.push(item)
                pieces.append(piece)
                if stops.stopped:
                    continue
                released = stops.feed(piece)
                if stops.stopped:
                    cancel.set()
                yield from self._checked(parser.feed(released), req)
            if "error" in outcome:
                raise outcome["error"]
            tail = decoder.flush()
            pieces.append(tail)
            yield from self._checked(parser.feed(stops.feed(tail) + stops.flush()), req)
            yield from self._checked(parser.close(), req)
            gen = outcome["generated"]
            result = self._finish(req, gen, parser.result(), "".join(pieces), stops.stopped)
            yield StreamEvent("end", result=result)
        finally:
            cancel.set()
            worker.join()

    def _checked(self, events: list[StreamEvent], req: _Request) -> Iterator[StreamEvent]:
        """Turn streamed calls that fail validation into invalid-call events (same id and index)."""
        from hermes_core.format.validation import validate_tool_calls

        for event in events:
            if event.type == "tool_call" and event.tool_call is not None and not req.json_mode:
                checked = validate_tool_calls(ParsedResponse(tool_calls=[event.tool_call]), req.tools)
                if checked.invalid_tool_calls:
                    yield StreamEvent(
                        "invalid_tool_call",
                        invalid_tool_call=checked.invalid_tool_calls[0],
                        index=event.index,
                    )
                    continue
            yield event

    def stream(self, messages: Sequence[Message | dict[str, Any]], **options: Any) -> Iterator[StreamEvent]:
        """Stream one assistant turn as parser events; the last event (type ``end``) holds the result."""
        req = self._prepare(messages, **options)
        return self._stream_request(req, threading.Event())

    # ------------------------------------------------------------------- async
    async def agenerate(
        self, messages: Sequence[Message | dict[str, Any]], **options: Any
    ) -> GenerationResult:
        """Async ``generate``: runs on a worker thread; cancelling the task stops generation."""
        cancel = threading.Event()

        def run() -> GenerationResult:
            return self._complete(self._prepare(messages, **options), cancel)

        try:
            return await asyncio.to_thread(run)
        except asyncio.CancelledError:
            cancel.set()
            raise

    async def astream(
        self, messages: Sequence[Message | dict[str, Any]], **options: Any
    ) -> AsyncIterator[StreamEvent]:
        """Async ``stream``: events cross from the worker thread without blocking the event loop."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Any] = asyncio.Queue()
        cancel = threading.Event()

        def deliver(item: Any) -> None:
            try:
                loop.call_soon_threadsafe(events.put_nowait, item)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                cancel.set()

        def pump() -> None:
            try:
                req = self._prepare(messages, **options)
                for event in self._stream_request(req, cancel):
                    deliver(event)
                    if cancel.is_set():
                        break
            except BaseException as exc:
                deliver(_Failure(exc))
            finally:
                deliver(_END)

        thread = threading.Thread(target=pump, name="hermes-astream", daemon=True)
        thread.start()
        try:
            while True:
                item = await events.get()
                if item is _END:
                    break
                if isinstance(item, _Failure):
                    raise item.error
                yield item
        finally:
            cancel.set()


REQUEST_OPTIONS: frozenset[str] = frozenset(inspect.signature(HermesEngine._prepare).parameters) - {
    "self",
    "messages",
}
"""Keyword options ``generate``/``stream`` accept per request; adapters check their kwargs against it."""


class _Failure:
    def __init__(self, error: BaseException) -> None:
        self.error = error


_END = object()
TOOL_RESPONSE_TAG = "<tool_response>"


def _response_schema(response_format: Any) -> dict[str, Any] | None:
    """Accept a JSON schema dict, ``{"type": "json_object"}``, OpenAI's json_schema wrapper or a pydantic class."""
    if response_format is None:
        return None
    if isinstance(response_format, type) and hasattr(response_format, "model_json_schema"):
        return response_format.model_json_schema()
    if isinstance(response_format, dict):
        if response_format.get("type") == "json_schema" and isinstance(
            response_format.get("json_schema"), dict
        ):
            inner = response_format["json_schema"]
            return inner.get("schema", inner)
        return response_format
    raise UnsupportedOptionError(
        f"Unsupported response_format {response_format!r}: pass a JSON schema dict, a pydantic model class, "
        "or {'type': 'json_object'}."
    )


def load_engine(
    model: Any = None,
    *,
    quantization: str | None = None,
    device_map: Any = None,
    torch_dtype: Any = None,
    constrained: bool = True,
    prefix_cache: bool = True,
    prefix_cache_size: int = 4,
    max_new_tokens: int = 512,
    temperature: float = 0.0,
    top_p: float | None = None,
    repetition_penalty: float | None = None,
    **load_options: Any,
) -> HermesEngine:
    """Load ``model`` (None = the embedded SmolLM2) and wrap it in a new engine.

    Weights are shared: loading the same model with the same load options twice in one process
    reuses the first load.
    """
    loaded = _load_shared(
        model, quantization=quantization, device_map=device_map, torch_dtype=torch_dtype, **load_options
    )
    return HermesEngine(
        loaded,
        constrained=constrained,
        prefix_cache=prefix_cache,
        prefix_cache_size=prefix_cache_size,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        repetition_penalty=repetition_penalty,
    )


_LOADED: dict[Any, Any] = {}
_ENGINES: dict[Any, HermesEngine] = {}
_REGISTRY_LOCK = threading.Lock()


def _model_key(model: Any) -> Any:
    if isinstance(model, tuple):
        return ("object", *(id(part) for part in model))
    return ("path", str(model) if model is not None else None)


def _load_shared(model: Any, **load_options: Any) -> Any:
    """Load weights once per process for the same model and load options (defaults filled in)."""
    from hermes_core.engines.local.loading import load_model

    options = load_options
    try:
        bound = inspect.signature(load_model).bind(model, **load_options)
    except TypeError:
        pass  # an unknown option: load_model below raises the error that names it
    else:
        bound.apply_defaults()
        options = {name: value for name, value in bound.arguments.items() if name != "model"}
    key = (_model_key(model), tuple(sorted((k, repr(v)) for k, v in options.items())))
    with _REGISTRY_LOCK:
        loaded = _LOADED.get(key)
        if loaded is None:
            loaded = _LOADED[key] = load_model(model, **load_options)
            if isinstance(model, tuple):
                _LOADED[(key, "keepalive")] = model  # keeps the ids in the key valid
        return loaded


def get_engine(model: Any = None, **options: Any) -> HermesEngine:
    """Process-wide shared engine for ``model`` and ``options`` (weights are loaded only once).

    Options are keyed with ``load_engine``'s defaults filled in, so ``get_engine(m)`` and
    ``get_engine(m, quantization=None)`` return the same engine.
    """
    bound = inspect.signature(load_engine).bind(model, **options)
    bound.apply_defaults()
    arguments = dict(bound.arguments)
    arguments.update(arguments.pop("load_options", {}))
    arguments.pop("model")
    key = (_model_key(model), tuple(sorted((k, repr(v)) for k, v in arguments.items())))
    with _REGISTRY_LOCK:
        engine = _ENGINES.get(key)
    if engine is None:
        engine = load_engine(model, **options)
        with _REGISTRY_LOCK:
            engine = _ENGINES.setdefault(key, engine)
    return engine
