"""Grammar-constrained decoding for Hermes tool calls and JSON mode, built on xgrammar.

A ``GrammarCache`` is made once per loaded model. ``tools_constraint`` / ``json_constraint`` build (and
cache) a request's ``Constraint``: the xgrammar ``CompiledGrammar`` with the source it was built from
(``for_tools`` / ``for_json`` return the compiled part); ``logits_processor`` wraps one in a fresh
``transformers.LogitsProcessor`` for a single ``model.generate`` call. ``tool_call_constraint`` /
``json_constraint`` give the source alone, for engines that compile nothing locally. See
``docs/constrained-decoding.md`` for the grammar shapes and measured costs.
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import transformers
import xgrammar as xgr
from xgrammar import structural_tag as st

from hermes_core.engines.base import Constraint
from hermes_core.errors import UnsupportedOptionError
from hermes_core.format.tool_choice import NormalizedToolChoice

CALL_OPEN = "<tool_call>"
CALL_CLOSE = "</tool_call>"
CALL_SEPARATOR = "\n"
JSON_SEPARATORS = (", ", ": ")
"""Item and key separators of constrained JSON, as ``json.dumps`` writes them by default."""

_EMPTY_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}


def _function_of(tool: dict[str, Any]) -> dict[str, Any]:
    """The ``function`` part of an OpenAI-style tool spec (a bare function dict is accepted too)."""
    function = tool.get("function", tool) if isinstance(tool, dict) else None
    if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
        raise UnsupportedOptionError(
            f"Tool spec {tool!r} has no function name; pass OpenAI-style specs "
            "{'type': 'function', 'function': {'name': ..., 'parameters': {...}}} (see to_tool_spec)."
        )
    return function


def _parameters_of(function: dict[str, Any]) -> dict[str, Any] | bool:
    """A tool's arguments schema; a tool without one takes an empty object."""
    parameters = function.get("parameters")
    if parameters is None:
        return _EMPTY_PARAMETERS
    if not isinstance(parameters, (dict, bool)):
        raise UnsupportedOptionError(
            f"Tool {function['name']!r} has parameters of type {type(parameters).__name__}; "
            "it must be a JSON schema object."
        )
    return parameters


_XGRAMMAR_LOCATION = re.compile(r"^\[[\d:]+\] \S+:\d+: ")


def _reason(exc: Exception) -> str:
    """xgrammar's error text without its C++ timestamp and source location."""
    return _XGRAMMAR_LOCATION.sub("", str(exc).strip())


_LOOSE_STRING_CHAR = r"[^\"\\\r\n]"
_JSON_STRING_CHAR = r"[^\0-\x1f\"\\\r\n]"


def _forbid_raw_control_characters(ebnf: str) -> str:
    """Make length-bounded strings reject raw control characters, as JSON requires.

    xgrammar 0.2.8 spells a ``minLength``/``maxLength`` string character as ``[^"\\\r\n]``, which admits
    raw U+0000-U+001F (invalid JSON, and the sentinels of single-token call delimiters); its other
    strings already use ``[^\0-\x1f"\\\r\n]``. A no-op once xgrammar fixes this.
    """
    return ebnf.replace(_LOOSE_STRING_CHAR, _JSON_STRING_CHAR)


def json_schema_ebnf(schema: dict[str, Any] | bool, *, what: str, strict: bool = True) -> str:
    """EBNF for compact JSON (``json.dumps`` separators) valid for ``schema``.

    ``strict`` forbids properties the schema does not list; ``what`` names the schema in the error
    raised when xgrammar cannot convert it.
    """
    try:
        grammar = xgr.Grammar.from_json_schema(
            json.dumps(schema), any_whitespace=False, separators=JSON_SEPARATORS, strict_mode=strict
        )
    except Exception as exc:  # xgrammar raises RuntimeError/ValueError/TypeError from its C++ core
        raise UnsupportedOptionError(
            f"{what} cannot be compiled for constrained decoding ({_reason(exc)}); simplify the schema "
            "(e.g. drop unsupported keywords, lookaround regexes or unresolvable $refs) or disable "
            "constrained decoding for this request."
        ) from exc
    return _forbid_raw_control_characters(str(grammar))


def json_mode_ebnf(schema: dict[str, Any]) -> str:
    """EBNF of JSON mode: one compact value valid for ``schema``; a bare object schema means any object."""
    # strict mode forbids unlisted properties, but a bare object schema means "any object"
    strict = not (schema.get("type") == "object" and "properties" not in schema and len(schema) == 1)
    return json_schema_ebnf(schema, what="The JSON-mode schema", strict=strict)


def _call_alternatives(name: str, parameters_ebnf: str) -> list[st.SequenceFormat]:
    """The two accepted key orders of one call object: name first (Hermes 2 Pro/3) and arguments first."""
    arguments = st.GrammarFormat(grammar=parameters_ebnf)
    quoted = json.dumps(name)
    return [
        st.SequenceFormat(
            elements=[
                st.ConstStringFormat(value='{"name": ' + quoted + ', "arguments": '),
                arguments,
                st.ConstStringFormat(value="}"),
            ]
        ),
        st.SequenceFormat(
            elements=[
                st.ConstStringFormat(value='{"arguments": '),
                arguments,
                st.ConstStringFormat(value=', "name": ' + quoted + "}"),
            ]
        ),
    ]


@dataclass(frozen=True)
class CallDelimiters:
    """How a grammar spells the call delimiters: as text, or as the sentinels of single special tokens."""

    open: str = CALL_OPEN
    close: str = CALL_CLOSE

    @property
    def single_tokens(self) -> bool:
        return self.open != CALL_OPEN

    def free_text_excludes(self) -> list[str]:
        """Strings prose may not contain: a stray close tag, or a delimiter spelled out in text."""
        return sorted({CALL_OPEN, CALL_CLOSE, self.close} - {self.open})


TEXT_DELIMITERS = CallDelimiters()
TOKEN_DELIMITERS = CallDelimiters("\x02", "\x03")
"""Sentinel spellings (STX/ETX) given to single-token ``<tool_call>``/``</tool_call>`` in xgrammar's
vocabulary: JSON strings cannot hold raw control characters, so the delimiter tokens can never appear
inside call arguments, only where the grammar expects them."""


def tool_call_tag(
    tools: Sequence[dict[str, Any]],
    tool_name: str | None = None,
    delimiters: CallDelimiters = TEXT_DELIMITERS,
) -> st.TagFormat:
    """One ``<tool_call>\\n{JSON}\\n</tool_call>`` block calling any of ``tools`` (or only ``tool_name``)."""
    alternatives: list[st.Format] = []
    seen: set[str] = set()
    for tool in tools:
        function = _function_of(tool)
        name = function["name"]
        if name in seen or (tool_name is not None and name != tool_name):
            continue
        seen.add(name)
        ebnf = json_schema_ebnf(_parameters_of(function), what=f"The parameters schema of tool {name!r}")
        alternatives.extend(_call_alternatives(name, ebnf))
    if not alternatives:
        known = ", ".join(sorted(_function_of(t)["name"] for t in tools)) or "(no tools)"
        raise UnsupportedOptionError(
            f"tool_choice forces tool {tool_name!r}, but the offered tools are: {known}."
        )
    return st.TagFormat(
        begin=delimiters.open + "\n",
        content=st.OrFormat(elements=alternatives),
        end="\n" + delimiters.close,
    )


@dataclass(frozen=True)
class Reasoning:
    """A reasoning block the reply may open with (``<think>...</think>``), and the most tokens it may hold.

    xgrammar counts the tokens inside the block (``AnyTextFormat(max_tokens=...)``): once ``budget`` are
    spent, the only tokens it allows are those spelling the closing tag, so the constrained part always
    gets its turn.
    """

    open: str
    close: str
    budget: int


REASONING_GAP = "[ \\n]{0,3}"
"""Whitespace allowed between a reasoning block's closing tag and what follows it."""


def reasoning_prefix(reasoning: Reasoning) -> st.OptionalFormat:
    """An optional reasoning block, bounded by its token budget, then a little whitespace."""
    block = st.TagFormat(
        begin=reasoning.open, content=st.AnyTextFormat(max_tokens=reasoning.budget), end=reasoning.close
    )
    return st.OptionalFormat(
        content=st.SequenceFormat(elements=[block, st.RegexFormat(pattern=REASONING_GAP)])
    )


def _after_reasoning(fmt: st.Format, reasoning: Reasoning | None) -> st.StructuralTag:
    """``fmt``, behind an optional reasoning block when ``reasoning`` is given."""
    if reasoning is None:
        return st.StructuralTag(format=fmt)
    return st.StructuralTag(format=st.SequenceFormat(elements=[reasoning_prefix(reasoning), fmt]))


def reasoning_structural_tag(reasoning: Reasoning) -> st.StructuralTag:
    """A free reply behind an optional, budgeted reasoning block.

    The reply may not open another reasoning block later, so the budget cannot be dodged by writing
    the opening tag as ordinary text.
    """
    return _after_reasoning(st.AnyTextFormat(excludes=[reasoning.open]), reasoning)


def json_structural_tag(schema: dict[str, Any], reasoning: Reasoning) -> st.StructuralTag:
    """JSON mode behind an optional, budgeted reasoning block."""
    return _after_reasoning(st.GrammarFormat(grammar=json_mode_ebnf(schema)), reasoning)


def tool_call_structural_tag(
    tools: Sequence[dict[str, Any]],
    choice: NormalizedToolChoice,
    parallel_tool_calls: bool = True,
    delimiters: CallDelimiters = TEXT_DELIMITERS,
    reasoning: Reasoning | None = None,
) -> st.StructuralTag | None:
    """The structural tag constraining a reply to ``tools`` under ``choice``; None when unconstrained.

    - ``required`` (or a forced name): one or more call blocks separated by a newline, nothing else
      (exactly one when ``parallel_tool_calls`` is False).
    - ``auto``: free text; once ``<tool_call>`` appears the call must be valid, and after the first
      call only further calls (newline separated, if parallel) may follow before end of turn.
    - ``none``, or ``auto`` with no tools: None (no constraint).

    With ``reasoning``, the reply may open with that reasoning block (at most its budget of tokens); in
    ``auto`` the free text may not open another one.
    """
    if choice.mode == "none" or (choice.mode == "auto" and not tools):
        return None
    if not tools:
        raise UnsupportedOptionError("tool_choice='required' needs at least one tool; bind tools first.")
    tag = tool_call_tag(tools, choice.tool_name, delimiters)
    if choice.mode == "required":
        fmt: st.Format = st.TagsWithSeparatorFormat(
            tags=[tag], separator=CALL_SEPARATOR, at_least_one=True, stop_after_first=not parallel_tool_calls
        )
    else:
        first = st.TriggeredTagsFormat(
            triggers=[delimiters.open],
            tags=[tag],
            stop_after_first=True,
            excludes=delimiters.free_text_excludes() + ([reasoning.open] if reasoning else []),
        )
        if parallel_tool_calls:
            separated = st.SequenceFormat(elements=[st.ConstStringFormat(value=CALL_SEPARATOR), tag])
            fmt = st.SequenceFormat(elements=[first, st.StarFormat(content=separated)])
        else:
            fmt = first
    return _after_reasoning(fmt, reasoning)


def tool_call_constraint(
    tools: Sequence[dict[str, Any]],
    choice: NormalizedToolChoice,
    parallel_tool_calls: bool = True,
    delimiters: CallDelimiters = TEXT_DELIMITERS,
    reasoning: Reasoning | None = None,
) -> Constraint | None:
    """The tool-call constraint as source only (the structural tag as JSON); None when unconstrained."""
    tag = tool_call_structural_tag(tools, choice, parallel_tool_calls, delimiters, reasoning)
    return None if tag is None else Constraint("structural_tag", tag.model_dump(mode="json"))


def _json_schema_of(schema: dict[str, Any] | None) -> dict[str, Any]:
    """The JSON-mode schema (any object for None / ``{"type": "json_object"}``), checked to be a dict."""
    if schema is None or schema == {"type": "json_object"}:
        schema = {"type": "object"}
    if not isinstance(schema, dict):
        raise UnsupportedOptionError(f"JSON mode needs a JSON schema dict, got {type(schema).__name__}.")
    return schema


def json_constraint(schema: dict[str, Any] | None, reasoning: Reasoning | None = None) -> Constraint:
    """JSON mode as source only: one JSON value valid for ``schema`` (any object when None).

    With ``reasoning`` it is a structural tag: the optional reasoning block, then the JSON value.
    """
    schema = _json_schema_of(schema)
    if reasoning is None:
        return Constraint("json_schema", schema)
    return Constraint("structural_tag", json_structural_tag(schema, reasoning).model_dump(mode="json"))


def reasoning_constraint(reasoning: Reasoning) -> Constraint:
    """A free reply behind an optional, budgeted reasoning block, as source only."""
    return Constraint("structural_tag", reasoning_structural_tag(reasoning).model_dump(mode="json"))


def _answer_ebnf(schema: dict[str, Any]) -> str:
    """Compact JSON for a final answer valid for ``schema``; a bare object schema means any object."""
    schema = _json_schema_of(schema)
    strict = not (schema.get("type") == "object" and "properties" not in schema and len(schema) == 1)
    return json_schema_ebnf(schema, what="The response_format schema", strict=strict)


def tool_call_or_answer_structural_tag(
    tools: Sequence[dict[str, Any]],
    schema: dict[str, Any],
    parallel_tool_calls: bool = True,
    delimiters: CallDelimiters = TEXT_DELIMITERS,
    reasoning: Reasoning | None = None,
) -> st.StructuralTag:
    """``auto`` tool choice with a response schema: call blocks (as in ``required``) or one JSON answer.

    The auto grammar's free text is replaced by a compact JSON value valid for ``schema``, so a reply
    either calls tools or is the structured final answer, never prose (behind the optional reasoning
    block when ``reasoning`` is given).
    """
    if not tools:
        raise UnsupportedOptionError("A tool-call-or-answer grammar needs at least one tool.")
    calls = st.TagsWithSeparatorFormat(
        tags=[tool_call_tag(tools, None, delimiters)],
        separator=CALL_SEPARATOR,
        at_least_one=True,
        stop_after_first=not parallel_tool_calls,
    )
    answer = st.GrammarFormat(grammar=_answer_ebnf(schema))
    return _after_reasoning(st.OrFormat(elements=[calls, answer]), reasoning)


def tool_call_or_answer_constraint(
    tools: Sequence[dict[str, Any]],
    schema: dict[str, Any],
    parallel_tool_calls: bool = True,
    delimiters: CallDelimiters = TEXT_DELIMITERS,
    reasoning: Reasoning | None = None,
) -> Constraint:
    """The tool-call-or-answer constraint as source only (the structural tag as JSON)."""
    tag = tool_call_or_answer_structural_tag(tools, schema, parallel_tool_calls, delimiters, reasoning)
    return Constraint("structural_tag", tag.model_dump(mode="json"))


def _special_tokens(tokenizer: Any) -> dict[int, str]:
    """Id -> text of the tokenizer's added special tokens (empty for tokenizers without any)."""
    decoder = getattr(tokenizer, "added_tokens_decoder", None) or {}
    return {
        int(i): getattr(added, "content", str(added))
        for i, added in decoder.items()
        if getattr(added, "special", False)
    }


def build_tokenizer_info(
    tokenizer: Any, vocab_size: int, stop_token_ids: Sequence[int]
) -> tuple[xgr.TokenizerInfo, CallDelimiters]:
    """xgrammar's view of ``tokenizer`` and the delimiter spelling its grammars must use.

    xgrammar reads an added special token as its literal text, so a JSON string could contain
    ``<|im_start|>`` or a single-token ``</tool_call>``. Control tokens get an empty spelling (xgrammar
    then never allows them); single-token call delimiters get control-character sentinels, so they
    stay usable exactly where the grammar puts a delimiter. Stop tokens are left to xgrammar.
    """
    stops = [int(t) for t in stop_token_ids]
    info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size, stop_token_ids=stops)
    special = {i: text for i, text in _special_tokens(tokenizer).items() if i < vocab_size and i not in stops}
    by_text = {text: i for i, text in special.items()}
    single = CALL_OPEN in by_text and CALL_CLOSE in by_text
    hidden = [i for i, text in special.items() if not (single and text in (CALL_OPEN, CALL_CLOSE))]
    if not hidden and not single:
        return info, TEXT_DELIMITERS
    vocab: list[bytes] = info.decoded_vocab
    for index in hidden:
        vocab[index] = b""
    delimiters = TEXT_DELIMITERS
    if single:
        delimiters = TOKEN_DELIMITERS
        sentinels = (delimiters.open.encode(), delimiters.close.encode())
        for index, text in enumerate(vocab):
            if index not in stops and any(s in text for s in sentinels):
                vocab[index] = b""  # raw STX/ETX byte tokens could otherwise forge a delimiter
        vocab[by_text[CALL_OPEN]], vocab[by_text[CALL_CLOSE]] = sentinels
    raw = xgr.TokenizerInfo(vocab, xgr.VocabType.RAW, vocab_size=vocab_size, stop_token_ids=stops)
    return raw, delimiters


def _canonical(value: Any) -> str:
    """A stable cache key for JSON-like data."""
    return json.dumps(value, sort_keys=True, default=repr)


class GrammarCache:
    """Compiles and caches grammars for one tokenizer; thread-safe, LRU-bounded by count and by bytes.

    Built once per engine: xgrammar's tokenizer preprocessing is the expensive part, each
    grammar then compiles in milliseconds and repeated requests reuse the cached result. A compiled
    grammar holds token masks over the whole vocabulary (3.9 MB for 200 one-argument tools with the
    embedded model's tokenizer, more for richer schemas), so the cache keeps at most ``max_entries``
    grammars and ``max_bytes`` bytes of them (default ``DEFAULT_MAX_BYTES``, or
    ``HERMES_GRAMMAR_CACHE_MB`` MiB), least recently used out first; the newest is always kept.
    """

    DEFAULT_MAX_BYTES = 512 * 1024 * 1024

    def __init__(
        self,
        tokenizer: Any,
        vocab_size: int,
        stop_token_ids: Sequence[int],
        *,
        max_entries: int = 128,
        max_bytes: int | None = None,
    ) -> None:
        from hermes_core.options import env_megabytes

        if not stop_token_ids:
            raise UnsupportedOptionError(
                "GrammarCache needs at least one stop token id (the end-of-turn token)."
            )
        if max_bytes is None:
            max_bytes = env_megabytes("HERMES_GRAMMAR_CACHE_MB", self.DEFAULT_MAX_BYTES // (1024 * 1024))
        if max_entries < 1 or max_bytes < 0:
            raise UnsupportedOptionError(
                f"GrammarCache needs max_entries >= 1 and max_bytes >= 0, got {max_entries} and {max_bytes}."
            )
        self.vocab_size = int(vocab_size)
        self.stop_token_ids = [int(t) for t in stop_token_ids]
        self.tokenizer_info, self.delimiters = build_tokenizer_info(
            tokenizer, self.vocab_size, self.stop_token_ids
        )
        self.compiler = xgr.GrammarCompiler(self.tokenizer_info, cache_enabled=False)
        self.max_entries = max_entries
        self.max_bytes = int(max_bytes)
        self._cache: OrderedDict[str, Constraint] = OrderedDict()
        self._sizes: dict[str, int] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def memory_bytes(self) -> int:
        """Bytes the cached grammars take (xgrammar's ``CompiledGrammar.memory_size_bytes``)."""
        return self._bytes

    def _cached(self, key: str, build: Any) -> Constraint:
        """Return the constraint cached under ``key``, compiling it with ``build()`` on a miss."""
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        compiled = build()
        size = int(getattr(compiled.compiled, "memory_size_bytes", 0) or 0)
        with self._lock:
            if key in self._cache:  # another thread compiled it meanwhile
                self._bytes -= self._sizes[key]
            self._cache[key] = compiled
            self._cache.move_to_end(key)
            self._sizes[key] = size
            self._bytes += size
            while len(self._cache) > 1 and (
                len(self._cache) > self.max_entries or self._bytes > self.max_bytes
            ):
                evicted, _ = self._cache.popitem(last=False)
                self._bytes -= self._sizes.pop(evicted)
        return compiled

    def __len__(self) -> int:
        return len(self._cache)

    def tools_constraint(
        self,
        tools: Sequence[dict[str, Any]],
        choice: NormalizedToolChoice,
        parallel_tool_calls: bool = True,
        reasoning: Reasoning | None = None,
    ) -> Constraint | None:
        """The constraint of a tool-calling request, or None when the reply is unconstrained (``none``)."""
        if choice.mode == "none" or (choice.mode == "auto" and not tools):
            return None
        key = _canonical(
            ["tools", list(tools), choice.mode, choice.tool_name, bool(parallel_tool_calls), reasoning]
        )
        return self._cached(key, lambda: self._compile_tools(tools, choice, parallel_tool_calls, reasoning))

    def for_tools(
        self,
        tools: Sequence[dict[str, Any]],
        choice: NormalizedToolChoice,
        parallel_tool_calls: bool = True,
        reasoning: Reasoning | None = None,
    ) -> xgr.CompiledGrammar | None:
        """The compiled grammar for a tool-calling request, or None when the reply is unconstrained."""
        constraint = self.tools_constraint(tools, choice, parallel_tool_calls, reasoning)
        return None if constraint is None else constraint.compiled

    def _compile_tools(
        self,
        tools: Sequence[dict[str, Any]],
        choice: NormalizedToolChoice,
        parallel_tool_calls: bool,
        reasoning: Reasoning | None,
    ) -> Constraint:
        """Build and compile the tool-call structural tag, turning xgrammar's errors into one naming the fix."""
        tag = tool_call_structural_tag(tools, choice, parallel_tool_calls, self.delimiters, reasoning)
        assert tag is not None
        try:
            compiled = self.compiler.compile_structural_tag(tag)
        except Exception as exc:
            raise UnsupportedOptionError(
                f"The tool-call grammar could not be compiled ({_reason(exc)}); simplify the tools' parameter "
                "schemas or disable constrained decoding for this request."
            ) from exc
        return Constraint("structural_tag", tag.model_dump(mode="json"), compiled)

    def tools_or_answer_constraint(
        self,
        tools: Sequence[dict[str, Any]],
        schema: dict[str, Any],
        parallel_tool_calls: bool = True,
        reasoning: Reasoning | None = None,
    ) -> Constraint:
        """``auto`` tool choice with a response schema: calls, or a JSON answer valid for ``schema``."""

        def build() -> Constraint:
            tag = tool_call_or_answer_structural_tag(
                tools, schema, parallel_tool_calls, self.delimiters, reasoning
            )
            try:
                compiled = self.compiler.compile_structural_tag(tag)
            except Exception as exc:
                raise UnsupportedOptionError(
                    f"The tool-call-or-answer grammar could not be compiled ({_reason(exc)}); simplify the "
                    "schemas or disable constrained decoding for this request."
                ) from exc
            return Constraint("structural_tag", tag.model_dump(mode="json"), compiled)

        key = _canonical(["tools-or-answer", list(tools), schema, bool(parallel_tool_calls), reasoning])
        return self._cached(key, build)

    def for_tools_or_answer(
        self,
        tools: Sequence[dict[str, Any]],
        schema: dict[str, Any],
        parallel_tool_calls: bool = True,
        reasoning: Reasoning | None = None,
    ) -> xgr.CompiledGrammar:
        """The compiled grammar of ``tools_or_answer_constraint``."""
        return self.tools_or_answer_constraint(tools, schema, parallel_tool_calls, reasoning).compiled

    def json_constraint(
        self, schema: dict[str, Any] | None, reasoning: Reasoning | None = None
    ) -> Constraint:
        """JSON mode: exactly one compact JSON value valid for ``schema`` (any object when None), behind an
        optional reasoning block when ``reasoning`` is given."""
        source = _json_schema_of(schema)
        return self._cached(
            _canonical(["json", source, reasoning]), lambda: self._compile_json(source, reasoning)
        )

    def for_json(
        self, schema: dict[str, Any] | None, reasoning: Reasoning | None = None
    ) -> xgr.CompiledGrammar:
        """The compiled grammar of JSON mode for ``schema`` (any object when None)."""
        return self.json_constraint(schema, reasoning).compiled

    def _compile_json(self, schema: dict[str, Any], reasoning: Reasoning | None) -> Constraint:
        """Compile a JSON schema with compact separators; any object when it has no properties."""
        if reasoning is None:
            return Constraint("json_schema", schema, self.compiler.compile_grammar(json_mode_ebnf(schema)))
        tag = json_structural_tag(schema, reasoning)
        return Constraint(
            "structural_tag", tag.model_dump(mode="json"), self.compiler.compile_structural_tag(tag)
        )

    def reasoning_constraint(self, reasoning: Reasoning) -> Constraint:
        """A free reply behind an optional reasoning block of at most ``reasoning.budget`` tokens."""

        def build() -> Constraint:
            tag = reasoning_structural_tag(reasoning)
            return Constraint(
                "structural_tag", tag.model_dump(mode="json"), self.compiler.compile_structural_tag(tag)
            )

        return self._cached(_canonical(["reasoning", reasoning]), build)

    def logits_processor(self, compiled: xgr.CompiledGrammar) -> GrammarLogitsProcessor:
        """A fresh processor enforcing ``compiled`` for exactly one ``generate`` call."""
        return GrammarLogitsProcessor(compiled, self.vocab_size)


class GrammarLogitsProcessor(transformers.LogitsProcessor):
    """Masks every token the grammar forbids; one instance serves one ``generate`` call.

    The first call sees the prompt (whatever part of it is not KV-cached); each later call
    first feeds the token sampled last step (``input_ids[:, -1]``) to the matcher.
    """

    def __init__(self, compiled: xgr.CompiledGrammar, vocab_size: int) -> None:
        self.compiled = compiled
        self.vocab_size = vocab_size
        self.matchers: list[xgr.GrammarMatcher] = []
        self.bitmask: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        batch = input_ids.shape[0]
        if not self.matchers:
            self.matchers = [xgr.GrammarMatcher(self.compiled) for _ in range(batch)]
            self.bitmask = xgr.allocate_token_bitmask(batch, self.vocab_size)
        else:
            if batch != len(self.matchers):
                raise RuntimeError("A GrammarLogitsProcessor serves one generate call; make a fresh one.")
            last = input_ids[:, -1].tolist()
            for matcher, token in zip(self.matchers, last, strict=True):
                if not matcher.is_terminated() and not matcher.accept_token(token):
                    raise RuntimeError(
                        f"Token {token} violates the grammar: another logits processor or sampler "
                        "re-enabled a masked token, or this processor was reused across generate calls."
                    )
        assert self.bitmask is not None
        for index, matcher in enumerate(self.matchers):
            if matcher.is_terminated():
                self.bitmask[index].fill_(-1)  # finished rows are padded by generate; leave them free
            else:
                matcher.fill_next_token_bitmask(self.bitmask, index)
        width = min(self.vocab_size, scores.shape[-1])
        if scores.device.type == "cpu":
            xgr.apply_token_bitmask_inplace(scores, self.bitmask, vocab_size=width)
        else:
            xgr.apply_token_bitmask_inplace(
                scores, self.bitmask.to(scores.device, non_blocking=True), vocab_size=width
            )
        if scores.shape[-1] > self.vocab_size:
            scores[:, self.vocab_size :] = float("-inf")  # padding ids beyond the tokenizer never decode
        return scores
