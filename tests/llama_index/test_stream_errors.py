"""LlamaIndex streaming reports an invalid call's error text exactly as ``chat`` does."""

from __future__ import annotations

from llama_index_hermes import HermesLLM


def _errors(response) -> list[str]:
    return [call["error"] for call in response.message.additional_kwargs["invalid_tool_calls"]]


async def test_streamed_invalid_call_keeps_its_error(tiny_engine, weather_tools):
    llm = HermesLLM(engine=tiny_engine, max_new_tokens=8)  # the forced call is always cut off
    whole = llm.chat_with_tools(weather_tools, "Weather in Paris?", tool_required=True)
    assert _errors(whole) and "cut off" in _errors(whole)[0]
    *_, last = llm.stream_chat_with_tools(weather_tools, "Weather in Paris?", tool_required=True)
    assert _errors(last) == _errors(whole)
    chunks = [
        chunk
        async for chunk in await llm.astream_chat_with_tools(weather_tools, "Weather?", tool_required=True)
    ]
    assert _errors(chunks[-1]) and "cut off" in _errors(chunks[-1])[0]
    # FunctionAgent asks with error_on_no_tool_call=False: it gets a stand-in that carries the same error
    (stand_in,) = llm.get_tool_calls_from_response(whole, error_on_no_tool_call=False)
    assert stand_in.tool_name == "rejected_tool_call" and stand_in.tool_kwargs["error"] == _errors(whole)[0]
