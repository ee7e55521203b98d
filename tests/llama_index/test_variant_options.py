"""HermesLLM passes the variant and reasoning options through to the engine, unchanged."""

from __future__ import annotations

from llama_index.core.base.llms.types import ChatMessage

from llama_index_hermes import HermesLLM


def test_variant_and_reasoning_reach_the_engine(tiny_model_dir, weather_tools) -> None:
    llm = HermesLLM(str(tiny_model_dir), max_new_tokens=120, variant="qwen3", reasoning=False)
    assert llm.engine.variant.name == "qwen3"
    assert llm._options({})["reasoning"] is False
    response = llm.chat_with_tools(
        weather_tools, chat_history=[ChatMessage(role="user", content="Weather in Oslo?")], tool_required=True
    )
    calls = llm.get_tool_calls_from_response(response, error_on_no_tool_call=True)
    assert calls[0].tool_name in {"get_weather", "set_mode"}
