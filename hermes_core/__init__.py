"""hermes_core: the framework-free heart of hermes-function-calling.

Laid out by layer: ``format/`` (tool specs, prompts, ChatML rendering, the whole and streaming tool-call
parser, validation, tool choice), ``grammar`` (xgrammar constraints), ``frontend`` (the request frontend:
prompt, constraint, detokenization, parsing, validation, over any engine), ``engines/base`` (the engine
interface), ``engines/local/`` (transformers: generation, loading, quantization, caches, with the CPU
kernels in ``engines/local/cpu/``), ``engines/server/`` (llama-server, vLLM, SGLang over HTTP) and
``gbnf`` (constraints as llama.cpp grammars). The public API is
re-exported here; names are imported lazily so that ``import hermes_core`` stays cheap (no torch until needed).
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
    "to_tool_spec": "hermes_core.format.tool_specs",
    "to_tool_specs": "hermes_core.format.tool_specs",
    "to_messages": "hermes_core.format.chatml",
    "normalize_tool_choice": "hermes_core.format.tool_choice",
    "NormalizedToolChoice": "hermes_core.format.tool_choice",
    "render_tools_system_prompt": "hermes_core.format.prompts",
    "render_json_schema_system_prompt": "hermes_core.format.prompts",
    "render_conversation": "hermes_core.format.chatml",
    "RenderedPrompt": "hermes_core.format.chatml",
    "PromptSegment": "hermes_core.format.chatml",
    # parsing
    "parse_tool_calls": "hermes_core.format.parser",
    "ToolCallStreamParser": "hermes_core.format.stream_parser",
    "validate_tool_calls": "hermes_core.format.validation",
    "REJECTED_CALL_TOOL": "hermes_core.format.rejected_calls",
    "stand_in_calls": "hermes_core.format.rejected_calls",
    # engine
    "load_model": "hermes_core.engines.local.loading",
    "LoadedModel": "hermes_core.engines.local.loading",
    "HermesEngine": "hermes_core.engines.local.hermes_engine",
    "load_engine": "hermes_core.engines.local.hermes_engine",
    "get_engine": "hermes_core.engines.local.hermes_engine",
    "LocalEngine": "hermes_core.engines.local.engine",
    # frontend and engine interface
    "Frontend": "hermes_core.frontend",
    "REQUEST_OPTIONS": "hermes_core.frontend",
    "Engine": "hermes_core.engines.base",
    "GenerationRequest": "hermes_core.engines.base",
    "EngineOutput": "hermes_core.engines.base",
    "Constraint": "hermes_core.engines.base",
    # server engine
    "ServerEngine": "hermes_core.engines.server.engine",
    "get_server_engine": "hermes_core.engines.server.engine",
    "ServerError": "hermes_core.engines.server.errors",
    "ServerUnreachableError": "hermes_core.engines.server.errors",
    "ServerModelMismatchError": "hermes_core.engines.server.errors",
    "ServerGrammarError": "hermes_core.engines.server.errors",
    "ServerHTTPError": "hermes_core.engines.server.errors",
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
