"""Normalises every spelling of ``tool_choice`` that LangChain, LlamaIndex and OpenAI use."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from hermes_core.errors import UnsupportedOptionError

ToolChoiceMode = Literal["auto", "none", "required"]


@dataclass(frozen=True)
class NormalizedToolChoice:
    """``mode`` is auto/none/required; ``tool_name`` is set when one tool is forced (mode required)."""

    mode: ToolChoiceMode = "auto"
    tool_name: str | None = None


def normalize_tool_choice(choice: Any, tool_names: Sequence[str]) -> NormalizedToolChoice:
    """Map ``None``/``"auto"``, ``"none"``/``False``, ``"any"``/``"required"``/``True``, a tool name,
    ``{"name": ...}`` or ``{"type": "function", "function": {"name": ...}}`` to one form.

    Raises ``UnsupportedOptionError`` naming the known tools when a forced name is unknown.
    """
    if choice is None or choice == "auto":
        return NormalizedToolChoice("auto")
    if choice is False or choice == "none":
        return NormalizedToolChoice("none")
    if choice is True or choice in ("any", "required"):
        if not tool_names:
            raise UnsupportedOptionError(
                f"tool_choice={choice!r} requires at least one tool; bind tools first or use tool_choice='auto'."
            )
        return NormalizedToolChoice("required")
    name: Any = None
    if isinstance(choice, str):
        name = choice
    elif isinstance(choice, dict):
        if choice.get("type") in ("auto", "none", "any", "required") and "function" not in choice:
            return normalize_tool_choice(choice["type"], tool_names)
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else choice.get("name")
    if not isinstance(name, str) or not name:
        raise UnsupportedOptionError(
            f"Unsupported tool_choice {choice!r}: use 'auto', 'none', 'required'/'any', True, a tool name, "
            "or {'type': 'function', 'function': {'name': ...}}."
        )
    if name not in tool_names:
        known = ", ".join(sorted(tool_names)) or "(no tools bound)"
        raise UnsupportedOptionError(
            f"tool_choice names unknown tool {name!r}; the bound tools are: {known}."
        )
    return NormalizedToolChoice("required", name)
