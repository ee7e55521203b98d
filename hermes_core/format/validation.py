"""Checks parsed tool calls against the offered tools, turning bad calls into feedback-ready invalid calls.

The parser only checks the Hermes format; this step checks meaning: the name must be an offered tool
and the arguments must satisfy its JSON schema (``jsonschema``, the schema's own draft). A failing
call moves to ``invalid_tool_calls`` with its id and name kept, ``raw`` holding the call as JSON and
``error`` one line saying which argument is wrong and why, so it can be shown to the model as is.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from hermes_core.format.tool_specs import to_tool_specs
from hermes_core.types import InvalidToolCall, ParsedResponse, ToolCall

_MAX_REPORTED = 3


def validate_tool_calls(parsed: ParsedResponse, tools: Sequence[Any]) -> ParsedResponse:
    """Return a new ``ParsedResponse`` where unknown or schema-violating calls are invalid calls."""
    specs = to_tool_specs(tools)
    schemas = {spec["function"]["name"]: spec["function"]["parameters"] for spec in specs}
    valid: list[ToolCall] = []
    invalid = list(parsed.invalid_tool_calls)
    for call in parsed.tool_calls:
        error = _call_error(call, schemas)
        if error is None:
            valid.append(call)
        else:
            raw = json.dumps(
                {"name": call.name, "arguments": call.arguments}, ensure_ascii=False, default=str
            )
            invalid.append(InvalidToolCall(raw=raw, error=error, name=call.name, id=call.id))
    return ParsedResponse(
        content=parsed.content, tool_calls=valid, invalid_tool_calls=invalid, reasoning=parsed.reasoning
    )


def _call_error(call: ToolCall, schemas: dict[str, dict[str, Any]]) -> str | None:
    """Why ``call`` cannot be used, or ``None`` when it can."""
    if call.name not in schemas:
        available = ", ".join(sorted(schemas)) or "(none)"
        return f"Unknown tool {call.name!r}; the available tools are: {available}."
    if not isinstance(call.arguments, dict):
        return f"Arguments of tool {call.name!r} must be a JSON object."
    problem = _not_json(call.arguments)
    if problem:
        return f"Arguments of tool {call.name!r} {problem}."
    validator = _validator(json.dumps(schemas[call.name], sort_keys=True))
    errors = sorted(
        validator.iter_errors(call.arguments), key=lambda e: (list(map(str, e.absolute_path)), e.message)
    )
    if not errors:
        return None
    problems = [_describe(e) for e in errors[:_MAX_REPORTED]]
    more = f" (and {len(errors) - _MAX_REPORTED} more)" if len(errors) > _MAX_REPORTED else ""
    return f"Invalid arguments for tool {call.name!r}: {'; '.join(problems)}{more}."


def _not_json(arguments: dict[str, Any]) -> str:
    """Why ``arguments`` cannot be sent on as JSON text (``""`` when they can).

    The parser never produces such values; a call built by hand may, and JSON schemas accept
    ``inf`` as a number, so this is checked here rather than left to fail downstream.
    """
    try:
        json.dumps(arguments, allow_nan=False, ensure_ascii=False).encode("utf-8")
    except ValueError as exc:  # UnicodeEncodeError is a ValueError too
        if isinstance(exc, UnicodeEncodeError):
            return "hold a surrogate code point in a string, which is not a Unicode character"
        return "hold a number that is not finite (NaN or infinity), which JSON cannot represent"
    except TypeError as exc:
        return f"hold a value JSON cannot represent ({exc})"
    return ""


@lru_cache(maxsize=256)
def _validator(schema_json: str) -> Any:
    """A compiled validator for a schema (keyed by its canonical JSON), cached."""
    from jsonschema.validators import validator_for

    schema = json.loads(schema_json)
    return validator_for(schema)(schema)


def _describe(error: Any) -> str:
    """One argument problem in words: ``argument 'city' is required``, ``argument 'x': 'a' is not ...``."""
    from jsonschema.exceptions import best_match

    error = best_match([error])  # descends into anyOf/oneOf branches when one is clearly meant
    path = list(error.absolute_path)
    where = _path_text(path)
    if error.validator == "required":
        missing = [
            p for p in error.validator_value if isinstance(error.instance, dict) and p not in error.instance
        ]
        name = _path_text([*path, missing[0]]) if missing else where
        return f"argument {name!r} is required"
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = set((error.schema.get("properties") or {}).keys())
        extra = [k for k in error.instance if k not in allowed]
        if extra:
            return f"unexpected argument {_path_text([*path, extra[0]])!r}"
    message = error.message.replace("\n", " ")
    if (
        error.validator in ("anyOf", "oneOf")
        and error.context
        and all(e.validator == "type" for e in error.context)
    ):
        types = " or ".join(repr(e.validator_value) for e in error.context)
        message = f"{error.instance!r} is not of type {types}"
    if not path:
        return message
    return f"argument {where!r}: {message}"


def _path_text(path: Sequence[Any]) -> str:
    """``['loc', 'items', 0, 'city']`` -> ``loc.items[0].city``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out
