"""Tool conversion for ``bind_tools``: any LangChain tool form -> OpenAI-style tool dict."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool

from hermes_core.errors import ToolSpecError, UnsupportedOptionError
from hermes_core.format.tool_choice import normalize_tool_choice

ToolLike = dict[str, Any] | type | Callable[..., Any] | BaseTool


def convert_tools(tools: Sequence[ToolLike], *, strict: bool | None = None) -> list[dict[str, Any]]:
    """Convert tools with LangChain's own ``convert_to_openai_tool``; name the tool that fails."""
    if isinstance(tools, (str, bytes, dict)) or not isinstance(tools, Sequence):
        raise ToolSpecError(
            f"bind_tools expects a list of tools, got {type(tools).__name__}; wrap it in [ ]."
        )
    specs = []
    for position, tool in enumerate(tools):
        try:
            specs.append(convert_to_openai_tool(tool, strict=strict))
        except (ValueError, TypeError, KeyError) as exc:
            raise ToolSpecError(
                f"tools[{position}] ({tool!r:.80}) cannot be used as a tool: {exc} Pass a @tool/BaseTool, "
                "a typed function with a docstring, a pydantic model, a TypedDict or an OpenAI tool dict."
            ) from exc
    return specs


def tool_names(specs: Sequence[dict[str, Any]]) -> list[str]:
    """Names of converted tools, in order."""
    return [spec["function"]["name"] for spec in specs]


def check_tool_choice(tool_choice: Any, specs: Sequence[dict[str, Any]]) -> None:
    """Fail at bind time for a tool_choice the engine would refuse (unknown name, bad form)."""
    normalize_tool_choice(tool_choice, tool_names(specs))


def check_flag(name: str, value: Any) -> None:
    """``parallel_tool_calls`` / ``strict`` take True, False or None."""
    if value is not None and not isinstance(value, bool):
        raise UnsupportedOptionError(f"{name} must be True, False or None, got {value!r}.")
