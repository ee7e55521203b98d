"""Exceptions raised by hermes_core: each message names the problem and the fix."""

from __future__ import annotations


class HermesError(Exception):
    """Base class for every error this library raises on purpose."""


class ModelLoadError(HermesError, ValueError):
    """The model or tokenizer could not be loaded (missing file, no chat format, bad option)."""


class ToolSpecError(HermesError, ValueError):
    """A tool could not be turned into a JSON-schema tool spec."""


class UnsupportedOptionError(HermesError, ValueError):
    """An argument or option this library does not support was given."""
