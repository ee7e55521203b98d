"""Grammar-constrained decoding for Hermes tool calls and JSON mode, built on xgrammar.

A ``GrammarCache`` is made once per loaded model. ``for_tools`` / ``for_json`` compile (and cache)
an ``xgrammar.CompiledGrammar`` for a request; ``logits_processor`` wraps one in a fresh
``transformers.LogitsProcessor`` for a single ``model.generate`` call. See
``docs/constrained-decoding.md`` for the grammar shapes and measured costs.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
import transformers
import xgrammar as xgr
from xgrammar import structural_tag as st

from hermes_core.errors import UnsupportedOptionError
from hermes_core.tool_choice import NormalizedToolChoice

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


def json_schema_ebnf(schema: dict[str, Any] | bool, *, what: str) -> str:
    """EBNF for compact JSON (``json.dumps`` separators, strict properties) valid for ``schema``.

    ``what`` names the schema's owner in the error raised when xgrammar cannot convert it.
    """
    try:
        grammar = xgr.Grammar.from_json_schema(
            json.dumps(schema), any_whitespace=False, separators=JSON_SEPARATORS, strict_mode=True
        )
    except Exception as exc:  # xgrammar raises RuntimeError/ValueError/TypeError from its C++ core
        raise UnsupportedOptionError(
            f"{what} has a JSON schema that grammar-constrained decoding cannot compile ({exc}); "
            "simplify the schema (e.g. drop unsupported keywords or external $refs) or disable "
            "constrained decoding for this request."
        ) from exc
    return str(grammar)


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


def tool_call_tag(tools: Sequence[dict[str, Any]], tool_name: str | None = None) -> st.TagFormat:
    """One ``<tool_call>\\n{JSON}\\n</tool_call>`` block calling any of ``tools`` (or only ``tool_name``)."""
    alternatives: list[st.Format] = []
    seen: set[str] = set()
    for tool in tools:
        function = _function_of(tool)
        name = function["name"]
        if name in seen or (tool_name is not None and name != tool_name):
            continue
        seen.add(name)
        ebnf = json_schema_ebnf(_parameters_of(function), what=f"Tool {name!r}")
        alternatives.extend(_call_alternatives(name, ebnf))
    if not alternatives:
        known = ", ".join(sorted(_function_of(t)["name"] for t in tools)) or "(no tools)"
        raise UnsupportedOptionError(
            f"tool_choice forces tool {tool_name!r}, but the offered tools are: {known}."
        )
    return st.TagFormat(
        begin=CALL_OPEN + "\n",
        content=st.OrFormat(elements=alternatives),
        end="\n" + CALL_CLOSE,
    )


def tool_call_structural_tag(
    tools: Sequence[dict[str, Any]], choice: NormalizedToolChoice, parallel_tool_calls: bool = True
) -> st.StructuralTag | None:
    """The structural tag constraining a reply to ``tools`` under ``choice``; None when unconstrained.

    - ``required`` (or a forced name): one or more call blocks separated by a newline, nothing else
      (exactly one when ``parallel_tool_calls`` is False).
    - ``auto``: free text; once ``<tool_call>`` appears the call must be valid, and after the first
      call only further calls (newline separated, if parallel) may follow before end of turn.
    - ``none``, or ``auto`` with no tools: None (no constraint).
    """
    if choice.mode == "none" or (choice.mode == "auto" and not tools):
        return None
    if not tools:
        raise UnsupportedOptionError("tool_choice='required' needs at least one tool; bind tools first.")
    tag = tool_call_tag(tools, choice.tool_name)
    if choice.mode == "required":
        fmt: st.Format = st.TagsWithSeparatorFormat(
            tags=[tag], separator=CALL_SEPARATOR, at_least_one=True, stop_after_first=not parallel_tool_calls
        )
    else:
        first = st.TriggeredTagsFormat(
            triggers=[CALL_OPEN], tags=[tag], stop_after_first=True, excludes=[CALL_CLOSE]
        )
        if parallel_tool_calls:
            more = st.StarFormat(content=st.SequenceFormat(elements=[st.ConstStringFormat(value="\n"), tag]))
            fmt = st.SequenceFormat(elements=[first, more])
        else:
            fmt = first
    return st.StructuralTag(format=fmt)


def _hidden_special_ids(tokenizer: Any) -> list[int]:
    """Ids of added special tokens the model must never emit in constrained output.

    Control tokens (``<|im_start|>``, ``<|endoftext|>``, ``<tools>``...) are not text; only the
    Hermes call delimiters stay usable, so a tokenizer that has ``<tool_call>`` as one special token
    (Hermes 2 Pro) can still open a call with it. Stop tokens are handled by xgrammar itself.
    """
    decoder = getattr(tokenizer, "added_tokens_decoder", None) or {}
    keep = {CALL_OPEN, CALL_CLOSE}
    return [
        int(i)
        for i, added in decoder.items()
        if getattr(added, "special", False) and getattr(added, "content", str(added)) not in keep
    ]


def build_tokenizer_info(tokenizer: Any, vocab_size: int, stop_token_ids: Sequence[int]) -> xgr.TokenizerInfo:
    """xgrammar's view of ``tokenizer``, with non-call special tokens made unusable.

    xgrammar treats an added special token as ordinary text (its literal spelling), so a JSON string
    could otherwise contain ``<|im_start|>``; giving those tokens an empty spelling marks them special.
    """
    info = xgr.TokenizerInfo.from_huggingface(
        tokenizer, vocab_size=vocab_size, stop_token_ids=list(stop_token_ids)
    )
    hidden = set(_hidden_special_ids(tokenizer)) - set(stop_token_ids)
    if not hidden or not hasattr(tokenizer, "backend_tokenizer"):
        return info
    encoded = [""] * vocab_size
    for token, index in tokenizer.get_vocab().items():
        if index < vocab_size and index not in hidden:
            encoded[index] = token
    return xgr.TokenizerInfo(
        encoded,
        info.vocab_type,
        vocab_size=vocab_size,
        stop_token_ids=list(stop_token_ids),
        add_prefix_space=info.add_prefix_space,
    )


def _canonical(value: Any) -> str:
    """A stable cache key for JSON-like data."""
    return json.dumps(value, sort_keys=True, default=repr)


class GrammarCache:
    """Compiles and caches grammars for one tokenizer; thread-safe, LRU-bounded.

    Built once per engine: xgrammar's tokenizer preprocessing is the expensive part, each
    grammar then compiles in milliseconds and repeated requests reuse the cached result.
    """

    def __init__(
        self, tokenizer: Any, vocab_size: int, stop_token_ids: Sequence[int], *, max_entries: int = 128
    ) -> None:
        if not stop_token_ids:
            raise UnsupportedOptionError(
                "GrammarCache needs at least one stop token id (the end-of-turn token)."
            )
        self.vocab_size = int(vocab_size)
        self.stop_token_ids = [int(t) for t in stop_token_ids]
        self.tokenizer_info = build_tokenizer_info(tokenizer, self.vocab_size, self.stop_token_ids)
        self.compiler = xgr.GrammarCompiler(self.tokenizer_info, cache_enabled=False)
        self.max_entries = max_entries
        self._cache: OrderedDict[str, xgr.CompiledGrammar] = OrderedDict()
        self._lock = threading.Lock()

    def _cached(self, key: str, build: Any) -> xgr.CompiledGrammar:
        """Return the grammar cached under ``key``, compiling it with ``build()`` on a miss."""
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        compiled = build()
        with self._lock:
            self._cache[key] = compiled
            self._cache.move_to_end(key)
            while len(self._cache) > self.max_entries:
                self._cache.popitem(last=False)
        return compiled

    def __len__(self) -> int:
        return len(self._cache)

    def for_tools(
        self, tools: Sequence[dict[str, Any]], choice: NormalizedToolChoice, parallel_tool_calls: bool = True
    ) -> xgr.CompiledGrammar | None:
        """The grammar for a tool-calling request, or None when the reply is unconstrained (``none``)."""
        tag = tool_call_structural_tag(tools, choice, parallel_tool_calls)
        if tag is None:
            return None
        key = _canonical(["tools", list(tools), choice.mode, choice.tool_name, bool(parallel_tool_calls)])
        return self._cached(key, lambda: self._compile_tag(tag))

    def _compile_tag(self, tag: st.StructuralTag) -> xgr.CompiledGrammar:
        """Compile a structural tag, turning xgrammar's errors into one naming the fix."""
        try:
            return self.compiler.compile_structural_tag(tag)
        except Exception as exc:
            raise UnsupportedOptionError(
                f"The tool-call grammar could not be compiled ({exc}); simplify the tools' parameter "
                "schemas or disable constrained decoding for this request."
            ) from exc

    def for_json(self, schema: dict[str, Any] | None) -> xgr.CompiledGrammar:
        """JSON mode: exactly one compact JSON value valid for ``schema`` (any object when None)."""
        if schema is None or schema == {"type": "json_object"}:
            schema = {"type": "object"}
        if not isinstance(schema, dict):
            raise UnsupportedOptionError(f"JSON mode needs a JSON schema dict, got {type(schema).__name__}.")
        key = _canonical(["json", schema])
        return self._cached(key, lambda: self._compile_json(schema))

    def _compile_json(self, schema: dict[str, Any]) -> xgr.CompiledGrammar:
        """Compile a JSON schema with compact separators; any object when it has no properties."""
        # strict_mode forbids properties a schema does not list; a bare object schema means "any object".
        strict = not (schema.get("type") == "object" and "properties" not in schema and len(schema) == 1)
        try:
            return self.compiler.compile_json_schema(
                json.dumps(schema), any_whitespace=False, separators=JSON_SEPARATORS, strict_mode=strict
            )
        except Exception as exc:
            raise UnsupportedOptionError(
                f"The JSON-mode schema could not be compiled for constrained decoding ({exc}); "
                "simplify the schema or disable constrained decoding."
            ) from exc

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
