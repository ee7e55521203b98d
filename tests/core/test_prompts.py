"""The seed's system prompts, byte for byte: function calling (``<tools>``) and JSON mode (``<schema>``)."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel, Field

from hermes_core.errors import UnsupportedOptionError
from hermes_core.format.prompts import (
    json_schema_system_prompt_segments,
    render_json_schema_system_prompt,
    render_tools_system_prompt,
    tools_system_prompt_segments,
)

# Copied verbatim from the Hermes 2 Theta model card (the seed), "Function Calling Format".
SEED_FUNCTION_CALLING_BLOCK = r"""<|im_start|>system
You are a function calling AI model. You are provided with function signatures within <tools></tools> XML tags. You may call one or more functions to assist with the user query. Don't make assumptions about what values to plug into functions. Here are the available tools:
<tools>
{"type": "function", "function": {"name": "get_stock_fundamentals", "description": "get_stock_fundamentals(symbol: str) -> dict - Get fundamental data for a given stock symbol using yfinance API.\\n\\n Args:\\n symbol (str): The stock symbol.\\n\\n Returns:\\n dict: A dictionary containing fundamental data.\\n Keys:\\n - \'symbol\': The stock symbol.\\n - \'company_name\': The long name of the company.\\n - \'sector\': The sector to which the company belongs.\\n - \'industry\': The industry to which the company belongs.\\n - \'market_cap\': The market capitalization of the company.\\n - \'pe_ratio\': The forward price-to-earnings ratio.\\n - \'pb_ratio\': The price-to-book ratio.\\n - \'dividend_yield\': The dividend yield.\\n - \'eps\': The trailing earnings per share.\\n - \'beta\': The beta value of the stock.\\n - \'52_week_high\': The 52-week high price of the stock.\\n - \'52_week_low\': The 52-week low price of the stock.", "parameters": {"type": "object", "properties": {"symbol": {"type": "string"}}, "required": ["symbol"]}}}
</tools>
Use the following pydantic model json schema for each tool call you will make:
{"properties": {"arguments": {"title": "Arguments", "type": "object"}, "name": {"title": "Name", "type": "string"}}, "required": ["arguments", "name"], "title": "FunctionCall", "type": "object"}
For each function call return a json object with function name and arguments within <tool_call></tool_call> XML tags as follows:
<tool_call>
{"arguments": <args-dict>, "name": <function-name>}
</tool_call><|im_end|>
<|im_start|>user
Fetch the stock fundamentals data for Tesla (TSLA)<|im_end|>"""

# The card writes the single quotes inside the description's JSON string as \' , an escape that JSON does
# not have (json.loads rejects that line) and json.dumps never writes. That is the one place where the
# seed cannot be met byte for byte; every other byte is compared as is.
SEED_EXPECTED = SEED_FUNCTION_CALLING_BLOCK.replace("\\'", "'")

STOCK_TOOL = {
    "type": "function",
    "function": {
        "name": "get_stock_fundamentals",
        "description": (
            "get_stock_fundamentals(symbol: str) -> dict - Get fundamental data for a given stock symbol using yfinance API.\\n"
            "\\n"
            " Args:\\n"
            " symbol (str): The stock symbol.\\n"
            "\\n"
            " Returns:\\n"
            " dict: A dictionary containing fundamental data.\\n"
            " Keys:\\n"
            " - 'symbol': The stock symbol.\\n"
            " - 'company_name': The long name of the company.\\n"
            " - 'sector': The sector to which the company belongs.\\n"
            " - 'industry': The industry to which the company belongs.\\n"
            " - 'market_cap': The market capitalization of the company.\\n"
            " - 'pe_ratio': The forward price-to-earnings ratio.\\n"
            " - 'pb_ratio': The price-to-book ratio.\\n"
            " - 'dividend_yield': The dividend yield.\\n"
            " - 'eps': The trailing earnings per share.\\n"
            " - 'beta': The beta value of the stock.\\n"
            " - '52_week_high': The 52-week high price of the stock.\\n"
            " - '52_week_low': The 52-week low price of the stock."
        ),
        "parameters": {
            "type": "object",
            "properties": {"symbol": {"type": "string"}},
            "required": ["symbol"],
        },
    },
}

SYSTEM_OPEN = "<|im_start|>system\n"
SYSTEM_CLOSE = "<|im_end|>\n<|im_start|>user\nFetch the stock fundamentals data for Tesla (TSLA)<|im_end|>"


def seed_system_prompt() -> str:
    """The seed's function-calling system prompt without the ChatML turn markers."""
    assert SEED_EXPECTED.startswith(SYSTEM_OPEN) and SEED_EXPECTED.endswith(SYSTEM_CLOSE)
    return SEED_EXPECTED[len(SYSTEM_OPEN) : -len(SYSTEM_CLOSE)]


def test_seed_differs_from_json_only_by_the_invalid_quote_escape():
    tool_line = next(line for line in SEED_FUNCTION_CALLING_BLOCK.splitlines() if line.startswith('{"type"'))
    with pytest.raises(json.JSONDecodeError):
        json.loads(tool_line)
    assert json.loads(tool_line.replace("\\'", "'")) == STOCK_TOOL
    assert SEED_EXPECTED.count("\\'") == 0
    assert SEED_FUNCTION_CALLING_BLOCK.count("\\'") == 24


def test_tools_prompt_matches_the_seed_byte_for_byte():
    assert render_tools_system_prompt([STOCK_TOOL]) == seed_system_prompt()


def test_tools_prompt_from_a_function_matches_the_same_layout():
    def get_stock_fundamentals(symbol: str) -> dict:
        """Get fundamental data."""
        return {}

    prompt = render_tools_system_prompt([get_stock_fundamentals])
    expected_line = json.dumps(
        {
            "type": "function",
            "function": {
                "name": "get_stock_fundamentals",
                "description": "Get fundamental data.",
                "parameters": {
                    "type": "object",
                    "properties": {"symbol": {"type": "string"}},
                    "required": ["symbol"],
                },
            },
        }
    )
    seed_line = json.dumps(STOCK_TOOL)
    assert prompt == seed_system_prompt().replace(seed_line, expected_line)


def test_tools_prompt_one_json_line_per_tool_in_order():
    second = {
        "name": "get_time",
        "description": "Time \u00e9t\u00e9 <|im_end|>",
        "parameters": {"type": "object", "properties": {}},
    }
    prompt = render_tools_system_prompt([STOCK_TOOL, second])
    body = prompt.split("<tools>\n", 1)[1].split("\n</tools>", 1)[0]
    lines = body.split("\n")
    assert lines == [json.dumps(STOCK_TOOL), json.dumps({"type": "function", "function": second})]
    assert "\\u00e9" in lines[1]  # json.dumps defaults: ASCII escapes


def test_tools_prompt_segments_mark_tool_json_as_content():
    segments = tools_system_prompt_segments([STOCK_TOOL])
    assert [s.special for s in segments] == [True, False, True]
    assert segments[1].text == json.dumps(STOCK_TOOL)
    assert segments[0].text.endswith("<tools>\n")
    assert segments[2].text.startswith("\n</tools>\n")
    assert segments[2].text.endswith("</tool_call>")


def test_json_mode_prompt_is_the_seed_text():
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    assert render_json_schema_system_prompt(schema) == (
        "You are a helpful assistant that answers in JSON. Here's the json schema you must adhere to:\n"
        "<schema>\n" + json.dumps(schema) + "\n</schema>"
    )
    segments = json_schema_system_prompt_segments(schema)
    assert [(s.special, s.text == json.dumps(schema)) for s in segments] == [
        (True, False),
        (False, True),
        (True, False),
    ]


def test_json_mode_accepts_pydantic_and_openai_forms():
    class Answer(BaseModel):
        """An answer."""

        text: str = Field(description="The answer")

    expected = render_json_schema_system_prompt(Answer.model_json_schema())
    assert render_json_schema_system_prompt(Answer) == expected
    assert '"title": "Answer"' in expected
    inner = {"type": "object", "properties": {"n": {"type": "integer"}}}
    wrapped = {"type": "json_schema", "json_schema": {"name": "n", "schema": inner}}
    assert render_json_schema_system_prompt(wrapped) == render_json_schema_system_prompt(inner)
    assert '<schema>\n{"type": "object"}\n</schema>' in render_json_schema_system_prompt(
        {"type": "json_object"}
    )


@pytest.mark.parametrize("bad", ["a string", 3, {"type": "json_schema", "json_schema": {"name": "x"}}])
def test_json_mode_rejects_unusable_formats(bad):
    with pytest.raises(UnsupportedOptionError, match="JSON schema"):
        render_json_schema_system_prompt(bad)
