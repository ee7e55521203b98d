"""LangChain's own standard test suites for ``ChatHermes`` (the contract every chat model integration meets).

The unit suite never loads weights. The integration suite runs on the embedded SmolLM2-135M
(offline); capabilities it has are declared, only media inputs (images, audio, PDF, video) are off.
"""

from __future__ import annotations

import functools
import tempfile
from typing import Any

import pytest
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests

from langchain_hermes import ChatHermes


class TestChatHermesUnit(ChatModelUnitTests):
    """Construction, binding and tracing parameters: no model is loaded."""

    @property
    def chat_model_class(self) -> type[ChatHermes]:
        return ChatHermes

    @property
    def standard_chat_model_params(self) -> dict[str, Any]:
        # api_key / timeout / max_retries are network-client settings: ChatHermes runs in-process
        # and refuses them with a clear error (tested in test_chat_model.py).
        return {"temperature": 0, "max_tokens": 100, "stop": []}

    @property
    def has_tool_choice(self) -> bool:
        return True

    @property
    def has_structured_output(self) -> bool:
        return True

    @property
    def supports_json_mode(self) -> bool:
        return True

    @property
    def model_override_value(self) -> str:
        return "NousResearch/Hermes-3-Llama-3.1-8B"


@functools.cache
def _tiny_model_path() -> str:
    """A second (tiny, random) local model, so the per-call ``model=`` override has something to load."""
    from tests.tiny_model import build_tiny_model

    return str(build_tiny_model(tempfile.mkdtemp(prefix="tiny-chatml-override-")))


@pytest.mark.slow
class TestChatHermesIntegration(ChatModelIntegrationTests):
    """The full integration suite on the embedded model, with small generation budgets."""

    @property
    def chat_model_class(self) -> type[ChatHermes]:
        return ChatHermes

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"max_tokens": 48}

    @property
    def has_tool_choice(self) -> bool:
        return True

    @property
    def has_structured_output(self) -> bool:
        return True

    @property
    def supports_json_mode(self) -> bool:
        return True

    @property
    def returns_usage_metadata(self) -> bool:
        return True

    @property
    def supports_image_inputs(self) -> bool:
        return False

    @property
    def supports_image_urls(self) -> bool:
        return False

    @property
    def supports_pdf_inputs(self) -> bool:
        return False

    @property
    def supports_audio_inputs(self) -> bool:
        return False

    @property
    def supports_video_inputs(self) -> bool:
        return False

    @property
    def supports_image_tool_message(self) -> bool:
        return False

    @property
    def supports_pdf_tool_message(self) -> bool:
        return False

    @property
    def model_override_value(self) -> str:
        return _tiny_model_path()
