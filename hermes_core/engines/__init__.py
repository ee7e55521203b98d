"""Engines turn a rendered prompt and a constraint into tokens: ``local`` (transformers, in process)."""
