"""Decoding a call block's JSON value (the policy's ladder) and normalising it into calls.

Shared by the whole-text and the streaming parser, so both turn the same value text into the same
:class:`ToolCall` / :class:`InvalidToolCall` objects. Nothing here ever raises on model output.
"""

from __future__ import annotations

import ast
import json
import math
import re
from typing import Any

from hermes_core.types import InvalidToolCall, ToolCall, new_call_id


def _reject_constant(name: str) -> Any:
    """Refuse ``NaN``/``Infinity``: not JSON, and no tool schema can accept them."""
    raise ValueError(f"{name} is not a JSON value")


def _finite_float(text: str) -> float:
    """Refuse numbers that overflow to infinity (``1e999``): ``json.dumps(allow_nan=False)`` would fail."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is too large to be finite")
    return value


# strict=False lets raw control characters (newlines, tabs) appear inside strings, as models write them.
_DECODER = json.JSONDecoder(strict=False, parse_constant=_reject_constant, parse_float=_finite_float)

# decode_prefix: up to which position the whole text is decoded directly (a failure then counts at most
# this many characters), the first window after it, and how close to a window's end a failure must be
# to mean "cut by the window".
DIRECT_DECODE = 2048
_WINDOW = 512
_NEAR_END = 16


def decode_prefix(text: str, pos: int, hint: int = 0) -> tuple[Any, int]:
    """``raw_decode(text, pos)``: the JSON value starting at ``pos`` and the index just past it.

    Same result and same exception type, but the work is bounded by the value's own length (plus a
    constant): the decoder builds its error message by counting lines from the start of the string it
    was given, so repeated failed attempts deep into a long text would cost quadratic time. Decoding a growing window
    that starts at ``pos`` keeps every count local. A JSON parse never looks past the end of the value,
    so a window gives the whole text's answer unless the window's own end cut the value; that shows as a
    failure within a few characters of the end (or an unterminated string), and then the window doubles.
    ``hint``: where the value probably ends (the caller's guess, relative to ``pos``); the first window
    reaches a little past it. Near the start of the text (the usual case) the text is decoded directly.
    """
    if pos <= DIRECT_DECODE:
        return _DECODER.raw_decode(text, pos)
    n = len(text)
    size = max(_WINDOW, hint + _NEAR_END + 1)
    while True:
        end = pos + size
        if end >= n:
            value, stop = _DECODER.raw_decode(text[pos:] if pos else text)
            return value, pos + stop
        window = text[pos:end]
        try:
            value, stop = _DECODER.raw_decode(window)
        except json.JSONDecodeError as exc:
            if exc.pos < size - _NEAR_END and not exc.msg.startswith("Unterminated string"):
                raise
        else:
            return value, pos + stop
        size *= 2


_HAS_TRAILING_COMMA = re.compile(r",\s*[}\]]").search
# A string token runs to its closing quote or, when there is none, to the end of the text: a failed match
# must never be retried from every quote inside the string (that costs quadratic time).
_STRING_OR_TRAILING_COMMA = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?|,(\s*[}\]])', re.DOTALL)
# ast.literal_eval recurses in C; refuse depths that could exhaust the interpreter's stack.
_MAX_LITERAL_DEPTH = 200


class DecodeError(ValueError):
    """The value text is neither JSON nor a Python literal; the message says why."""


def _drop_comma(match: re.Match[str]) -> str:
    closer = match.group(1)
    return match.group(0) if closer is None else closer


def strip_trailing_commas(text: str) -> str:
    """Remove commas that directly precede ``}`` or ``]``, leaving double-quoted strings intact."""
    return _STRING_OR_TRAILING_COMMA.sub(_drop_comma, text)


def _json_compatible(value: Any) -> Any:
    """Map a Python literal onto JSON types (tuples become lists); reject anything JSON lacks."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        raise DecodeError("tool call has a number that is not finite")
    if isinstance(value, (list, tuple)):
        return [_json_compatible(item) for item in value]
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise DecodeError(f"tool call has a non-string object key {key!r}")
            out[key] = _json_compatible(item)
        return out
    raise DecodeError(f"tool call has a {type(value).__name__} value, which JSON cannot represent")


def decode_value(text: str, max_depth: int = 0) -> Any:
    """Decode ``text`` by the ladder: JSON, JSON minus trailing commas, then a Python literal."""
    try:
        return _DECODER.decode(text)
    except (ValueError, RecursionError) as exc:
        json_error = exc
    if _HAS_TRAILING_COMMA(text):
        try:
            return _DECODER.decode(strip_trailing_commas(text))
        except (ValueError, RecursionError):
            pass
    value = _python_via_json(text)
    if value is not UNDECIDED:
        return value
    if max_depth <= _MAX_LITERAL_DEPTH:
        try:
            literal = ast.literal_eval(text.strip())
        except Exception:  # literal_eval raises many types on garbage; none may escape
            pass
        else:
            return _json_compatible(literal)
    raise DecodeError(f"tool call is neither valid JSON ({json_error}) nor a Python literal")


UNDECIDED = object()


_PY_JSON = json.JSONDecoder(strict=False, parse_constant=_reject_constant, parse_float=_finite_float)
# Simple Python string literals (no backslash, no line break), bare words, and any other quote.
_PY_TOKEN = re.compile(r'"[^"\\\n\r]*"|\'[^\'\\\n\r]*\'|(?<![\w.])[A-Za-z_]\w*|["\']')
_PY_WORDS = {"True": "true", "False": "false", "None": "null"}


def _py_token_to_json(match: re.Match[str]) -> str:
    token = match.group(0)
    first = token[0]
    if first == '"' and len(token) > 1:
        return token
    if first == "'" and len(token) > 1:
        return '"' + token[1:-1].replace('"', '\\"') + '"'
    return _PY_WORDS.get(token, "!")  # an unknown name or a stray quote: not JSON, as intended


def _python_via_json(text: str) -> Any:
    """``ast.literal_eval`` plus JSON mapping, done by C's JSON decoder when that is provably equal.

    Without backslashes, NUL or line breaks inside strings, each Python string token maps to a JSON
    string with the same characters and ``True``/``False``/``None`` to their JSON names; any name,
    stray quote or other syntax JSON lacks (tuples, sets, comments, ``1_000``, implicit string
    concatenation) makes the JSON decode fail, and then ``UNDECIDED`` sends the caller to
    ``ast.literal_eval``. Non-finite floats are refused, as :func:`_json_compatible` would.
    """
    if "\\" in text or "\x00" in text:
        return UNDECIDED
    try:
        return _PY_JSON.decode(_PY_TOKEN.sub(_py_token_to_json, text))
    except (ValueError, RecursionError):
        return UNDECIDED


# A string, closed or running to the end of the text (group 1 or 2 is empty then); see above on why.
_STRING_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*("?)|\'[^\'\\]*(?:\\.[^\'\\]*)*(\'?)', re.DOTALL)


def _blank_string(match: re.Match[str]) -> str:
    """Drop a closed string; leave a lone quote for an unclosed one (so it counts as unpaired)."""
    return "" if match.group(1) or match.group(2) else match.group(0)[0]


def decode_spanning_value(text: str) -> Any:
    """Decode ``text`` (not strict JSON) only if it is one bracketed value spanning all of it.

    A shortcut for values followed by ``</tool_call>``: it returns what the structural scanner plus
    :func:`decode_value` would, or ``UNDECIDED`` when it cannot be sure they would agree (then the
    scanner decides). Lexing is checked to be the scanner's: no triple quotes, no comments, no quote
    left unpaired; and the literal must be the bracketed display itself (not, say, a tuple of two).
    """
    if _HAS_TRAILING_COMMA(text):
        try:
            return _DECODER.decode(strip_trailing_commas(text))
        except (ValueError, RecursionError):
            pass
    value = _python_via_json(text)  # lexes exactly as the scanner does when it succeeds
    if value is not UNDECIDED:
        return value
    if "'''" in text or '"""' in text:
        return UNDECIDED
    bare = _STRING_TOKEN.sub(_blank_string, text)
    if '"' in bare or "'" in bare or "#" in bare or bare.count("{") + bare.count("[") > _MAX_LITERAL_DEPTH:
        return UNDECIDED
    try:
        literal = ast.literal_eval(text)
    except Exception:  # not a literal: the scanner will find out why
        return UNDECIDED
    if type(literal) is not (dict if text[:1] == "{" else list):
        return UNDECIDED
    try:
        return _json_compatible(literal)
    except DecodeError:
        return UNDECIDED


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _arguments(call: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """The call's arguments as a dict, or None and the reason they are unusable."""
    args = call.get("arguments")
    if args is None:
        args = call.get("parameters")
    if args is None:
        return {}, ""
    if isinstance(args, dict):
        return args, ""
    if isinstance(args, str):
        if not args.strip():
            return {}, ""
        try:
            decoded = _DECODER.decode(args)
        except (ValueError, RecursionError):
            return None, "tool call arguments are a string that is not valid JSON"
        if isinstance(decoded, dict):
            return decoded, ""
        return (
            None,
            f"tool call arguments are a JSON string that decodes to {_describe(decoded)}, not an object",
        )
    return None, f"tool call arguments must be an object, got {_describe(args)}"


# Where a surrogate code point can come from: a \\u / \\U escape (JSON or Python) or a raw one in the text.
_SURROGATE_ESCAPE = re.compile(r"\\(?:u|U0000)[dD][89a-fA-F]").search
_LONE_SURROGATE = re.compile("[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]").search


def _has_surrogate(text: str) -> bool:
    """Whether ``text`` holds a surrogate code point (UTF-8 cannot encode one); fast in C."""
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _may_hold_surrogate(raw: str) -> bool:
    """Whether decoding ``raw`` can give a surrogate: only through an escape or a raw one."""
    return _SURROGATE_ESCAPE(raw) is not None or _has_surrogate(raw)


def _join_surrogates(value: Any) -> Any:
    """Join surrogate pairs left as two characters (Python literals keep them apart); refuse a lone one.

    JSON already joins an escaped pair into one character; a lone surrogate is no character at all and
    cannot be encoded as UTF-8, so the call is refused rather than silently changed.
    """
    if isinstance(value, str):
        if not _has_surrogate(value):
            return value
        lone = _LONE_SURROGATE(value)
        if lone is not None:
            raise DecodeError(
                f"tool call has a lone surrogate \\u{ord(lone.group()):04x} in a string, which is not a "
                "Unicode character (write the character itself, or a complete surrogate pair)"
            )
        return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le")
    if isinstance(value, list):
        return [_join_surrogates(item) for item in value]
    if isinstance(value, dict):
        return {_join_surrogates(key): _join_surrogates(item) for key, item in value.items()}
    return value


def make_call(item: Any, raw: str, call_id: str, surrogates: bool = False) -> ToolCall | InvalidToolCall:
    """Normalise one decoded call value into a ToolCall, or an InvalidToolCall saying what is wrong.

    ``surrogates``: the raw text may hold surrogate code points, so strings are checked for them.
    """
    if surrogates:
        try:
            item = _join_surrogates(item)
        except DecodeError as exc:
            return invalid(raw, str(exc), call_id)
    if not isinstance(item, dict):
        return InvalidToolCall(
            raw=raw,
            error=f'a tool call must be an object with "name" and "arguments", got {_describe(item)}',
            id=call_id,
        )
    name = item.get("name")
    clean_name = name.strip() if isinstance(name, str) else ""
    if not clean_name:
        error = 'tool call has no "name"' if name is None else 'tool call "name" must be a non-empty string'
        return InvalidToolCall(raw=raw, error=error, id=call_id)
    args, error = _arguments(item)
    if args is None:
        return InvalidToolCall(raw=raw, error=error, name=clean_name, id=call_id)
    if surrogates:
        try:  # arguments given as a JSON string were only decoded just now
            args = _join_surrogates(args)
        except DecodeError as exc:
            return InvalidToolCall(raw=raw, error=str(exc), name=clean_name, id=call_id)
    return ToolCall(name=clean_name, arguments=args, id=call_id)


def make_calls(value: Any, raw: str, first_id: str) -> list[ToolCall | InvalidToolCall]:
    """Normalise a decoded block value: an object is one call, a list is one call per element."""
    surrogates = _may_hold_surrogate(raw)
    if not isinstance(value, list):
        return [make_call(value, raw, first_id, surrogates)]
    if not value:
        return [InvalidToolCall(raw=raw, error="tool call is an empty list: no call in it", id=first_id)]
    calls = []
    for position, item in enumerate(value):
        item_raw = json.dumps(item, ensure_ascii=False)
        calls.append(make_call(item, item_raw, first_id if position == 0 else new_call_id(), surrogates))
    return calls


def invalid(raw: str, error: str, call_id: str) -> InvalidToolCall:
    """An invalid call for undecodable text, with the name recovered from the raw text if possible."""
    return InvalidToolCall(raw=raw, error=error, name=recover_name(raw), id=call_id)


# Strings (an unclosed one runs to the end, see _STRING_OR_TRAILING_COMMA), punctuation, other runs.
_TOKEN = re.compile(
    r'"[^"\\]*(?:\\.[^"\\]*)*"?|\'[^\'\\]*(?:\\.[^\'\\]*)*\'?|[{}\[\]:,]|[^"\'{}\[\]:,]+', re.DOTALL
)


def recover_name(raw: str) -> str | None:
    """Best-effort name of a broken call: the string value of a top-level ``name`` key."""
    depth = 0
    last_key: str | None = None
    expecting_value = False
    previous = ""
    for match in _TOKEN.finditer(raw):
        token = match.group(0)
        first = token[0]
        if first in "{[":
            depth += 1
            expecting_value = False
        elif first in "}]":
            depth -= 1
        elif depth == 1 and token == ":":
            expecting_value = last_key == "name"
        elif depth == 1 and token == ",":
            last_key, expecting_value = None, False
        elif depth == 1 and first in "\"'" and len(token) > 1:
            text = _string_value(token)
            if expecting_value:
                return text.strip() or None if text else None
            if previous in ("{", ","):
                last_key = text
        elif expecting_value and not token.isspace():  # "name" has a non-string value
            expecting_value = False
        if not token.isspace():
            previous = token if len(token) == 1 else "s"
    return None


def _string_value(token: str) -> str | None:
    try:
        value = _DECODER.decode(token) if token[0] == '"' else ast.literal_eval(token)
    except Exception:  # a malformed escape: the name is simply not recoverable
        return None
    return value if isinstance(value, str) else None
