"""Tool conversion at the LlamaIndex boundary: ``BaseTool`` -> OpenAI tool dict, response -> ``ToolSelection``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llama_index.core.base.llms.types import ChatResponse, ToolCallBlock
from llama_index.core.llms.llm import ToolSelection
from llama_index.core.tools.types import BaseTool

from hermes_core.errors import UnsupportedOptionError
from hermes_core.format.tool_specs import model_parameters, to_tool_spec


def to_openai_tools(tools: Sequence[BaseTool | dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI-style tool dicts: a tool's name and description with its ``fn_schema`` converted by the core.

    ``hermes_core`` builds the arguments schema (as it does for LangChain), so a recursive model keeps its
    ``$defs``/``$ref``; dicts already in OpenAI's shape pass through. The 1024-character description
    limit is OpenAI's API rule, not a Hermes one, so it is not applied.
    """
    specs: list[dict[str, Any]] = []
    for index, tool in enumerate(tools):
        if isinstance(tool, dict):
            specs.append(tool)
        elif isinstance(tool, BaseTool):
            specs.append(_tool_spec(tool))
        else:
            kind = type(tool).__name__
            article = "an" if kind[:1].lower() in "aeiou" else "a"
            name = getattr(tool, "__name__", None)
            label = name if isinstance(name, str) else f"{tool!r:.60}"
            fix = (
                f"wrap it with FunctionTool.from_defaults({label}), or pass any BaseTool"
                if callable(tool)
                else "pass LlamaIndex tools (FunctionTool, QueryEngineTool, any BaseTool)"
            )
            raise UnsupportedOptionError(
                f"tools[{index}] ({label}) is {article} {kind}, not a LlamaIndex tool; {fix} or an OpenAI-style "
                "tool dict."
            )
    return specs


def _tool_spec(tool: BaseTool) -> dict[str, Any]:
    """The spec of a LlamaIndex tool; one without an ``fn_schema`` keeps LlamaIndex's default ``input`` argument."""
    from pydantic import BaseModel

    metadata = tool.metadata
    schema = metadata.fn_schema
    if not (isinstance(schema, type) and issubclass(schema, BaseModel)):
        return metadata.to_openai_tool(skip_length_check=True)
    function = {
        "name": metadata.get_name(),
        "description": metadata.description,
        "parameters": model_parameters(schema),
    }
    return to_tool_spec({"type": "function", "function": function})


def resolve_tool_choice(tool_choice: Any, tool_required: bool) -> Any:
    """The engine's ``tool_choice`` for LlamaIndex's ``tool_choice``/``tool_required`` pair.

    An explicit ``tool_choice`` wins (a tool name, "auto", "none", "required", a dict or a tool);
    otherwise ``tool_required=True`` means "required" and False means "auto".
    """
    if isinstance(tool_choice, BaseTool):
        tool_choice = tool_choice.metadata.name
    if tool_choice is None or tool_choice == "auto":
        return "required" if tool_required else "auto"
    if tool_required and tool_choice in ("none", False):
        raise UnsupportedOptionError("tool_required=True contradicts tool_choice='none'; drop one of them.")
    return tool_choice


def tool_selections(response: ChatResponse, *, error_on_no_tool_call: bool = True) -> list[ToolSelection]:
    """The calls in ``response`` as ``ToolSelection``s, read from its ``ToolCallBlock``s."""
    selections = [
        ToolSelection(
            tool_id=block.tool_call_id or "", tool_name=block.tool_name, tool_kwargs=block.tool_kwargs
        )
        for block in response.message.blocks
        if isinstance(block, ToolCallBlock)
    ]
    if not selections and error_on_no_tool_call:
        rejected = response.message.additional_kwargs.get("invalid_tool_calls") or []
        reasons = "; ".join(f"{item.get('name') or '?'}: {item.get('error')}" for item in rejected)
        detail = f" It attempted calls that failed validation: {reasons}." if reasons else ""
        raise ValueError(
            f"Expected at least one tool call, but the model answered with text only: "
            f"{response.message.content!r}.{detail} Pass tool_required=True (or tool_choice=<tool name>) "
            "to force a call, or error_on_no_tool_call=False to accept text."
        )
    return selections


def first_tool_call_only(response: ChatResponse) -> ChatResponse:
    """``response`` with every call after the first dropped (blocks and ``additional_kwargs`` alike)."""
    calls = [block for block in response.message.blocks if isinstance(block, ToolCallBlock)]
    if len(calls) <= 1:
        return response
    message = response.message.model_copy(deep=True)
    first = True
    kept = []
    for block in message.blocks:
        if isinstance(block, ToolCallBlock):
            if not first:
                continue
            first = False
        kept.append(block)
    message.blocks = kept
    if isinstance(message.additional_kwargs.get("tool_calls"), list):
        message.additional_kwargs["tool_calls"] = message.additional_kwargs["tool_calls"][:1]
    return response.model_copy(update={"message": message})
