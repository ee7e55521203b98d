"""The Hermes text format: tool specs, system prompts, ChatML rendering, the tool-call parser, validation.

Pure Python (no torch, no HTTP): every engine shares it, so a prompt renders and an output parses the same
way whichever engine generated it.
"""
