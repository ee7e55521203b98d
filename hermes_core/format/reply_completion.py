"""Finishing a constrained reply that the token budget cut off: a JSON-mode value or Hermes call blocks.

A grammar guarantees a reply's shape only while tokens last. ``ReplyCompleter`` knows the whole shape a
constrained request's grammar enforces (``hermes_core.grammar``): JSON mode is one compact value of the
schema; tool calls are ``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>`` blocks (either key
order) separated by a newline, after optional prose in ``auto`` mode; either may come after a reasoning
block (``<think>...</think>`` and up to three spaces or newlines). ``complete(text)`` is the shortest
text that ends the reply validly, built on ``JsonCompleter``; ``BudgetReserve`` decides, token by token,
when the budget left is just enough for it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from hermes_core.format.json_completion import JsonCompleter, call_object_node

CALL_OPEN = "<tool_call>"
CALL_CLOSE = "</tool_call>"
_BLOCK_OPEN = CALL_OPEN + "\n"
_BLOCK_CLOSE = "\n" + CALL_CLOSE
_NEXT_BLOCK = "\n" + CALL_OPEN
_EMPTY_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}


def _json_mode_strict(schema: dict[str, Any]) -> bool:
    """As ``GrammarCache.for_json``: a bare ``{"type": "object"}`` means any object, others are strict."""
    return not (schema.get("type") == "object" and "properties" not in schema and len(schema) == 1)


class ReplyCompleter:
    """The shortest text that finishes a constrained reply validly (see the module docstring)."""

    def __init__(
        self,
        completer: JsonCompleter,
        *,
        calls: bool,
        required: bool = False,
        reasoning: tuple[str, str] | None = None,
        single_token_tags: bool = False,
    ) -> None:
        self._json = completer
        self._calls = calls
        self._required = required
        self._reasoning = reasoning  # (opening tag, closing tag) of an optional leading reasoning block
        self._single = single_token_tags  # <tool_call> is one token: its text is never seen in part
        self._whole_call = ""
        if calls:
            smallest = completer.smallest()
            self._whole_call = "" if smallest is None else _BLOCK_OPEN + smallest + _BLOCK_CLOSE

    @classmethod
    def for_json(
        cls, schema: dict[str, Any] | None, *, reasoning: tuple[str, str] | None = None
    ) -> ReplyCompleter:
        """JSON mode: one value of ``schema`` (None or ``{"type": "json_object"}``: any object)."""
        if schema is None or schema == {"type": "json_object"}:
            schema = {"type": "object"}
        completer = JsonCompleter.for_schema(schema, strict=_json_mode_strict(schema))
        return cls(completer, calls=False, reasoning=reasoning)

    @classmethod
    def for_tools(
        cls,
        tools: Sequence[dict[str, Any]],
        *,
        required: bool,
        tool_name: str | None = None,
        reasoning: tuple[str, str] | None = None,
        single_token_tags: bool = False,
    ) -> ReplyCompleter:
        """Tool-call blocks for OpenAI-style ``tools`` (only ``tool_name`` when given); prose first unless
        ``required``; ``reasoning``: the tags of a reasoning block the reply may open with;
        ``single_token_tags``: the tokenizer has ``<tool_call>`` as one token (the text never shows part of it)."""
        pairs = []
        for tool in tools:
            function = tool.get("function", tool)
            if tool_name is None or function["name"] == tool_name:
                parameters = function.get("parameters")
                pairs.append((function["name"], _EMPTY_PARAMETERS if parameters is None else parameters))
        completer = JsonCompleter(call_object_node(pairs))
        return cls(
            completer, calls=True, required=required, reasoning=reasoning, single_token_tags=single_token_tags
        )

    def complete(self, text: str) -> str | None:
        """The shortest suffix ending ``text`` as a valid reply, or None where none is known."""
        if self._reasoning is None:
            return self._reply(text, 0)
        opening, closing = self._reasoning
        if not text.startswith(opening):
            plain = self._reply(text, 0)
            if not opening.startswith(text):
                return plain
            smallest = self._reply("", 0)  # text may still open the reasoning block
            through = None if smallest is None else opening[len(text) :] + closing + smallest
            options = [o for o in (plain, through) if o is not None]
            return min(options, key=len) if options else None
        end = text.find(closing, len(opening))
        if end < 0:  # inside the reasoning: close it (finishing a cut closing tag), then the smallest reply
            smallest = self._reply("", 0)
            if smallest is None:
                return None
            for cut in range(min(len(closing) - 1, len(text) - len(opening)), 0, -1):
                if text.endswith(closing[:cut]):
                    return closing[cut:] + smallest
            return closing + smallest
        start = end + len(closing)
        gap = 0
        while gap < 3 and start + gap < len(text) and text[start + gap] in " \n":
            gap += 1
        return self._reply(text, start + gap)

    def _reply(self, text: str, start: int) -> str | None:
        """The shortest suffix ending ``text[start:]`` as a valid reply (without a reasoning block)."""
        if not self._calls:
            return self._json.complete(text, start)
        at = text.find(CALL_OPEN, start)
        if at < 0:
            if not self._required:
                return ""  # prose may end anywhere
            if not CALL_OPEN.startswith(text[start:]) or not self._whole_call:
                return None
            if self._single and len(text) > start:
                return None  # part of a one-token tag cannot have been generated
            return self._whole_call[len(text) - start :]
        while True:
            at += len(CALL_OPEN)
            if at >= len(text):
                return self._whole_call[len(CALL_OPEN) :] or None
            if text[at] != "\n":
                return None
            result = self._json.value_at(text, at + 1)
            if result is None or isinstance(result, str):
                return None if result is None else result + _BLOCK_CLOSE
            tail = text[result : result + len(_BLOCK_CLOSE)]
            if not _BLOCK_CLOSE.startswith(tail):
                return None
            if len(tail) < len(_BLOCK_CLOSE):
                return _BLOCK_CLOSE[len(tail) :]
            after = result + len(_BLOCK_CLOSE)
            if after == len(text):
                return ""
            tail = text[after : after + len(_NEXT_BLOCK)]
            if not _NEXT_BLOCK.startswith(tail) or not self._whole_call:
                return None
            if len(tail) < len(_NEXT_BLOCK):
                return _NEXT_BLOCK[len(tail) :] + self._whole_call[len(CALL_OPEN) :]
            at = after + 1


Verdict = Literal["continue", "stop", "stop_before"]


@dataclass
class BudgetCheck:
    """What ``BudgetReserve.check`` decided after a token.

    ``continue``: keep generating. ``stop``: stop now and append ``suffix``. ``stop_before``: the last
    token left too little room; drop its text and append ``suffix``, which finishes the text before it.
    """

    verdict: Verdict
    suffix: str = ""


class BudgetReserve:
    """Keeps enough of the token budget to finish the reply validly, whatever the last token opened.

    After each generated token, ``check(text, used)`` computes the completion of the text so far and
    its token count ``need`` (tokenized only when its UTF-8 length could reach the tokens left). While
    ``need`` is below the tokens left, generation goes on; at equality it stops and the completion is
    appended (the reply then uses the whole budget); when one token made ``need`` jump past what is
    left, that token is dropped and the previous text's completion, which fitted, is appended. So the
    finished reply never exceeds the budget. A reply with no known completion (a ``pattern`` string
    cut mid-way, say) turns the reserve off: it then ends where the budget does, as without it.
    """

    def __init__(self, completer: ReplyCompleter, budget: int, count_tokens: Callable[[str], int]) -> None:
        self._completer = completer
        self._budget = budget
        self._count = count_tokens
        self.active = True
        self._last = ""  # the completion of the previous text, known to fit
        self._last_fits = False
        smallest = completer.complete("")
        if smallest is not None and self._count(smallest) <= budget:
            self._last, self._last_fits = smallest, True  # the smallest whole reply fits
        else:
            self.active = False  # not even that fits: nothing to keep room for

    def check(self, text: str, used: int) -> BudgetCheck:
        """The decision after ``used`` tokens produced ``text``."""
        if not self.active:
            return BudgetCheck("continue")
        left = self._budget - used
        suffix = self._completer.complete(text)
        if suffix is None:
            self.active = False
            return BudgetCheck("continue")
        if not suffix or len(suffix.encode()) < left:
            need = 0 if not suffix else -1  # fewer bytes than tokens left: surely fits
        else:
            need = self._count(suffix)
        if need < left:
            self._last, self._last_fits = suffix, True
            return BudgetCheck("continue")
        if need == left:
            self.active = False
            return BudgetCheck("stop", suffix)
        self.active = False
        if self._last_fits:
            return BudgetCheck("stop_before", self._last)
        return BudgetCheck("continue")  # not even the smallest reply fits: nothing to keep room for
