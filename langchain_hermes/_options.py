"""Per-call options: LangChain ``invoke``/``bind`` kwargs -> ``HermesEngine.generate`` options."""

from __future__ import annotations

from typing import Any

from hermes_core.errors import UnsupportedOptionError
from hermes_core.frontend import REQUEST_OPTIONS
from hermes_core.options import check_request_options

# Options the engine takes per call (``stop`` arrives as LangChain's own argument; ``max_tokens``
# is LangChain's name for ``max_new_tokens``).
ENGINE_OPTIONS = REQUEST_OPTIONS - {"stop"}
# Handled by ChatHermes itself (``model`` picks another model) or by LangChain before we see them.
ADAPTER_OPTIONS = frozenset({"model", "max_tokens", "stream", "ls_structured_output_format"})
SUPPORTED = ENGINE_OPTIONS | ADAPTER_OPTIONS


def request_options(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs`` under the engine's option names (``max_tokens`` is ``max_new_tokens``)."""
    options = dict(kwargs)
    if "max_tokens" in options and "max_new_tokens" not in options:
        options["max_new_tokens"] = options.pop("max_tokens")
    return options


def check_options(kwargs: dict[str, Any]) -> None:
    """Refuse unknown per-call options with the list of supported ones, and bad values of known ones."""
    unknown = sorted(set(kwargs) - SUPPORTED)
    if unknown:
        raise UnsupportedOptionError(
            f"ChatHermes does not support {', '.join(map(repr, unknown))}; per-call options are: "
            f"{', '.join(sorted(SUPPORTED - {'stream', 'ls_structured_output_format'}))}."
        )
    check_request_options(request_options(kwargs))


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
    options = {key: value for key, value in options.items() if value is not None}
    check_request_options(options)
    return options


def check_response_format(response_format: Any) -> None:
    """Fail at bind time for a ``response_format`` the engine would refuse."""
    from hermes_core.format.prompts import response_schema

    response_schema(response_format)
