"""LangChain integration for local Hermes-format function-calling models: ``ChatHermes``."""

from __future__ import annotations

from langchain_hermes._messages import restore_call_errors
from langchain_hermes.chat_models import ChatHermes

__all__ = ["ChatHermes", "restore_call_errors"]
