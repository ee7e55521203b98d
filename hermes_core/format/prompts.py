"""The Hermes system prompts (function calling, JSON mode), byte for byte as the model card shows them.

Each prompt is built as a list of ``PromptSegment``: the fixed wording the model was trained on is
``special=True`` (template structure), the caller's data (tool specs, schemas) is ``special=False``
so the engine tokenizes it with ``split_special_tokens=True`` and it can never become structure.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hermes_core.errors import UnsupportedOptionError

TOOLS_PROMPT_HEAD = (
    "You are a function calling AI model. You are provided with function signatures within "
    "<tools></tools> XML tags. You may call one or more functions to assist with the user query. "
    "Don't make assumptions about what values to plug into functions. Here are the available tools:\n"
    "<tools>\n"
)
FUNCTION_CALL_SCHEMA = (
    '{"properties": {"arguments": {"title": "Arguments", "type": "object"}, "name": {"title": "Name", '
    '"type": "string"}}, "required": ["arguments", "name"], "title": "FunctionCall", "type": "object"}'
)
TOOLS_PROMPT_TAIL = (
    "\n</tools>\n"
    "Use the following pydantic model json schema for each tool call you will make:\n"
    + FUNCTION_CALL_SCHEMA
    + "\nFor each function call return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags as follows:\n"
    "<tool_call>\n"
    '{"arguments": <args-dict>, "name": <function-name>}\n'
    "</tool_call>"
)
JSON_PROMPT_HEAD = (
    "You are a helpful assistant that answers in JSON. Here's the json schema you must adhere to:\n<schema>\n"
)
JSON_PROMPT_TAIL = "\n</schema>"
ANSWER_PROMPT_HEAD = (
    "When you answer without calling a function, reply with only a JSON object that adheres to this "
    "json schema:\n<schema>\n"
)
ANY_JSON_OBJECT_SCHEMA: dict[str, Any] = {"type": "object"}


@dataclass(frozen=True)
class PromptSegment:
    """A piece of prompt text; ``special`` marks template structure, ``False`` marks untrusted content."""

    text: str
    special: bool


# "<" of a tag the prompts use for structure (the model reads them as text, not special tokens).
_STRUCTURE_TAG = re.compile(
    r"<(?=/?\s*(?:tools|tool_call|tool_response|schema|think|scratch_pad)\b)", re.IGNORECASE
)


def escape_structure_tags(json_text: str) -> str:
    """JSON text with the ``<`` of ``<tools>``, ``</tools>``, ``<tool_call>``, ``<schema>`` & co. written
    as the JSON escape ``\\u003c``.

    A tool spec or schema from an untrusted source could otherwise close the ``<tools>``/``<schema>``
    block as text and write its own instructions or calls after it. In JSON a ``<`` can only be inside
    a string, so the JSON value stays identical for a JSON reader, and text without such tags is
    returned unchanged (ordinary specs stay byte for byte as the model card writes them).
    """
    return _STRUCTURE_TAG.sub(r"\\u003c", json_text)


def embedded_json(value: Any) -> str:
    """``json.dumps(value)`` as the prompts embed it, with structure tags escaped (``escape_structure_tags``)."""
    return escape_structure_tags(json.dumps(value))


def embedded_payload(value: Any) -> str:
    """A call or tool result as the renderer embeds it: ``json.dumps(..., ensure_ascii=False)`` (as the model
    emits it and HF's ``tojson`` writes it; unserialisable leaves via ``str``), structure tags escaped."""
    return escape_structure_tags(json.dumps(value, ensure_ascii=False, default=str))


def tools_system_prompt_segments(tools: Sequence[Any]) -> list[PromptSegment]:
    """Segments of the seed's function-calling system prompt: one ``json.dumps(spec)`` line per tool."""
    from hermes_core.format.tool_specs import to_tool_specs

    specs = to_tool_specs(tools)
    body = "\n".join(embedded_json(spec) for spec in specs)
    segments = [PromptSegment(TOOLS_PROMPT_HEAD, True)]
    if body:
        segments.append(PromptSegment(body, False))
    segments.append(PromptSegment(TOOLS_PROMPT_TAIL, True))
    return segments


def render_tools_system_prompt(tools: Sequence[Any]) -> str:
    """The exact function-calling system prompt (without ChatML markers) for ``tools``."""
    return "".join(s.text for s in tools_system_prompt_segments(tools))


def response_schema(schema: Any) -> dict[str, Any]:
    """Normalise a JSON-mode ``response_format`` (schema dict, pydantic class, OpenAI forms) to a schema."""
    from pydantic import BaseModel

    if isinstance(schema, type) and issubclass(schema, BaseModel):
        return schema.model_json_schema()
    if not isinstance(schema, dict):
        raise UnsupportedOptionError(
            f"Unsupported response_format {schema!r}: pass a JSON schema dict, a pydantic model class, "
            "or {'type': 'json_object'}."
        )
    kind = schema.get("type")
    if kind == "json_object" and len(schema) == 1:
        return dict(ANY_JSON_OBJECT_SCHEMA)
    if kind == "json_schema" and isinstance(schema.get("json_schema"), dict):
        inner = schema["json_schema"].get("schema")
        if not isinstance(inner, dict):
            raise UnsupportedOptionError(
                "response_format {'type': 'json_schema', ...} lacks json_schema.schema; put the JSON schema there."
            )
        return inner
    return schema


def json_schema_system_prompt_segments(schema: Any) -> list[PromptSegment]:
    """Segments of the seed's JSON-mode system prompt with ``schema`` inside ``<schema>``."""
    return [
        PromptSegment(JSON_PROMPT_HEAD, True),
        PromptSegment(embedded_json(response_schema(schema)), False),
        PromptSegment(JSON_PROMPT_TAIL, True),
    ]


def render_json_schema_system_prompt(schema: Any) -> str:
    """The exact JSON-mode system prompt for ``schema`` (a dict, or a pydantic model class)."""
    return "".join(s.text for s in json_schema_system_prompt_segments(schema))


def answer_schema_prompt_segments(schema: Any) -> list[PromptSegment]:
    """Segments added after the tools prompt when a reply may call tools or answer with JSON for ``schema``.

    Not from the model card (which has no such combination): the JSON-mode prompt's ``<schema>`` block,
    introduced as the shape of the final answer rather than of every reply.
    """
    return [
        PromptSegment(ANSWER_PROMPT_HEAD, True),
        PromptSegment(embedded_json(response_schema(schema)), False),
        PromptSegment(JSON_PROMPT_TAIL, True),
    ]
