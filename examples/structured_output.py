"""Structured output (JSON mode) in both frameworks: the grammar guarantees JSON that fits the schema.

Run from the repository root: ``python examples/structured_output.py`` (offline, embedded model).
Needs ``pip install "hermes-function-calling[all]"``.

- LangChain: ``ChatHermes().with_structured_output(Model)`` returns a ``Model`` instance
  (``method="json_schema"``, the default, uses the engine's grammar-constrained JSON mode;
  ``method="function_calling"`` binds the schema as a forced tool instead).
- LlamaIndex: ``HermesLLM().structured_predict(Model, prompt, **vars)`` returns a ``Model`` instance.
- The core: ``engine.generate(messages, response_format=Model)`` returns the JSON text.
The values come from a 135M model, so they may be wrong; their shape cannot be.
"""

from __future__ import annotations

import json
from typing import Literal

from llama_index.core.prompts import PromptTemplate
from pydantic import BaseModel, Field

from hermes_core import Message, get_engine
from langchain_hermes import ChatHermes
from llama_index_hermes import HermesLLM


class Landmark(BaseModel):
    """A landmark and where it is."""

    name: str = Field(description="The landmark's name", max_length=40)
    city: str = Field(description="The city it is in", max_length=30)
    kind: Literal["tower", "bridge", "building", "statue", "other"]


def main() -> None:
    """Extract the same structure three ways and print each result."""
    question = "The Eiffel Tower is a wrought-iron tower in Paris. What landmark is this and where is it?"

    structured = ChatHermes(max_new_tokens=64).with_structured_output(Landmark)
    from_langchain = structured.invoke(question)
    print(f"LangChain  with_structured_output -> {from_langchain!r}")

    prompt = PromptTemplate("Extract the landmark from this text: {text}")
    from_llama_index = HermesLLM(max_new_tokens=64).structured_predict(Landmark, prompt, text=question)
    print(f"LlamaIndex structured_predict     -> {from_llama_index!r}")

    result = get_engine().generate([Message("user", question)], response_format=Landmark, max_new_tokens=64)
    print(f"hermes_core response_format        -> {json.loads(result.content)}")


if __name__ == "__main__":
    main()
