"""The request frontend shared by every engine: from messages and options to a parsed, validated reply.

A request flows: messages -> ``render_conversation`` (Hermes/ChatML prompt, untrusted content kept
out of the special-token space) -> prompt token ids, plus the constraint (``grammar``) for the tools,
tool choice or response format -> ``GenerationRequest`` -> the engine (``engines.base.Engine``) ->
generated token ids -> text (incremental detokenization, caller stop strings cut) ->
``parse_tool_calls`` / ``ToolCallStreamParser`` -> ``validate_tool_calls`` -> ``GenerationResult`` /
``StreamEvent``. Every per-request option is checked here (``REQUEST_OPTIONS``), before the engine runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from hermes_core.engines.base import Constraint, Engine, EngineOutput, GenerationRequest
from hermes_core.errors import UnsupportedOptionError
from hermes_core.format.tokenize import encode
from hermes_core.options import check_request_options
from hermes_core.types import GenerationResult, Message, ParsedResponse, StreamEvent, Usage

TOOL_RESPONSE_TAG = "<tool_response>"
"""Stop string of every tool-enabled request: the model must never write a tool turn itself."""


def _role_ids(tokenizer: Any, im_start: int | None, role: str) -> list[int]:
    """Token ids of ``role`` right after ``<|im_start|>``, as the prompt renders them ([] if unknown)."""
    if im_start is None:
        return []
    ids = encode(tokenizer, f"<|im_start|>{role}")
    return ids[1:] if ids[:1] == [im_start] and len(ids) > 1 else []


@dataclass
class _Prepared:
    """A request ready for the engine, with what the frontend needs to parse and validate its reply."""

    request: GenerationRequest
    tools: list[dict[str, Any]]
    json_mode: bool
    stop: list[str]
    completer: Any = None  # ReplyCompleter of a constrained reply: finishes it when the budget runs out
    duplicate_tool_calls: str = "end_turn"

    @property
    def prompt_ids(self) -> list[int]:
        return self.request.prompt_ids

    @property
    def max_new_tokens(self) -> int:
        return self.request.max_new_tokens


class Frontend:
    """Hermes-format chat over any ``Engine``: constrained tool calls, JSON mode, streaming, sync and async."""

    def __init__(
        self,
        engine: Engine,
        *,
        constrained: bool = True,
        max_new_tokens: int = 512,
        temperature: float = 0.0,
        top_p: float | None = None,
        repetition_penalty: float | None = None,
        variant: Any = "auto",
        reasoning: bool | None = None,
        reasoning_budget: int | None = None,
    ) -> None:
        from hermes_core.format.variants import resolve_variant

        check_request_options(_defaults(max_new_tokens, temperature, top_p, repetition_penalty, constrained))
        self.engine = engine
        self.tokenizer = engine.tokenizer
        self.model_name: str = engine.model_name
        # The model's prompt family (hermes_core.format.variants), from its chat template unless named.
        self.variant = resolve_variant(variant, self.tokenizer, self.model_name)
        self.variant.resolve_reasoning(reasoning)  # fail now, not on the first request
        self.default_reasoning = reasoning
        self.default_reasoning_budget = _check_reasoning_budget(reasoning_budget)
        self.context_window: int = int(engine.context_window)
        self.stop_token_ids: list[int] = list(engine.stop_token_ids)
        self.constrained = constrained
        self.default_max_new_tokens = max_new_tokens
        self.default_temperature = temperature
        self.default_top_p = top_p
        self.default_repetition_penalty = repetition_penalty
        self._grammar_lock = threading.Lock()
        self._im_start: int | None = engine.chat_tokens.im_start
        self._assistant_ids = _role_ids(self.tokenizer, self._im_start, "assistant")

    # ------------------------------------------------------------------ tokens
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` as plain content (special-token text is not special)."""
        return encode(self.tokenizer, text, split_special_tokens=True)

    def count_tokens(self, text: str) -> int:
        """Number of tokens ``text`` takes as content."""
        return len(self.encode(text))

    def _count_appended(self, text: str) -> int:
        """Tokens of text the frontend appends: a call tag counts as the one token it is, where it is one."""
        return len(encode(self.tokenizer, text))

    # ----------------------------------------------------------------- prepare
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
        reasoning: bool | None = None,
        reasoning_budget: int | None = None,
        duplicate_tool_calls: str = "end_turn",
        keep_reasoning: bool = False,
    ) -> _Prepared:
        from hermes_core.engines.local.prefix_cache import chunk_starts
        from hermes_core.format.call_policy import check_duplicate_tool_calls
        from hermes_core.format.chatml import render_conversation
        from hermes_core.format.tool_choice import normalize_tool_choice
        from hermes_core.format.tool_specs import to_tool_specs

        check_request_options(
            {"max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p, "stop": stop}
            | {"repetition_penalty": repetition_penalty, "seed": seed, "constrained": constrained}
        )
        if not messages:
            raise UnsupportedOptionError("messages is empty: pass at least one user message.")
        duplicates = check_duplicate_tool_calls(duplicate_tool_calls)
        specs = to_tool_specs(list(tools)) if tools else []
        choice = normalize_tool_choice(tool_choice, [s["function"]["name"] for s in specs])
        if choice.mode == "required" and choice.tool_name is not None:
            specs_offered = specs
        else:
            specs_offered = [] if choice.mode == "none" else specs
        schema = _response_schema(response_format)
        # With tools offered, a schema shapes the final answer (a forced call comes first); without, JSON mode.
        json_mode = schema is not None and not specs_offered
        thinking = self.variant.resolve_reasoning(self.default_reasoning if reasoning is None else reasoning)
        rendered = render_conversation(
            list(messages),
            tools=None if json_mode else (specs_offered or None),
            response_format=schema,
            variant=self.variant,
            reasoning=thinking,
            keep_reasoning=keep_reasoning,
        )
        prompt_ids = rendered.token_ids(self.tokenizer)
        if len(prompt_ids) >= self.context_window:
            raise UnsupportedOptionError(
                f"The prompt is {len(prompt_ids)} tokens but {self.model_name} has a context window of "
                f"{self.context_window}; shorten the conversation or the tool list."
            )
        budget = self.default_max_new_tokens if max_new_tokens is None else int(max_new_tokens)
        thinking_room = self._reasoning(thinking, reasoning_budget, budget)
        budget = min(budget, self.context_window - len(prompt_ids))
        use_grammar = self.constrained if constrained is None else constrained
        constraint = completer = None
        if use_grammar:
            with self._grammar_lock:
                # Forcing a named tool means one call of it (as OpenAI's named tool_choice does);
                # small models otherwise repeat the forced call until the token budget runs out.
                parallel = parallel_tool_calls and choice.tool_name is None
                constraint = self._constraint(schema, specs_offered, choice, parallel, thinking_room)
            if constraint is not None and (schema is not None or (specs_offered and choice.mode != "none")):
                single = getattr(getattr(self.engine.grammars(), "delimiters", None), "single_tokens", False)
                completer = _reply_completer(schema, specs_offered, choice, thinking_room, single)
        # Values were checked above (check_request_options); None falls back to the frontend's defaults.
        temp = self.default_temperature if temperature is None else float(temperature)
        nucleus = self.default_top_p if top_p is None else float(top_p)
        penalty = self.default_repetition_penalty if repetition_penalty is None else float(repetition_penalty)
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        if not json_mode:
            # A tool result is never the model's to write: small models imitate the tool turn
            # (`<tool_response>{...}`) as prose, which agents would take as the final answer.
            stops.append(TOOL_RESPONSE_TAG)
        request = GenerationRequest(
            prompt_ids=prompt_ids,
            max_new_tokens=budget,
            temperature=temp,
            top_p=nucleus,
            repetition_penalty=penalty,
            seed=seed,
            stop_token_ids=list(self.stop_token_ids),
            stop_strings=list(stops),
            constraint=constraint,
            chunk_starts=chunk_starts(prompt_ids, self._im_start, self._assistant_ids),
        )
        return _Prepared(request, specs, json_mode, stops, completer, duplicates)

    def _reasoning(self, thinking: bool, reasoning_budget: int | None, max_new_tokens: int) -> Any:
        """The reasoning block the grammar lets the reply open with (None when not reasoning).

        Its budget is ``reasoning_budget`` (per request, else the frontend's default), else half of
        ``max_new_tokens``, so a forced call or JSON value always has room after the reasoning.
        """
        from hermes_core.grammar import Reasoning

        if not thinking or self.variant.reasoning is None:
            return None
        room = _check_reasoning_budget(reasoning_budget)
        room = self.default_reasoning_budget if room is None else room
        if room is None:
            room = max(1, max_new_tokens // 2)
        elif room >= max_new_tokens:
            raise UnsupportedOptionError(
                f"reasoning_budget ({room}) leaves no room for the reply within max_new_tokens "
                f"({max_new_tokens}); lower reasoning_budget or raise max_new_tokens."
            )
        return Reasoning(self.variant.reasoning.open, self.variant.reasoning.close, room)

    def _constraint(
        self,
        schema: dict[str, Any] | None,
        specs: list[dict[str, Any]],
        choice: Any,
        parallel: bool,
        reasoning: Any = None,
    ) -> Constraint | None:
        """The reply's constraint: compiled by the engine's grammar cache, or as source only without one.

        With ``reasoning`` (a ``grammar.Reasoning``) the reply may open with a reasoning block of at most
        its budget of tokens; a reply that is otherwise free gets a constraint for that alone.
        """
        from hermes_core import grammar

        grammars = self.engine.grammars()
        if schema is not None and specs and choice.mode == "auto":
            if grammars is None:
                return grammar.tool_call_or_answer_constraint(specs, schema, parallel, reasoning=reasoning)
            return grammars.tools_or_answer_constraint(specs, schema, parallel, reasoning)
        if schema is not None and not specs:
            json_schema = None if schema.get("type") == "json_object" else schema
            if grammars is None:
                return grammar.json_constraint(json_schema, reasoning)
            return grammars.json_constraint(json_schema, reasoning)
        if not specs or choice.mode == "none":
            if reasoning is None:
                return None
            return (
                grammars.reasoning_constraint(reasoning)
                if grammars is not None
                else grammar.reasoning_constraint(reasoning)
            )
        if grammars is None:
            return grammar.tool_call_constraint(specs, choice, parallel, reasoning=reasoning)
        return grammars.tools_constraint(specs, choice, parallel, reasoning)

    # ------------------------------------------------------------------ result
    def _finish(self, prep: _Prepared, reply: _StreamedReply, raw: str) -> GenerationResult:
        """Validate calls and assemble the result with finish reason and usage."""
        from hermes_core.format.validation import validate_tool_calls

        parsed = reply.parsed()
        if not prep.json_mode:
            parsed = validate_tool_calls(parsed, prep.tools)
        final = reply.final
        length = final.finish_reason == "length" or reply.ended == "budget"
        reason = "length" if length and not reply.stops.stopped and reply.ended != "duplicate" else "stop"
        if reason == "stop" and parsed.tool_calls:
            reason = "tool_calls"
        usage = final.usage or Usage(prompt_tokens=len(prep.prompt_ids))
        if reply.ended or reply.appended:
            # the frontend ended the turn: what it read, plus what it appended (never above the budget)
            appended = self._count_appended(reply.appended) if reply.appended else 0
            usage = Usage(
                prompt_tokens=usage.prompt_tokens or len(prep.prompt_ids),
                completion_tokens=reply.read + appended,
            )
        return GenerationResult(
            parsed,
            reason,
            usage,
            raw_text=raw,
            model_name=self.model_name,
            appended_text=reply.appended,
            dropped=list(reply.dropped),
        )

    # ---------------------------------------------------------------- generate
    def _complete(self, prep: _Prepared) -> GenerationResult:
        """Generate the whole reply; it goes through the same token-by-token path as a stream."""
        events = list(self._stream_request(prep))
        result = events[-1].result
        assert result is not None
        return result

    def generate(self, messages: Sequence[Message | dict[str, Any]], **options: Any) -> GenerationResult:
        """Generate one assistant turn; ``REQUEST_OPTIONS`` lists the options (see ``Frontend._prepare``)."""
        return self._complete(self._prepare(messages, **options))

    # ------------------------------------------------------------------ stream
    def _stream_request(self, prep: _Prepared) -> Iterator[StreamEvent]:
        """Decode and parse the engine's tokens as they arrive."""
        reply = _StreamedReply(self, prep)
        with contextlib.closing(self.engine.generate(prep.request)) as outputs:  # type: ignore[type-var]
            for output in outputs:
                yield from reply.feed(output)
                if reply.ended:
                    break
        yield from reply.close()

    def stream(self, messages: Sequence[Message | dict[str, Any]], **options: Any) -> Iterator[StreamEvent]:
        """Stream one assistant turn as parser events; the last event (type ``end``) holds the result."""
        return self._stream_request(self._prepare(messages, **options))

    # ------------------------------------------------------------------- async
    async def agenerate(
        self, messages: Sequence[Message | dict[str, Any]], **options: Any
    ) -> GenerationResult:
        """Async ``generate``: the event loop never blocks; cancelling the task stops generation."""
        result = None
        async for event in self.astream(messages, **options):
            result = event.result if event.type == "end" else result
        assert result is not None
        return result

    async def astream(
        self, messages: Sequence[Message | dict[str, Any]], **options: Any
    ) -> AsyncIterator[StreamEvent]:
        """Async ``stream``; closing the iterator (or cancelling its task) stops generation."""
        prep = await asyncio.to_thread(self._prepare, messages, **options)
        reply = _StreamedReply(self, prep)
        try:
            async with contextlib.aclosing(self.engine.agenerate(prep.request)) as outputs:
                async for output in outputs:
                    for event in reply.feed(output):
                        yield event
                    if reply.ended:
                        break
            for event in reply.close():
                yield event
        finally:
            prep.request.cancel.set()


class _StreamedReply:
    """Turns a stream of engine outputs into parser events: detokenize, cut at stop strings, parse, validate.

    Token by token it also keeps a constrained reply whole (``BudgetReserve``: stop while the budget
    left still fits the reply's completion, then append it) and applies the repeated/cut-off call
    policy (``CallGate``). ``ended`` says why the frontend stopped the engine ("budget", "duplicate").
    """

    def __init__(self, frontend: Frontend, prep: _Prepared) -> None:
        from hermes_core._decoding import IncrementalDecoder, StopSequenceFilter
        from hermes_core.format.call_policy import CallGate
        from hermes_core.format.reply_completion import BudgetReserve
        from hermes_core.format.stream_parser import ToolCallStreamParser

        self._frontend = frontend
        self._prep = prep
        self._decoder = IncrementalDecoder(frontend.tokenizer)
        self.stops = StopSequenceFilter(prep.stop)
        self._gate = CallGate(ToolCallStreamParser(), prep.duplicate_tool_calls)  # type: ignore[arg-type]
        self._reserve = (
            BudgetReserve(prep.completer, prep.max_new_tokens, frontend._count_appended)
            if prep.completer is not None
            else None
        )
        self._text = ""  # the reply's text so far (before stop strings are cut)
        self.final = EngineOutput([])
        self.read = 0  # tokens read from the engine
        self.ended = ""
        self.appended = ""
        self.dropped = self._gate.dropped

    def parsed(self) -> ParsedResponse:
        return self._gate.parser.result()

    def feed(self, output: EngineOutput) -> list[StreamEvent]:
        """Events for the tokens of one engine output; a matched stop string cancels the generation."""
        from hermes_core.types import DroppedText

        events: list[StreamEvent] = []
        for token_id in output.token_ids:
            if self.ended:
                break
            self.read += 1
            piece = self._decoder.push(token_id)
            reserve = self._reserve
            if reserve is not None and reserve.active and not self._gate.has_call and not self.stops.stopped:
                check = reserve.check(self._text + piece, self.read)
                if check.verdict == "stop_before":
                    self.dropped.append(DroppedText(piece, "over_budget"))
                    events += self._append(check.suffix)
                    break
                events += self._release(piece)
                if check.verdict == "stop":
                    events += self._append(check.suffix)
                    break
            else:
                events += self._release(piece)
        if output.finish_reason is not None:
            self.final = output
        return events

    def _release(self, piece: str) -> list[StreamEvent]:
        """Pass model text on: stop strings, then the parser behind the call policy."""
        self._text += piece
        if self.stops.stopped:
            return []
        released = self.stops.feed(piece)
        if self.stops.stopped:
            self._prep.request.cancel.set()
        events, repeated = self._gate.feed(released)
        if repeated:
            self._end("duplicate")
        return self._checked(events)

    def _append(self, suffix: str) -> list[StreamEvent]:
        """Finish the reply with ``suffix`` (it counts toward the budget) and stop the engine."""
        self._end("budget")
        if not suffix:
            return []
        self.appended = suffix
        self._text += suffix
        released = self.stops.feed(suffix)
        events, _ = self._gate.feed(released)
        return self._checked(events)

    def _end(self, why: str) -> None:
        self.ended = why
        self._prep.request.cancel.set()

    def close(self) -> list[StreamEvent]:
        """The events of the held-back tail, then ``end`` with the whole result."""
        events: list[StreamEvent] = []
        if not self.ended:
            events += self._release(self._decoder.flush())
        events += self._checked(self._gate.feed(self.stops.flush())[0])
        cut_off = self.final.finish_reason == "length" and not self.ended and not self.stops.stopped
        events += self._checked(self._gate.close(cut_off))
        result = self._frontend._finish(self._prep, self, self._text)
        return [*events, StreamEvent("end", result=result)]

    def _checked(self, events: list[StreamEvent]) -> list[StreamEvent]:
        """Turn streamed calls that fail validation into invalid-call events (same id and index)."""
        from hermes_core.format.validation import validate_tool_calls

        checked_events: list[StreamEvent] = []
        for event in events:
            if event.type == "tool_call" and event.tool_call is not None and not self._prep.json_mode:
                checked = validate_tool_calls(ParsedResponse(tool_calls=[event.tool_call]), self._prep.tools)
                if checked.invalid_tool_calls:
                    event = StreamEvent(
                        "invalid_tool_call",
                        invalid_tool_call=checked.invalid_tool_calls[0],
                        index=event.index,
                    )
            checked_events.append(event)
        return checked_events


REQUEST_OPTIONS: frozenset[str] = frozenset(inspect.signature(Frontend._prepare).parameters) - {
    "self",
    "messages",
}
"""Keyword options ``generate``/``stream`` accept per request; adapters check their kwargs against it."""


def _defaults(*values: Any) -> dict[str, Any]:
    """The frontend-wide generation defaults by option name, for ``check_request_options``."""
    names = ("max_new_tokens", "temperature", "top_p", "repetition_penalty", "constrained")
    return dict(zip(names, values, strict=True))


def _reply_completer(
    schema: dict[str, Any] | None,
    specs: list[dict[str, Any]],
    choice: Any,
    reasoning: Any = None,
    single_token_tags: bool = False,
) -> Any:
    """What finishes a constrained reply cut off by the budget: JSON mode's value or the call blocks,
    after the reasoning block the grammar lets the reply open with (a ``grammar.Reasoning``, or None)."""
    from hermes_core.format.reply_completion import ReplyCompleter

    tags = None if reasoning is None else (reasoning.open, reasoning.close)
    if schema is not None:
        json_schema = None if schema.get("type") == "json_object" else schema
        return ReplyCompleter.for_json(json_schema, reasoning=tags)
    return ReplyCompleter.for_tools(
        specs,
        required=choice.mode == "required",
        tool_name=choice.tool_name,
        reasoning=tags,
        single_token_tags=single_token_tags,
    )


def _check_reasoning_budget(budget: int | None) -> int | None:
    """``reasoning_budget`` as an int of at least 1 (None stays None)."""
    if budget is None:
        return None
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise UnsupportedOptionError(
            f"reasoning_budget must be a whole number of tokens >= 1, got {budget!r}; "
            "pass reasoning=False for no reasoning."
        )
    return budget


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
