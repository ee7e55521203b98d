"""hermes_core: the framework-free heart of hermes-function-calling.

Tool specs, ChatML/Hermes prompt rendering, the tool-call parser (whole and streaming),
validation, and the local engine (load, quantize, constrain, cache, generate, stream).
Names are imported lazily so that ``import hermes_core`` stays cheap (no torch until needed).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # data types
    "Message": "hermes_core.types",
    "ToolCall": "hermes_core.types",
    "InvalidToolCall": "hermes_core.types",
    "ParsedResponse": "hermes_core.types",
    "ToolCallDelta": "hermes_core.types",
    "StreamEvent": "hermes_core.types",
    "GenerationResult": "hermes_core.types",
    "Usage": "hermes_core.types",
    "new_call_id": "hermes_core.types",
    # errors
    "HermesError": "hermes_core.errors",
    "ModelLoadError": "hermes_core.errors",
    "ToolSpecError": "hermes_core.errors",
    "UnsupportedOptionError": "hermes_core.errors",
    # format
    "to_tool_spec": "hermes_core.tool_specs",
    "to_tool_specs": "hermes_core.tool_specs",
    "to_messages": "hermes_core.chatml",
    "normalize_tool_choice": "hermes_core.tool_choice",
    "NormalizedToolChoice": "hermes_core.tool_choice",
    "render_tools_system_prompt": "hermes_core.prompts",
    "render_json_schema_system_prompt": "hermes_core.prompts",
    "render_conversation": "hermes_core.chatml",
    "RenderedPrompt": "hermes_core.chatml",
    "PromptSegment": "hermes_core.chatml",
    # parsing
    "parse_tool_calls": "hermes_core.parser",
    "ToolCallStreamParser": "hermes_core.stream_parser",
    "validate_tool_calls": "hermes_core.validation",
    # engine
    "load_model": "hermes_core.loading",
    "LoadedModel": "hermes_core.loading",
    "HermesEngine": "hermes_core.engine",
    "load_engine": "hermes_core.engine",
    "get_engine": "hermes_core.engine",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hermes_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
