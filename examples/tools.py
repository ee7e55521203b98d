"""Example tools for ``hermes-chat --tools examples/tools.py`` (and for the other examples).

Every public function with type hints becomes a tool: its name, its docstring's first line as the
description, and its ``Args:`` section as parameter descriptions. They work offline: the weather
comes from a small built-in table, the calculator really computes.
"""

from __future__ import annotations

import ast
import operator
from datetime import datetime, timezone
from typing import Literal

# A fixed table so the examples run offline and give the same answers every time.
_WEATHER: dict[str, tuple[str, float]] = {
    "paris": ("sunny", 22.0),
    "london": ("light rain", 14.0),
    "tokyo": ("cloudy", 18.0),
    "new york": ("windy", 16.0),
    "sydney": ("clear", 25.0),
}

_OPERATORS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}


def get_weather(city: str, unit: Literal["celsius", "fahrenheit"] = "celsius") -> dict[str, object]:
    """Get the current weather for a city.

    Args:
        city: The city name, e.g. Paris.
        unit: Temperature unit of the answer.
    """
    condition, celsius = _WEATHER.get(city.strip().lower(), ("partly cloudy", 20.0))
    temperature = celsius if unit == "celsius" else round(celsius * 9 / 5 + 32, 1)
    return {"city": city, "condition": condition, "temperature": temperature, "unit": unit}


def calculate(expression: str) -> float:
    """Evaluate an arithmetic expression such as 12 * (3 + 4) exactly.

    Args:
        expression: Numbers with + - * / // % ** and parentheses.
    """
    return _evaluate(ast.parse(expression, mode="eval").body)


def current_time(timezone_name: Literal["UTC"] = "UTC") -> str:
    """Get the current date and time.

    Args:
        timezone_name: The time zone (only UTC is supported).
    """
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _evaluate(node: ast.AST) -> float:
    """Evaluate a parsed arithmetic expression without ``eval`` (numbers and operators only)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_evaluate(node.left), _evaluate(node.right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_evaluate(node.operand))
    raise ValueError(f"unsupported expression element {type(node).__name__}; use numbers and + - * / ** ( )")
