"""One check per option, shared by the engine and both adapters, so a bad value fails where it is given.

Constructors and per-call entry points call ``check_load_options`` / ``check_request_options`` before
anything is loaded or generated; each check raises ``UnsupportedOptionError`` with one line naming
the option, the value and what is accepted, the same line whichever API received it.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from hermes_core.errors import UnsupportedOptionError


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_max_new_tokens(value: Any) -> None:
    """A whole number of tokens, at least 1 (``1.7`` and ``True`` are refused, not rounded)."""
    if not _is_int(value) or value < 1:
        raise UnsupportedOptionError(
            f"max_new_tokens must be a whole number of tokens, at least 1, got {value!r}; pass e.g. 256."
        )


def check_temperature(value: Any) -> None:
    """A finite number >= 0 (0 decodes greedily)."""
    if not _is_number(value) or not math.isfinite(value) or value < 0:
        raise UnsupportedOptionError(
            f"temperature must be a finite number >= 0 (0 = greedy), got {value!r}; pass e.g. 0.7."
        )


def check_top_p(value: Any) -> None:
    """A number in (0, 1]."""
    if not _is_number(value) or not 0 < value <= 1:
        raise UnsupportedOptionError(f"top_p must be a number in (0, 1], got {value!r}; pass e.g. 0.9.")


def check_repetition_penalty(value: Any) -> None:
    """A finite number > 0 (1.0 = off)."""
    if not _is_number(value) or not math.isfinite(value) or value <= 0:
        raise UnsupportedOptionError(
            f"repetition_penalty must be a finite number > 0 (1.0 = off), got {value!r}; pass e.g. 1.2."
        )


def check_stop(value: Any) -> None:
    """A non-empty string or a list of them (an empty stop sequence would end every reply at once)."""
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, Sequence) or isinstance(stops, bytes):
        raise UnsupportedOptionError(
            f"stop must be a string or a list of strings, got {type(value).__name__}; pass e.g. ['\\n\\n']."
        )
    for stop in stops:
        if not isinstance(stop, str) or not stop:
            raise UnsupportedOptionError(
                f"stop sequences must be non-empty strings, got {stop!r} in {value!r}; remove it."
            )


def check_seed(value: Any) -> None:
    """A whole number."""
    if not _is_int(value):
        raise UnsupportedOptionError(f"seed must be a whole number, got {value!r}; pass e.g. 42.")


def check_flag(name: str, value: Any) -> None:
    """Options such as ``constrained`` and ``parallel_tool_calls`` take True or False."""
    if not isinstance(value, bool):
        raise UnsupportedOptionError(f"{name} must be True or False, got {value!r}.")


def check_quantization(value: Any) -> None:
    """``"4bit"``, ``"8bit"``, ``"int4"``, ``"auto"`` or None (case and surrounding spaces ignored)."""
    from hermes_core.engines.local.quantization import QUANTIZATION_OPTIONS

    normalised = value.strip().lower() if isinstance(value, str) else value
    if normalised not in QUANTIZATION_OPTIONS:
        valid = ", ".join(repr(option) for option in QUANTIZATION_OPTIONS)
        raise UnsupportedOptionError(f"unknown quantization {value!r}; use one of {valid}.")


def check_torch_dtype(value: Any) -> None:
    """``"auto"``, a dtype name (``"bfloat16"``, ``"fp16"``, ...) or a ``torch.dtype``."""
    from hermes_core.engines.local.quantization import resolve_dtype

    resolve_dtype(value)


def check_tool_choice(choice: Any, tools: Sequence[Any] | None) -> None:
    """Refuse a ``tool_choice`` the offered ``tools`` cannot satisfy (unknown name, bad form, no tools)."""
    from hermes_core.format.tool_choice import normalize_tool_choice

    names = [_tool_name(tool) for tool in tools or []]
    normalize_tool_choice(choice, [name for name in names if name])


def _tool_name(tool: Any) -> str | None:
    """The name of an OpenAI-style spec, or of a function/class (what ``to_tool_spec`` would call it)."""
    if isinstance(tool, dict):
        inner = tool.get("function") if isinstance(tool.get("function"), dict) else tool
        name = inner.get("name")
        return name if isinstance(name, str) else None
    return getattr(tool, "__name__", None)


_REQUEST_CHECKS: dict[str, Callable[[Any], None]] = {
    "max_new_tokens": check_max_new_tokens,
    "temperature": check_temperature,
    "top_p": check_top_p,
    "repetition_penalty": check_repetition_penalty,
    "stop": check_stop,
    "seed": check_seed,
    "constrained": lambda value: check_flag("constrained", value),
    "parallel_tool_calls": lambda value: check_flag("parallel_tool_calls", value),
}
_LOAD_CHECKS: dict[str, Callable[[Any], None]] = {
    "quantization": check_quantization,
    "torch_dtype": check_torch_dtype,
    "prefix_cache": lambda value: check_flag("prefix_cache", value),
}


def check_request_options(options: Mapping[str, Any]) -> None:
    """Check every generation option given in ``options`` (None = not given; other keys are left alone).

    With both ``tools`` and ``tool_choice`` present the choice is checked against the tools too.
    """
    for name, value in options.items():
        check = _REQUEST_CHECKS.get(name)
        if check is not None and value is not None:
            check(value)
    if options.get("tool_choice") is not None:
        check_tool_choice(options["tool_choice"], options.get("tools"))


def check_load_options(options: Mapping[str, Any]) -> None:
    """Check the load options given in ``options`` (quantization, torch_dtype, prefix_cache) before loading."""
    for name, value in options.items():
        check = _LOAD_CHECKS.get(name)
        if check is not None and value is not None:
            check(value)


def env_megabytes(name: str, default_mb: int) -> int:
    """Bytes from the environment variable ``name`` given in MiB (``default_mb`` when unset)."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default_mb * 1024 * 1024
    try:
        megabytes = float(text)
    except ValueError:
        megabytes = -1.0
    if not math.isfinite(megabytes) or megabytes < 0:
        raise UnsupportedOptionError(f"{name} must be a size in MiB (e.g. 512), got {text!r}.")
    return int(megabytes * 1024 * 1024)


SERVER_ONLY_OPTIONS = ("api_key", "timeout", "max_retries", "dialect")
"""Options that only mean something with ``base_url`` (a model on a server)."""
LOCAL_ONLY_OPTIONS = ("quantization", "device_map", "torch_dtype")
"""Options that only mean something for a model loaded here."""


def check_placement(owner: str, options: Mapping[str, Any]) -> None:
    """Refuse server options for a local model and load options for a model on a server, naming why.

    ``owner`` names the class the options were given to (``ChatHermes``, ``HermesLLM``).
    """
    remote = options.get("base_url") is not None
    for name in LOCAL_ONLY_OPTIONS if remote else SERVER_ONLY_OPTIONS:
        if options.get(name) is not None:
            where = (
                "only to a local model; the server at base_url loads its own weights"
                if remote
                else "only with base_url (a model on a server); the model runs locally"
            )
            raise UnsupportedOptionError(f"{owner}: {name!r} applies {where}. Remove it.")


def engine_load_options(settings: Any) -> dict[str, Any]:
    """The ``get_engine`` options an adapter's settings select, only those set, so equal setups share one engine.

    ``settings`` has the adapters' fields (``base_url``, ``dialect``, ``api_key`` (a string or pydantic
    ``SecretStr``), ``timeout``, ``max_retries``, ``variant``, ``quantization``, ``device_map``,
    ``torch_dtype``, ``prefix_cache``).
    """
    if settings.base_url is not None:
        api_key = settings.api_key
        remote = {
            "base_url": settings.base_url,
            "dialect": settings.dialect,
            "api_key": api_key.get_secret_value() if hasattr(api_key, "get_secret_value") else api_key,
            "timeout": settings.timeout,
            "max_retries": settings.max_retries,
            "variant": None if settings.variant == "auto" else settings.variant,
        }
        return {name: value for name, value in remote.items() if value is not None}
    local = {
        "quantization": settings.quantization,
        "device_map": settings.device_map,
        "torch_dtype": settings.torch_dtype,
    }
    options = {name: value for name, value in local.items() if value is not None}
    if not settings.prefix_cache:
        options["prefix_cache"] = False
    if settings.variant != "auto":
        options["variant"] = settings.variant
    return options
