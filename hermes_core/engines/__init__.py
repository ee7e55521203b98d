"""Engines turn a rendered prompt and a constraint into tokens: ``local`` (transformers, in process) and
``server`` (llama-server, vLLM or SGLang over HTTP)."""
