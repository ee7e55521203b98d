"""A small Google-style docstring reader: the summary and the per-argument descriptions."""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field

_ARG_SECTIONS = {"args", "arguments", "parameters", "params", "attributes", "fields"}
_SECTION_RE = re.compile(r"^([A-Za-z][A-Za-z ]*):\s*$")
_ARG_RE = re.compile(r"^\*{0,2}(\w+)\s*(?:\(([^)]*)\))?\s*:\s*(.*)$")


@dataclass
class Docstring:
    """What a tool needs from a docstring: a description and one description per argument."""

    summary: str = ""
    args: dict[str, str] = field(default_factory=dict)


def parse_docstring(doc: str | None) -> Docstring:
    """Split a Google-style docstring into its summary (text before the first section) and ``Args:``."""
    if not doc:
        return Docstring()
    lines = inspect.cleandoc(doc).splitlines()
    summary: list[str] = []
    args: dict[str, str] = {}
    section: str | None = None
    base_indent: int | None = None
    current: str | None = None
    for line in lines:
        stripped = line.strip()
        header = _SECTION_RE.match(line)
        if header and not line[:1].isspace():
            section = header.group(1).strip().lower()
            base_indent, current = None, None
            continue
        if section is None:
            summary.append(line)
            continue
        if section not in _ARG_SECTIONS or not stripped:
            continue
        indent = len(line) - len(line.lstrip())
        if base_indent is None:
            base_indent = indent
        match = _ARG_RE.match(stripped)
        if indent <= base_indent and match:
            current = match.group(1)
            args[current] = match.group(3).strip()
        elif current is not None:
            args[current] = f"{args[current]} {stripped}".strip()
    return Docstring(summary="\n".join(summary).strip(), args=args)
