"""HermesLLM on the embedded SmolLM2-135M-Instruct: tool calling, structured output, stream == whole.

The grammar is what makes this tiny model's calls usable, so these assert schema-valid calls
and that the tools really ran, not the model's wording.
"""

from __future__ import annotations

import jsonschema
import pytest
from llama_index.core.base.llms.types import ChatMessage, ToolCallBlock
from llama_index.core.bridge.pydantic import BaseModel, Field
from llama_index.core.callbacks import CallbackManager, CBEventType, EventPayload, LlamaDebugHandler
from llama_index.core.prompts import PromptTemplate
from llama_index.core.tools import FunctionTool

from hermes_core.format.tool_specs import to_json_schema
from llama_index_hermes import HermesLLM

pytestmark = pytest.mark.slow


class City(BaseModel):
    """A city mentioned in a text."""

    name: str = Field(description="The city's name.", max_length=24)
    country: str = Field(description="The country the city is in.", max_length=24)


EXTRACT = PromptTemplate("Extract the city and its country from this text: {text}")
TEXT = "Last summer I lived in Lyon, France, for three months."


def _multiply_tool(log: list[tuple[int, int]]) -> FunctionTool:
    def multiply(a: int, b: int) -> int:
        """Multiply two integers and return the product.

        Args:
            a: The first factor.
            b: The second factor.
        """
        log.append((a, b))
        return a * b

    return FunctionTool.from_defaults(multiply)


def test_metadata_reports_the_loaded_models_window(smol_llm) -> None:
    engine = smol_llm.engine
    assert smol_llm.metadata.context_window == engine.context_window
    assert smol_llm.metadata.model_name == engine.model_name == "SmolLM2-135M-Instruct"


def test_predict_and_call_runs_the_tool(smol_llm) -> None:
    log: list[tuple[int, int]] = []
    tool = _multiply_tool(log)
    response = smol_llm.predict_and_call([tool], user_msg="What is 6 times 7?", tool_required=True)
    assert len(log) == 1, "the tool should have run exactly once"
    a, b = log[0]
    assert response.response == str(a * b)
    assert [source.tool_name for source in response.sources] == ["multiply"]
    assert not response.sources[0].is_error


async def test_apredict_and_call_runs_the_tool(smol_llm) -> None:
    log: list[tuple[int, int]] = []
    response = await smol_llm.apredict_and_call(
        [_multiply_tool(log)], user_msg="Multiply 3 by 5.", tool_required=True
    )
    assert len(log) == 1 and response.response == str(log[0][0] * log[0][1])


def test_structured_predict_uses_json_mode(smol_llm) -> None:
    handler = LlamaDebugHandler()
    llm = HermesLLM(engine=smol_llm.engine, max_new_tokens=96, callback_manager=CallbackManager([handler]))
    city = llm.structured_predict(City, EXTRACT, text=TEXT)
    assert isinstance(city, City) and city.name and city.country
    [(start, _end)] = handler.get_event_pairs(CBEventType.LLM)
    sent = start.payload[EventPayload.ADDITIONAL_KWARGS]
    assert sent == {
        "response_format": to_json_schema(City)
    }  # JSON mode with the core's schema, no forced tool


async def test_astructured_predict(smol_llm) -> None:
    city = await smol_llm.astructured_predict(City, EXTRACT, llm_kwargs={"max_new_tokens": 96}, text=TEXT)
    assert isinstance(city, City)


def test_stream_structured_predict_ends_with_the_full_object(smol_llm) -> None:
    partials = list(
        smol_llm.stream_structured_predict(City, EXTRACT, llm_kwargs={"max_new_tokens": 96}, text=TEXT)
    )
    assert len(partials) > 1
    assert isinstance(partials[-1], City)
    assert partials[-1] == smol_llm.structured_predict(
        City, EXTRACT, llm_kwargs={"max_new_tokens": 96}, text=TEXT
    )


def test_as_structured_llm(smol_llm) -> None:
    structured = smol_llm.as_structured_llm(City)
    response = structured.chat([ChatMessage(role="user", content=f"Which city? {TEXT}")], max_new_tokens=96)
    assert isinstance(response.raw, City)
    assert City.model_validate_json(response.message.content) == response.raw


def test_chat_with_tools_streamed_equals_whole_with_the_same_seed(smol_llm) -> None:
    tool = _multiply_tool([])
    kwargs = {"user_msg": "What is 9 times 8?", "tool_required": True, "temperature": 0.8, "seed": 1234}
    whole = smol_llm.chat_with_tools([tool], max_new_tokens=48, **kwargs)
    [selection] = smol_llm.get_tool_calls_from_response(whole)
    assert selection.tool_name == "multiply"
    jsonschema.validate(selection.tool_kwargs, tool.metadata.get_parameters_dict())
    chunks = list(smol_llm.stream_chat_with_tools([tool], max_new_tokens=48, **kwargs))
    assert not any("<tool_call" in (chunk.delta or "") for chunk in chunks)
    final = chunks[-1]
    assert final.message.content == whole.message.content

    def calls(message: ChatMessage) -> list[tuple[str, object]]:
        return [(b.tool_name, b.tool_kwargs) for b in message.blocks if isinstance(b, ToolCallBlock)]

    assert calls(final.message) == calls(whole.message)


def test_new_instances_share_the_loaded_engine(smol_llm) -> None:
    assert HermesLLM(max_new_tokens=8).engine is smol_llm.engine
