"""Tool conversion for ``bind_tools``: any LangChain tool form -> OpenAI-style tool dict, built by the core.

Functions, pydantic classes and TypedDicts go through ``hermes_core.to_tool_spec``, and a
``BaseTool``'s arguments model through ``hermes_core``'s ``model_parameters``, so a recursive model
keeps its ``$defs``/``$ref`` (LangChain's own converter replaces the recursion by "any value", which
the grammar then cannot constrain). Only dict forms other than OpenAI's use LangChain's converter.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool

from hermes_core.errors import ToolSpecError, UnsupportedOptionError
from hermes_core.format.tool_specs import model_parameters, to_tool_spec
from hermes_core.options import check_tool_choice as _check_tool_choice

ToolLike = dict[str, Any] | type | Callable[..., Any] | BaseTool
ACCEPTED = "a @tool/BaseTool, a typed function, a pydantic model, a TypedDict or an OpenAI tool dict"


def convert_tools(tools: Sequence[ToolLike], *, strict: bool | None = None) -> list[dict[str, Any]]:
    """Convert every tool (see the module docstring); an error names the tool by position, in one line."""
    if isinstance(tools, (str, bytes, dict)) or not isinstance(tools, Sequence):
        raise ToolSpecError(
            f"bind_tools expects a list of tools, got {type(tools).__name__}; wrap it in [ ]."
        )
    specs = []
    for position, tool in enumerate(tools):
        try:
            spec = convert_tool(tool)
        except ToolSpecError as exc:
            raise ToolSpecError(f"tools[{position}] ({_label(tool)}): {_first_line(exc)}") from exc
        if strict is not None:
            spec["function"]["strict"] = strict
        specs.append(spec)
    return specs


def convert_tool(tool: Any) -> dict[str, Any]:
    """The OpenAI-style spec of one LangChain tool form; ``ToolSpecError`` if it is not a tool."""
    if isinstance(tool, BaseTool):
        return _from_base_tool(tool)
    if isinstance(tool, dict):
        return _from_dict(tool)
    if is_pydantic_v1(tool):  # the core reads pydantic 2 models only
        return to_tool_spec(_langchain_spec(tool))
    if isinstance(tool, type) or callable(tool):
        return to_tool_spec(tool)
    article = "an" if type(tool).__name__[:1].lower() in "aeiou" else "a"
    raise ToolSpecError(f"{article} {type(tool).__name__} is not a tool; pass {ACCEPTED}.")


def is_pydantic_v1(obj: Any) -> bool:
    """Whether ``obj`` is a ``pydantic.v1`` model class (LangChain still accepts those)."""
    from pydantic import v1

    return isinstance(obj, type) and issubclass(obj, v1.BaseModel)


def _from_base_tool(tool: BaseTool) -> dict[str, Any]:
    """Name and description from the tool, arguments from its ``tool_call_schema`` (injected args left out)."""
    from pydantic import BaseModel

    schema = tool.tool_call_schema
    if isinstance(schema, dict):
        parameters = schema
    elif isinstance(schema, type) and issubclass(schema, BaseModel):
        parameters = model_parameters(schema)
    else:  # e.g. a pydantic v1 args_schema, which the core does not read
        parameters = _langchain_spec(tool)["function"]["parameters"]
    return to_tool_spec({"name": tool.name, "description": tool.description or "", "parameters": parameters})


def _from_dict(tool: dict[str, Any]) -> dict[str, Any]:
    """OpenAI dicts as given; a titled JSON schema or an Anthropic-style dict keeps its schema intact."""
    if "name" not in tool and "function" not in tool and isinstance(tool.get("title"), str):
        parameters = {k: v for k, v in tool.items() if k not in ("title", "description")}
        return to_tool_spec(
            {"name": tool["title"], "description": tool.get("description") or "", "parameters": parameters}
        )
    if "name" in tool and isinstance(tool.get("input_schema"), dict):
        return to_tool_spec(
            {
                "name": tool["name"],
                "description": tool.get("description") or "",
                "parameters": tool["input_schema"],
            }
        )
    if tool.get("type") == "function" or ("name" in tool and "function" not in tool):
        return to_tool_spec(tool)
    return to_tool_spec(_langchain_spec(tool))


def _langchain_spec(tool: Any) -> dict[str, Any]:
    """LangChain's own conversion, for forms the core does not know; its errors become one line."""
    try:
        return convert_to_openai_tool(tool)
    except (ValueError, TypeError, KeyError) as exc:
        raise ToolSpecError(f"it cannot be used as a tool ({_first_line(exc)}); pass {ACCEPTED}.") from exc


def _label(tool: Any) -> str:
    """A short name for a tool in an error message."""
    name = getattr(tool, "name", None) if isinstance(tool, BaseTool) else getattr(tool, "__name__", None)
    if isinstance(tool, dict):
        inner = tool.get("function") if isinstance(tool.get("function"), dict) else tool
        name = inner.get("name") or inner.get("title")
    return str(name) if isinstance(name, str) else f"{tool!r:.60}"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def tool_names(specs: Sequence[dict[str, Any]]) -> list[str]:
    """Names of converted tools, in order."""
    return [spec["function"]["name"] for spec in specs]


def check_tool_choice(tool_choice: Any, specs: Sequence[dict[str, Any]]) -> None:
    """Fail at bind time for a tool_choice the engine would refuse (unknown name, bad form)."""
    _check_tool_choice(tool_choice, specs)


def check_flag(name: str, value: Any) -> None:
    """``parallel_tool_calls`` / ``strict`` take True, False or None."""
    if value is not None and not isinstance(value, bool):
        raise UnsupportedOptionError(f"{name} must be True, False or None, got {value!r}.")
