"""LlamaIndex adapter for hermes-function-calling: ``HermesLLM``, a local function-calling LLM."""

from __future__ import annotations

from llama_index_hermes.llm import HermesLLM

__all__ = ["HermesLLM"]
