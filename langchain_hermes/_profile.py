"""``ChatHermes.profile``: what LangChain (e.g. ``create_agent``) may rely on a local Hermes model for.

``structured_output`` is what makes ``create_agent(..., response_format=Model)`` pick its provider
strategy: the schema is bound as ``response_format`` and the grammar constrains the final answer to it.
Token limits come from the loaded model (the context window bounds both prompt and reply), so they
are filled in once the weights are loaded, or at construction when a ready engine is passed.
"""

from __future__ import annotations

from typing import Any

from langchain_core.language_models.model_profile import ModelProfile

CAPABILITIES = ModelProfile(
    text_inputs=True,
    image_inputs=False,
    image_url_inputs=False,
    pdf_inputs=False,
    audio_inputs=False,
    video_inputs=False,
    image_tool_message=False,
    pdf_tool_message=False,
    text_outputs=True,
    image_outputs=False,
    audio_outputs=False,
    video_outputs=False,
    reasoning_output=False,
    tool_calling=True,
    tool_choice=True,
    tool_call_streaming=True,
    structured_output=True,
    temperature=True,
    open_weights=True,
)
"""Text in and out, grammar-enforced tool calls, tool_choice and JSON-schema answers; no reasoning blocks."""


def token_limits(engine: Any) -> ModelProfile:
    """The loaded model's limits: its context window holds the prompt, and a reply fills at most the rest."""
    window = int(engine.context_window)
    return ModelProfile(max_input_tokens=window, max_output_tokens=window)


def hermes_profile(engine: Any = None) -> ModelProfile:
    """The capabilities, plus the token limits when an engine is already loaded."""
    profile = ModelProfile(**CAPABILITIES)
    if engine is not None:
        profile.update(token_limits(engine))
    return profile
