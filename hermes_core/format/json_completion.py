"""The shortest text that finishes a cut-off JSON value so that it fits its JSON schema.

When the token budget runs out mid-value, a grammar has guaranteed the shape only so far. A
``JsonCompleter`` reads the partial text (compact JSON as the grammars write it: ``", "`` between
items, ``": "`` after keys, no other whitespace) against the schema and returns the shortest suffix
that closes the open string, finishes a number or literal, adds the missing required members and items
with their smallest valid values, and closes every open container; or None where it cannot (text that
does not fit the schema, a ``pattern``/``format`` string cut in the middle, an unsatisfiable schema).

Supported: ``$ref``/``$defs`` (recursion included), ``const``, ``enum``, ``anyOf``/``oneOf``, ``type``
(or a list of types), ``properties`` in schema order with ``required`` (the order xgrammar enforces),
``additionalProperties``, ``items``/``prefixItems``, ``minItems``, ``minLength``/``maxLength`` and
``minimum``/``maximum`` (exclusive too) on integers and numbers. Other keywords are not read; callers
check a completion with ``jsonschema`` before using it.

Calls made as the text grows are incremental: finished members and items are remembered by position,
so each call costs about the depth of the open value plus the new text, not the whole text.
"""

from __future__ import annotations

import functools
import json
import math
import re
from decimal import Decimal, InvalidOperation
from typing import Any

ITEM_SEPARATOR = ", "
KEY_SEPARATOR = ": "

_ANY, _NEVER, _ALT, _LIT, _INT, _NUM, _STR, _ARR, _OBJ = range(9)
_ANNOTATIONS = frozenset(
    {"$ref", "title", "description", "default", "examples", "$comment", "$schema", "$id", "deprecated"}
)
_STUCK = object()  # the text fits, but no completion is known
_FAIL = -1  # the text cannot be part of a valid value

_string_run = re.compile(r'[^"\\]+').match
_int_prefix = re.compile(r"-?(?:0|[1-9][0-9]*)?").match
_num_prefix = re.compile(r"-?(?:(?:0|[1-9][0-9]*)(?:\.[0-9]*)?(?:[eE][+-]?[0-9]*)?)?").match
_full_number = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?\Z").match
_full_int = re.compile(r"-?(?:0|[1-9][0-9]*)\Z").match
_HEX = frozenset("0123456789abcdefABCDEF")
_AFTER_NUMBER = frozenset(",}]\n")
_STRING_FINISHES = ('"', '/"', '0"', '00"', '000"', '0000"')  # close a string, finishing a cut escape


class _Node:
    """One schema, normalised: a kind and the few facts the completer reads."""

    __slots__ = ("alts", "extra", "hi", "hi_excl", "items", "kind", "lo", "lo_excl", "max_len", "min_len")
    __slots__ += ("outputs", "pattern", "prefix", "props", "required", "inputs")

    def __init__(self, kind: int) -> None:
        self.kind = kind
        self.alts: list[_Node] = []
        self.inputs: list[str] = []  # literal renderings accepted in the text
        self.outputs: list[str] = []  # literal renderings written (one per value)
        self.lo: Decimal | None = None
        self.hi: Decimal | None = None
        self.lo_excl = self.hi_excl = False
        self.min_len = 0
        self.max_len: int | None = None
        self.pattern: str | None = None
        self.prefix: list[_Node] = []
        self.items: _Node | None = None
        self.props: list[tuple[str, str, _Node]] = []  # (name, rendered key, schema) in schema order
        self.required: list[bool] = []
        self.extra: _Node | None = None


def _literal(values: list[Any], *, ascii_first: bool = False) -> _Node:
    """A node accepting exactly ``values``, written compactly as xgrammar renders const/enum values."""
    node = _Node(_LIT)
    for value in values:
        compact = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        ascii_ = json.dumps(value)
        spaced = json.dumps(value, ensure_ascii=False, separators=(ITEM_SEPARATOR, KEY_SEPARATOR))
        node.outputs.append(ascii_ if ascii_first else compact)
        for text in (compact, ascii_, spaced):
            if text not in node.inputs:
                node.inputs.append(text)
    return node


def _any_node() -> _Node:
    """Any JSON value (xgrammar's ``basic_any``)."""
    any_ = _Node(_ALT)
    obj, arr = _Node(_OBJ), _Node(_ARR)
    obj.extra = arr.items = any_
    any_.alts = [_Node(_NUM), _Node(_STR), _literal([True, False, None]), arr, obj]
    return any_


_ANY_NODE = _any_node()


def _pointer(root: Any, ref: str) -> Any:
    """The schema a local ``$ref`` (``#``, ``#/$defs/X``...) points at; KeyError when it cannot."""
    if ref == "#":
        return root
    if not ref.startswith("#/"):
        raise KeyError(ref)
    target = root
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        target = target[int(part)] if isinstance(target, list) else target[part]
    return target


class _Builder:
    """Turns a JSON schema into ``_Node``s, resolving ``$ref``s (cycles become shared nodes)."""

    def __init__(self, root: Any, strict: bool) -> None:
        self.root = root
        self.strict = strict
        self.memo: dict[int, _Node] = {}
        self.keep: list[Any] = []  # merged schemas stay alive so their ids stay unique

    def build(self, schema: Any) -> _Node:
        if schema is True or schema == {}:
            return _ANY_NODE
        if schema is False or not isinstance(schema, dict):
            return _Node(_NEVER)
        hit = self.memo.get(id(schema))
        if hit is not None:
            return hit
        if "$ref" in schema and _ANNOTATIONS.issuperset(schema):  # a plain reference shares its target's node
            try:
                target = _pointer(self.root, schema["$ref"])
            except (KeyError, IndexError, ValueError, TypeError):
                target = False
            node = self.memo[id(schema)] = self.build(target)
            return node
        node = self.memo[id(schema)] = _Node(_NEVER)
        built = self._build(schema)
        for slot in _Node.__slots__:
            setattr(node, slot, getattr(built, slot))
        return node

    def _merged(self, *schemas: dict[str, Any]) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for schema in schemas:
            merged.update(schema)
        self.keep.append(merged)
        return merged

    def _build(self, schema: dict[str, Any]) -> _Node:
        if "$ref" in schema:
            try:
                target = _pointer(self.root, schema["$ref"])
            except (KeyError, IndexError, ValueError, TypeError):
                return _Node(_NEVER)
            rest = {k: v for k, v in schema.items() if k not in _ANNOTATIONS}
            return self.build(self._merged(target, rest) if rest else target)
        if "allOf" in schema:
            parts = [p for p in schema["allOf"] if isinstance(p, dict)]
            rest = {k: v for k, v in schema.items() if k != "allOf"}
            resolved = [_pointer(self.root, p["$ref"]) if "$ref" in p else p for p in parts]
            return self.build(self._merged(*resolved, rest))
        for key in ("anyOf", "oneOf"):
            if isinstance(schema.get(key), list):
                rest = {k: v for k, v in schema.items() if k != key}
                node = _Node(_ALT)
                node.alts = [
                    self.build(self._merged(rest, alt) if rest and isinstance(alt, dict) else alt)
                    for alt in schema[key]
                ]
                return node
        if "const" in schema:
            return _literal([schema["const"]])
        if isinstance(schema.get("enum"), list):
            return _literal(list(schema["enum"]))
        kind = schema.get("type")
        if isinstance(kind, list):
            node = _Node(_ALT)
            node.alts = [self.build(self._merged(schema, {"type": k})) for k in kind]
            return node
        if kind is None:
            kind = self._implied_type(schema)
        return self._typed(kind, schema)

    @staticmethod
    def _implied_type(schema: dict[str, Any]) -> str | None:
        if any(k in schema for k in ("properties", "required", "additionalProperties")):
            return "object"
        if any(k in schema for k in ("items", "prefixItems", "minItems", "maxItems")):
            return "array"
        if any(k in schema for k in ("minLength", "maxLength", "pattern", "format")):
            return "string"
        if any(k in schema for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")):
            return "number"
        return None

    def _typed(self, kind: str | None, schema: dict[str, Any]) -> _Node:
        if kind is None:
            return _ANY_NODE
        if kind == "null":
            return _literal([None])
        if kind == "boolean":
            return _literal([True, False])
        if kind in ("integer", "number"):
            return self._number(kind, schema)
        if kind == "string":
            node = _Node(_STR)
            node.min_len = int(schema.get("minLength", 0))
            node.max_len = schema.get("maxLength")
            node.pattern = schema.get("pattern")
            if "format" in schema:
                node.pattern = node.pattern or "(?!)"  # a formatted string is not completed mid-way
            return node
        if kind == "array":
            return self._array(schema)
        if kind == "object":
            return self._object(schema)
        return _Node(_NEVER)

    @staticmethod
    def _number(kind: str, schema: dict[str, Any]) -> _Node:
        node = _Node(_INT if kind == "integer" else _NUM)
        for key, excl_key, lower in (
            ("minimum", "exclusiveMinimum", True),
            ("maximum", "exclusiveMaximum", False),
        ):
            bound, excl = schema.get(key), False
            value = schema.get(excl_key)
            if isinstance(value, bool):  # draft 4: a flag on minimum/maximum
                excl = value
            elif isinstance(value, (int, float)):
                bound, excl = value, True
                if schema.get(key) is not None:
                    other = schema[key]
                    if (lower and other > value) or (not lower and other < value):
                        bound, excl = other, False
            if bound is None:
                continue
            dec = Decimal(repr(bound)) if isinstance(bound, float) else Decimal(bound)
            if node.kind == _INT:  # integer bounds become inclusive integers
                if lower:
                    dec = Decimal(math.floor(dec) + 1) if excl else Decimal(math.ceil(dec))
                else:
                    dec = Decimal(math.ceil(dec) - 1) if excl else Decimal(math.floor(dec))
                excl = False
            if lower:
                node.lo, node.lo_excl = dec, excl
            else:
                node.hi, node.hi_excl = dec, excl
        return node

    def _array(self, schema: dict[str, Any]) -> _Node:
        node = _Node(_ARR)
        prefix = schema.get("prefixItems")
        items = schema.get("items")
        if isinstance(items, list):  # draft 7 tuple form
            prefix, items = items, schema.get("additionalItems")
        node.prefix = [self.build(p) for p in prefix or []]
        if items is None:
            items = False if (prefix and self.strict) else True
        node.items = self.build(items) if items is not False else None
        node.min_len = int(schema.get("minItems", 0))
        node.max_len = schema.get("maxItems")
        return node

    def _object(self, schema: dict[str, Any]) -> _Node:
        node = _Node(_OBJ)
        properties = schema.get("properties") or {}
        required = set(schema.get("required") or [])
        for name, sub in properties.items():
            rendered = json.dumps(name, ensure_ascii=False)
            node.props.append((name, rendered, self.build(sub)))
            node.required.append(name in required)
        extra = schema.get("additionalProperties")
        if extra is None:
            extra = not self.strict
        node.extra = self.build(extra) if extra is not False else None
        for name in sorted(required - set(properties)):
            # a required member the schema does not describe: any value of additionalProperties
            node.props.append((name, json.dumps(name, ensure_ascii=False), node.extra or _Node(_NEVER)))
            node.required.append(True)
        return node


def _canonical(value: Any) -> str:
    """A cache key that keeps key order: property order is what the grammar enforces."""
    return json.dumps(value, default=repr)


def build_schema_node(schema: Any, *, strict: bool = True) -> _Node:
    """The normalised form of ``schema``; ``strict`` forbids unlisted properties (as the grammars do).

    Nodes never change once built, so they are cached by the schema's content (requests repeat schemas).
    """
    return _schema_node(_canonical(schema), strict)


@functools.lru_cache(maxsize=256)
def _schema_node(schema_json: str, strict: bool) -> _Node:
    schema = json.loads(schema_json)
    return _Builder(schema, strict).build(schema)


def call_object_node(tools: list[tuple[str, Any]]) -> _Node:
    """A Hermes call object for any of ``tools`` ((name, parameters schema) pairs), in either key order.

    ``{"name": "t", "arguments": {...}}`` or ``{"arguments": {...}, "name": "t"}``, the two orders the
    tool-call grammar accepts; the arguments are strict (no unlisted properties), as there. Cached by
    content, as ``build_schema_node`` is.
    """
    return _call_object_node(_canonical([list(pair) for pair in tools]))


@functools.lru_cache(maxsize=128)
def _call_object_node(tools_json: str) -> _Node:
    node = _Node(_ALT)
    for name, parameters in json.loads(tools_json):
        arguments = build_schema_node(parameters, strict=True)
        quoted = _literal([name], ascii_first=True)
        for order in (
            (("name", quoted), ("arguments", arguments)),
            (("arguments", arguments), ("name", quoted)),
        ):
            obj = _Node(_OBJ)
            obj.props = [(key, json.dumps(key), sub) for key, sub in order]
            obj.required = [True, True]
            node.alts.append(obj)
    return node


def _fits(value: Decimal, node: _Node) -> bool:
    if node.lo is not None and (value < node.lo or (node.lo_excl and value == node.lo)):
        return False
    return not (node.hi is not None and (value > node.hi or (node.hi_excl and value == node.hi)))


def _number_text(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text


def _smallest_number(node: _Node) -> str | None:
    """The shortest JSON number of ``node`` (an integer where one fits)."""
    candidates = [Decimal(0), Decimal(1), Decimal(-1)]
    for bound in (node.lo, node.hi):
        if bound is not None:
            whole = Decimal(math.floor(bound))
            candidates += [bound, whole - 1, whole, whole + 1, whole + 2]
    if node.lo is not None and node.hi is not None:
        candidates.append((node.lo + node.hi) / 2)
    if node.lo is not None and node.lo_excl:
        candidates += [node.lo + Decimal(10) ** -k for k in range(1, 7)]
    if node.hi is not None and node.hi_excl:
        candidates += [node.hi - Decimal(10) ** -k for k in range(1, 7)]
    texts = [
        _number_text(c) for c in candidates if _fits(c, node) and (node.kind != _INT or c == c.to_integral())
    ]
    return min(texts, key=len) if texts else None


def _integer_suffix(prefix: str, node: _Node) -> str | None:
    """Shortest digits finishing the integer ``prefix`` ("", "-" or digits) within ``node``'s bounds."""
    negative = prefix.startswith("-")
    digits = prefix[1:] if negative else prefix
    if digits == "0":
        return "" if _fits(Decimal(0), node) else None
    widest = max(len(_number_text(b)) for b in (node.lo, node.hi, Decimal(0)) if b is not None) + 1
    for extra in range(0, widest + 1):
        if not digits and extra == 0:
            continue
        if digits:
            base = int(digits) * 10**extra
            low, high = base, base + 10**extra - 1
        elif extra == 1:
            low, high = (1 if negative else 0), 9
        else:
            low, high = 10 ** (extra - 1), 10**extra - 1
        if negative:
            low, high = -high, -low
        lo = max(low, math.ceil(node.lo) if node.lo is not None else low)
        hi = min(high, math.floor(node.hi) if node.hi is not None else high)
        for value in (lo, hi, lo + 1, hi - 1):
            if low <= value <= high and lo <= value <= hi and _fits(Decimal(value), node):
                return str(value)[len(prefix) :]
    return None


def _fraction_suffix(prefix: str, node: _Node) -> str | None:
    """Shortest digits after ``prefix`` (which ends in "." or fraction digits) landing in the bounds."""
    level = [""]
    for _ in range(8):
        following = []
        for tail in level:
            text = prefix + tail
            if not text.endswith(".") and _fits(Decimal(text), node):
                return tail
            for digit in "0123456789":
                candidate = text + digit
                low = Decimal(candidate)
                step = Decimal(10) ** -(len(candidate) - candidate.index(".") - 1)
                low, high = (low - step, low) if candidate.startswith("-") else (low, low + step)
                if (node.hi is None or low <= node.hi) and (node.lo is None or high >= node.lo):
                    following.append(tail + digit)
        level = following[:50]
    return None


def _number_suffix(prefix: str, node: _Node) -> str | None:
    """Shortest text finishing the number ``prefix`` within ``node``'s bounds, or None."""
    if node.kind == _INT:
        return _integer_suffix(prefix, node)
    if "e" in prefix or "E" in prefix:
        finish = "" if prefix[-1].isdigit() else "0"
        try:
            return finish if _fits(Decimal(prefix + finish), node) else None
        except InvalidOperation:
            return None
    if "." in prefix:
        return _fraction_suffix(prefix, node)
    if prefix == "-0" and (node.lo is not None or node.hi is not None):
        fraction = _fraction_suffix("-0.", node)  # xgrammar's number ranges spell zero as -0.0, never -0
        return None if fraction is None else "." + fraction
    whole = _integer_suffix(prefix, node)
    if whole is not None:
        return whole
    # No integer fits: an integer part that the prefix can still grow into, then a fraction. Candidates
    # are the prefix itself (or 0 after a bare sign) and the integer parts of the bounds that extend it.
    heads = [prefix + "0"] if prefix in ("", "-") else [prefix]
    for bound in (node.lo, node.hi):
        if bound is not None:
            head = _number_text(Decimal(int(bound)))  # truncated toward zero: -1.01 -> -1
            if bound < 0 and not head.startswith("-"):
                head = "-" + head
            if head.startswith(prefix) and head != prefix:
                heads.append(head)
    finishes = []
    for head in heads:
        fraction = _fraction_suffix(head + ".", node)
        if fraction is not None:
            finishes.append(head[len(prefix) :] + "." + fraction)
    return min(finishes, key=len) if finishes else None


class JsonCompleter:
    """Finishes partial JSON text for one schema; reuse it while the text grows (see the module doc)."""

    def __init__(self, root: _Node) -> None:
        self.root = root
        self._text = ""
        self._done: dict[tuple[int, int], int] = {}
        self._objects: dict[tuple[int, int], tuple[int, int, int]] = {}
        self._arrays: dict[tuple[int, int], tuple[int, int]] = {}
        self._strings: dict[int, tuple[int, int]] = {}
        self._smallest: dict[int, str | None] = {}
        self._pending: set[int] = set()
        self._cycles: list[set[int]] = [set()]

    @classmethod
    def for_schema(cls, schema: Any, *, strict: bool = True) -> JsonCompleter:
        """A completer for values of a JSON schema (``strict``: no unlisted properties)."""
        return cls(build_schema_node(schema, strict=strict))

    def smallest(self, node: _Node | None = None) -> str | None:
        """The shortest valid text of ``node`` (default: the root), or None where there is none."""
        node = self.root if node is None else node
        key = id(node)
        if key in self._smallest:
            return self._smallest[key]
        if key in self._pending:  # a cycle back here is not a way to finish
            self._cycles[-1].add(key)
            return None
        self._pending.add(key)
        self._cycles.append(set())
        text = self._compute_smallest(node)
        self._pending.discard(key)
        open_cycles = self._cycles.pop() - {key}
        if open_cycles:  # computed while an enclosing node was unknown: it may be longer than needed
            self._cycles[-1] |= open_cycles
        else:
            self._smallest[key] = text
        return text

    def _compute_smallest(self, node: _Node) -> str | None:
        kind = node.kind
        if kind == _ALT:
            texts = [t for t in (self.smallest(a) for a in node.alts) if t is not None]
            return min(texts, key=len) if texts else None
        if kind == _LIT:
            return min(node.outputs, key=len) if node.outputs else None
        if kind in (_INT, _NUM):
            return _smallest_number(node)
        if kind == _STR:
            if node.pattern is not None or (node.max_len is not None and node.max_len < node.min_len):
                return None
            return '"' + "a" * node.min_len + '"'
        if kind == _ARR:
            return self._close_array(node, 0, "[")
        if kind == _OBJ:
            return self._close_object(node, -1, 0, "{")
        return None

    # -------------------------------------------------------------- public
    def complete(self, text: str, start: int = 0) -> str | None:
        """The shortest suffix making ``text[start:]`` one complete valid value, or None."""
        result = self.value_at(text, start)
        if isinstance(result, str) or result is None:
            return result
        return "" if result == len(text) else None

    def value_at(self, text: str, start: int = 0) -> int | str | None:
        """The value starting at ``text[start]``: where it ends (int) when complete and followed by more
        text or the end, else the shortest suffix finishing it (str); None when it cannot be finished."""
        if not text.startswith(self._text):
            self._done.clear()
            self._objects.clear()
            self._arrays.clear()
            self._strings.clear()
        self._text = text
        result = self._value(self.root, start)
        if result is _STUCK or result == _FAIL:
            return None
        return result

    # ------------------------------------------------------------- parsing
    def _value(self, node: _Node, pos: int) -> Any:
        """DONE (int end), a completion (str), _STUCK, or _FAIL for the value of ``node`` at ``pos``."""
        key = (id(node), pos)
        known = self._done.get(key)
        if known is not None:
            return known
        text = self._text
        if pos >= len(text):
            smallest = self.smallest(node)
            return _STUCK if smallest is None else smallest
        kind = node.kind
        if kind == _ALT:
            result = self._alternatives(node, pos)
        elif kind == _LIT:
            result = self._literal(node, pos)
        elif kind == _STR:
            result = self._string(node, pos)
        elif kind in (_INT, _NUM):
            result = self._number(node, pos)
        elif kind == _ARR:
            result = self._array(node, pos)
        elif kind == _OBJ:
            result = self._object(node, pos)
        else:
            result = _FAIL
        if isinstance(result, int):
            self._done[key] = result
        return result

    def _alternatives(self, node: _Node, pos: int) -> Any:
        best: Any = _FAIL
        for alt in node.alts:
            result = self._value(alt, pos)
            if isinstance(result, int) and result != _FAIL:
                return result
            if isinstance(result, str):
                if not isinstance(best, str) or len(result) < len(best):
                    best = result
            elif result is _STUCK and best == _FAIL:
                best = _STUCK
        return best

    def _literal(self, node: _Node, pos: int) -> Any:
        text = self._text
        available = len(text) - pos
        best: Any = _FAIL
        for rendering in node.inputs:
            if available >= len(rendering) and text.startswith(rendering, pos):
                end = pos + len(rendering)
                if not rendering[-1].isdigit():
                    return end
                if end < len(text):
                    if text[end] in _AFTER_NUMBER:
                        return end
                    continue
                rest = ""  # a number at the very end might still go on
            elif available < len(rendering) and rendering.startswith(text[pos:]):
                rest = rendering[available:]
            else:
                continue
            if not isinstance(best, str) or len(rest) < len(best):
                best = rest
        return best

    def _number(self, node: _Node, pos: int) -> Any:
        text = self._text
        match = (_int_prefix if node.kind == _INT else _num_prefix)(text, pos)
        end = match.end()
        if end < len(text):
            body = text[pos:end]
            if text[end] not in _AFTER_NUMBER or not (_full_int if node.kind == _INT else _full_number)(body):
                return _FAIL
            return end if _fits(Decimal(body), node) else _FAIL
        suffix = _number_suffix(text[pos:end], node)
        return _STUCK if suffix is None else suffix

    def _string(self, node: _Node, pos: int) -> Any:
        text = self._text
        if text[pos] != '"':
            return _FAIL
        at, count = self._strings.get(pos, (pos + 1, 0))
        n = len(text)
        while at < n:
            run = _string_run(text, at)
            if run:
                count += run.end() - at
                at = run.end()
                if at >= n:
                    break
            char = text[at]
            if char == '"':
                self._strings[pos] = (at, count)
                if count < node.min_len or (node.max_len is not None and count > node.max_len):
                    return _FAIL
                if node.pattern is not None and not self._matches(node.pattern, text[pos : at + 1]):
                    return _FAIL
                return at + 1
            if at + 1 >= n:
                break
            if text[at + 1] == "u":
                if at + 6 > n:
                    break
                at += 6
            else:
                at += 2
            count += 1
        self._strings[pos] = (at, count)
        tail = text[at:]  # an escape cut in the middle, or nothing
        finish = ""
        if tail == "\\":
            finish, count = "/", count + 1
        elif tail.startswith("\\u"):
            digits = tail[2:]
            if any(c not in _HEX for c in digits):
                return _FAIL
            finish = "0" * (4 - len(digits))
            if 0xD800 <= int((digits + finish), 16) <= 0xDBFF:
                finish += "\\udc00"  # a high surrogate needs its pair
            count += 1
        if node.max_len is not None and count > node.max_len:
            return _FAIL
        finish += "a" * max(0, node.min_len - count) + '"'
        if node.pattern is not None and not self._matches(node.pattern, text[pos:] + finish):
            return _STUCK
        return finish

    @staticmethod
    def _matches(pattern: str, quoted: str) -> bool:
        try:
            return re.search(pattern, json.loads(quoted)) is not None
        except (re.error, ValueError):
            return False

    def _item_node(self, node: _Node, index: int) -> _Node | None:
        return node.prefix[index] if index < len(node.prefix) else node.items

    def _close_array(self, node: _Node, count: int, head: str) -> str | None:
        """``head`` plus the smallest items up to ``minItems``, then ``]``."""
        parts = [head]
        for index in range(count, node.min_len):
            item = self._item_node(node, index)
            smallest = None if item is None else self.smallest(item)
            if smallest is None:
                return None
            parts.append((ITEM_SEPARATOR if index else "") + smallest)
        if node.max_len is not None and max(count, node.min_len) > node.max_len:
            return None
        return "".join(parts) + "]"

    def _array(self, node: _Node, pos: int) -> Any:
        text = self._text
        if text[pos] != "[":
            return _FAIL
        key = (id(node), pos)
        at, count = self._arrays.get(key, (pos + 1, 0))
        n = len(text)
        while True:
            if at >= n:  # after "[" or after ", ": an item may (or must) follow
                if count == 0:
                    return self._close_array(node, 0, "") or _STUCK
                return self._next_item(node, count)
            if count == 0 and text[at] == "]":
                return at + 1 if node.min_len == 0 else _FAIL
            item = self._item_node(node, count)
            if item is None or (node.max_len is not None and count >= node.max_len):
                return _FAIL
            result = self._value(item, at)
            if not isinstance(result, int):
                if result is _STUCK:
                    return _STUCK
                rest = self._close_array(node, count + 1, "")
                return _STUCK if rest is None else result + rest
            if result == _FAIL:
                return _FAIL
            at, count = result, count + 1
            if at >= n:
                return self._close_array(node, count, "") or _STUCK
            if text[at] == "]":
                return at + 1 if count >= node.min_len else _FAIL
            if not text.startswith(ITEM_SEPARATOR, at):
                if text[at] == "," and at + 1 == n:
                    return self._next_item(node, count, " ")
                return _FAIL
            at += len(ITEM_SEPARATOR)
            self._arrays[key] = (at, count)

    def _next_item(self, node: _Node, count: int, head: str = "") -> Any:
        item = self._item_node(node, count)
        smallest = None if item is None else self.smallest(item)
        rest = self._close_array(node, count + 1, "")
        return _STUCK if smallest is None or rest is None else head + smallest + rest

    # ------------------------------------------------------------- objects
    def _members_after(self, node: _Node, index: int) -> str | None:
        """The missing required members after property ``index``, each with its smallest value."""
        parts = []
        for j in range(index + 1, len(node.props)):
            if node.required[j]:
                smallest = self.smallest(node.props[j][2])
                if smallest is None:
                    return None
                parts.append(ITEM_SEPARATOR + node.props[j][1] + KEY_SEPARATOR + smallest)
        return "".join(parts)

    def _close_object(self, node: _Node, index: int, count: int, head: str) -> str | None:
        """``head`` plus the missing required members after ``index``, then ``}``."""
        rest = self._members_after(node, index)
        if rest is None:
            return None
        if count == 0 and rest:
            rest = rest[len(ITEM_SEPARATOR) :]
        return head + rest + "}"

    def _allowed(self, node: _Node, index: int) -> range:
        """Indices of the properties that may come after property ``index`` (no required one skipped)."""
        stop = index + 1
        while stop < len(node.props):
            stop += 1
            if node.required[stop - 1]:
                break
        return range(index + 1, stop)

    def _required_done(self, node: _Node, index: int) -> bool:
        return not any(node.required[index + 1 :])

    def _member_options(self, node: _Node, index: int, typed: str) -> Any:
        """Shortest way to finish an object whose next member has begun as ``typed`` (raw key text, maybe "")."""
        best: str | None = None
        for j in self._allowed(node, index):
            rendered, sub = node.props[j][1], node.props[j][2]
            if not rendered.startswith(typed):
                continue
            smallest = self.smallest(sub)
            rest = self._close_object(node, j, 1, "")
            if smallest is None or rest is None:
                continue
            option = rendered[len(typed) :] + KEY_SEPARATOR + smallest + rest
            if best is None or len(option) < len(best):
                best = option
        if node.extra is not None and self._required_done(node, index):
            finish = self._extra_key_finish(node, typed)
            smallest = self.smallest(node.extra)
            if finish is not None and smallest is not None:
                option = finish + KEY_SEPARATOR + smallest + "}"
                if best is None or len(option) < len(best):
                    best = option
        return _STUCK if best is None else best

    @staticmethod
    def _extra_key_finish(node: _Node, typed: str) -> str | None:
        """Text closing an unlisted key begun as ``typed`` (an escape may be cut); never a listed name."""
        if not typed:
            typed, head = '"', '"'
        else:
            head = ""
        for finish in _STRING_FINISHES:
            try:
                name = json.loads(typed + finish)
            except ValueError:
                continue
            while any(name == prop[0] for prop in node.props):
                finish, name = finish[:-1] + '_"', name + "_"
            return head + finish
        return None

    def _object(self, node: _Node, pos: int) -> Any:
        text = self._text
        if text[pos] != "{":
            return _FAIL
        key = (id(node), pos)
        at, index, count = self._objects.get(key, (pos + 1, -1, 0))
        n = len(text)
        while True:
            if at >= n:  # after "{" or ", ": a key may (or must) follow
                if count == 0:
                    return self._close_object(node, index, 0, "") or _STUCK
                return self._member_options(node, index, "")
            if count == 0 and text[at] == "}":
                return at + 1 if self._required_done(node, index) else _FAIL
            if text[at] != '"':
                return _FAIL
            close = self._key_end(at)
            if close is None:  # the key is cut off
                return self._member_options(node, index, text[at:])
            name = json.loads(text[at : close + 1])
            sub, new_index = self._member_schema(node, index, name)
            if sub is None:
                return _FAIL
            value_at = close + 1 + len(KEY_SEPARATOR)
            if value_at > n:  # cut inside ": "
                if not KEY_SEPARATOR.startswith(text[close + 1 :]):
                    return _FAIL
                smallest = self.smallest(sub)
                rest = self._close_object(node, new_index, 1, "")
                if smallest is None or rest is None:
                    return _STUCK
                return KEY_SEPARATOR[n - close - 1 :] + smallest + rest
            if not text.startswith(KEY_SEPARATOR, close + 1):
                return _FAIL
            result = self._value(sub, value_at)
            if not isinstance(result, int):
                if result is _STUCK:
                    return _STUCK
                rest = self._close_object(node, new_index, 1, "")
                return _STUCK if rest is None else result + rest
            if result == _FAIL:
                return _FAIL
            at, index, count = result, new_index, count + 1
            if at >= n:
                return self._close_object(node, index, 1, "") or _STUCK
            if text[at] == "}":
                return at + 1 if self._required_done(node, index) else _FAIL
            if not text.startswith(ITEM_SEPARATOR, at):
                if text[at] == "," and at + 1 == n:
                    options = self._member_options(node, index, "")
                    return _STUCK if options is _STUCK else " " + options
                return _FAIL
            at += len(ITEM_SEPARATOR)
            self._objects[key] = (at, index, count)

    def _key_end(self, pos: int) -> int | None:
        """Index of the quote closing the key string opened at ``pos``, or None when it is cut off."""
        text = self._text
        at = pos + 1
        while True:
            run = _string_run(text, at)
            if run:
                at = run.end()
            if at >= len(text):
                return None
            if text[at] == '"':
                return at
            at += 2

    def _member_schema(self, node: _Node, index: int, name: str) -> tuple[_Node | None, int]:
        """The schema of member ``name`` after property ``index``, and the new index (None: not allowed)."""
        for j in self._allowed(node, index):
            if node.props[j][0] == name:
                return node.props[j][2], j
        if node.extra is not None and self._required_done(node, index):
            if all(name != prop[0] for prop in node.props):
                return node.extra, max(index, len(node.props) - 1)
        return None, index
