"""``with_structured_output`` wiring: bind the engine's JSON mode or a forced tool, then parse with LangChain's parsers."""

from __future__ import annotations

from operator import itemgetter
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.output_parsers.openai_tools import JsonOutputKeyToolsParser, PydanticToolsParser
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from langchain_core.utils.function_calling import convert_to_json_schema
from langchain_core.utils.pydantic import is_basemodel_subclass

from hermes_core.errors import ToolSpecError, UnsupportedOptionError
from hermes_core.format.tool_specs import to_json_schema
from langchain_hermes._tools import convert_tools, is_pydantic_v1

StructuredMethod = Literal["json_schema", "function_calling", "json_mode"]
_METHODS = ("json_schema", "function_calling", "json_mode")


def structured_output_runnable(
    llm: BaseChatModel,
    schema: dict[str, Any] | type | None,
    *,
    method: str,
    include_raw: bool,
    strict: bool | None,
) -> Runnable:
    """``llm`` bound for ``method`` and piped into the parser matching ``schema``'s kind."""
    if method not in _METHODS:
        raise UnsupportedOptionError(
            f"Unknown structured output method {method!r}; use 'json_schema', 'function_calling' or 'json_mode'."
        )
    if schema is None and method != "json_mode":
        raise UnsupportedOptionError(
            f"method={method!r} needs a schema; pass one, or use method='json_mode'."
        )
    is_pydantic = isinstance(schema, type) and is_basemodel_subclass(schema)
    trace = {
        "ls_structured_output_format": {"kwargs": {"method": method, "strict": strict}, "schema": schema}
    }
    if schema is None:
        trace = {}
    if method == "function_calling":
        name = convert_tools([schema])[0]["function"]["name"]
        bound = llm.bind_tools([schema], tool_choice=name, parallel_tool_calls=False, strict=strict, **trace)
        parser: Runnable = (
            PydanticToolsParser(tools=[schema], first_tool_only=True)
            if is_pydantic
            else JsonOutputKeyToolsParser(key_name=name, first_tool_only=True)
        )
    else:
        # json_mode with a schema: the Hermes JSON-mode prompt is the `<schema>` prompt, so the schema
        # the caller already gave is written there and enforced, as json_schema does. Without a
        # schema, json_mode means any JSON object.
        response_format = _json_schema(schema, strict) if schema is not None else {"type": "json_object"}
        bound = llm.bind(response_format=response_format, **trace)
        parser = PydanticOutputParser(pydantic_object=schema) if is_pydantic else JsonOutputParser()
    if not include_raw:
        return bound | parser
    parse_or_fail = RunnablePassthrough.assign(
        parsed=itemgetter("raw") | parser, parsing_error=lambda _: None
    )
    parse_failed = RunnablePassthrough.assign(parsed=lambda _: None)
    return RunnableMap(raw=bound) | parse_or_fail.with_fallbacks(
        [parse_failed], exception_key="parsing_error"
    )


def _json_schema(schema: Any, strict: bool | None) -> dict[str, Any]:
    """The JSON schema for the engine's JSON mode: the core's conversion of a class, a JSON-schema dict as given.

    Classes go through ``hermes_core`` (not LangChain's converter), so a recursive model keeps its
    ``$defs``/``$ref`` and the grammar constrains every level of it.
    """
    if isinstance(schema, dict) and "properties" in schema and not {"function", "parameters"} & set(schema):
        return schema
    if isinstance(schema, type) and not is_pydantic_v1(schema):
        try:
            return to_json_schema(schema)
        except ToolSpecError as exc:
            raise UnsupportedOptionError(
                f"Cannot turn {schema.__name__} into a JSON schema: {exc} Pass a pydantic class, a TypedDict "
                "or a JSON-schema dict."
            ) from exc
    try:
        return convert_to_json_schema(schema, strict=strict)
    except (ValueError, TypeError) as exc:
        raise UnsupportedOptionError(
            f"Cannot turn {schema!r:.80} into a JSON schema: {exc} Pass a pydantic class, a TypedDict or a "
            "JSON-schema dict."
        ) from exc
