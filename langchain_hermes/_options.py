"""Per-call options: LangChain ``invoke``/``bind`` kwargs -> ``HermesEngine.generate`` options."""

from __future__ import annotations

from typing import Any

from hermes_core.errors import UnsupportedOptionError
from hermes_core.frontend import REQUEST_OPTIONS

# Options the engine takes per call (``stop`` arrives as LangChain's own argument; ``max_tokens``
# is LangChain's name for ``max_new_tokens``).
ENGINE_OPTIONS = REQUEST_OPTIONS - {"stop"}
# Handled by ChatHermes itself (``model`` picks another model) or by LangChain before we see them.
ADAPTER_OPTIONS = frozenset({"model", "max_tokens", "stream", "ls_structured_output_format"})
SUPPORTED = ENGINE_OPTIONS | ADAPTER_OPTIONS


def check_options(kwargs: dict[str, Any]) -> None:
    """Refuse unknown per-call options with the list of supported ones."""
    unknown = sorted(set(kwargs) - SUPPORTED)
    if unknown:
        raise UnsupportedOptionError(
            f"ChatHermes does not support {', '.join(map(repr, unknown))}; per-call options are: "
            f"{', '.join(sorted(SUPPORTED - {'stream', 'ls_structured_output_format'}))}."
        )


def engine_options(
    defaults: dict[str, Any], stop: list[str] | None, kwargs: dict[str, Any]
) -> dict[str, Any]:
    """Merge instance defaults, ``stop`` and per-call kwargs into engine keyword arguments."""
    check_options(kwargs)
    options = dict(defaults)
    if "max_tokens" in kwargs and "max_new_tokens" not in kwargs:
        options["max_new_tokens"] = kwargs["max_tokens"]
    options.update({key: value for key, value in kwargs.items() if key in ENGINE_OPTIONS})
    if stop is not None:
        options["stop"] = list(stop)
    return {key: value for key, value in options.items() if value is not None}
