"""Structured output through Hermes JSON mode: the core's ``<schema>`` prompt plus a grammar for the schema.

LlamaIndex's default for function-calling LLMs forces a tool named after the output class and
runs it; Hermes models have a native JSON mode instead, which costs one generation, no tool
round trip, and lets the grammar enforce the schema directly. ``HermesLLM`` uses this program
for ``PydanticProgramMode.DEFAULT``; other modes keep LlamaIndex's own programs.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Generator
from typing import TYPE_CHECKING, Any, Generic

from llama_index.core.base.llms.types import ChatMessage, ChatResponse
from llama_index.core.bridge.pydantic import BaseModel, ValidationError
from llama_index.core.program.utils import FlexibleModel, process_streaming_objects
from llama_index.core.prompts.base import BasePromptTemplate
from llama_index.core.types import BasePydanticProgram, Model

from hermes_core.format.tool_specs import to_json_schema

if TYPE_CHECKING:
    from llama_index_hermes.llm import HermesLLM


class JsonModeProgram(BasePydanticProgram[Model], Generic[Model]):
    """Formats ``prompt``, generates schema-constrained JSON with ``llm`` and validates it into ``output_cls``."""

    def __init__(self, llm: HermesLLM, output_cls: type[Model], prompt: BasePromptTemplate) -> None:
        self._llm = llm
        self._output_cls = output_cls
        self._prompt = prompt

    @property
    def output_cls(self) -> type[Model]:
        return self._output_cls

    def _messages(self, prompt_args: dict[str, Any]) -> list[ChatMessage]:
        messages = self._prompt.format_messages(llm=self._llm, **prompt_args)
        return self._llm._extend_messages(messages)

    def _chat_kwargs(self, llm_kwargs: dict[str, Any] | None) -> dict[str, Any]:
        return {**(llm_kwargs or {}), "response_format": to_json_schema(self._output_cls)}

    def _parse(self, response: ChatResponse) -> Model:
        text = response.message.content or ""
        try:
            return self._output_cls.model_validate_json(text)
        except ValidationError as exc:
            reason = (response.raw or {}).get("finish_reason")
            hint = " The output was cut off: raise max_new_tokens." if reason == "length" else ""
            raise ValueError(
                f"HermesLLM JSON mode produced text that is not a valid {self._output_cls.__name__}: "
                f"{text!r} ({exc.error_count()} validation errors: {exc.errors()[0]['msg']}).{hint}"
            ) from exc

    def __call__(self, *args: Any, llm_kwargs: dict[str, Any] | None = None, **prompt_args: Any) -> Model:
        return self._parse(self._llm.chat(self._messages(prompt_args), **self._chat_kwargs(llm_kwargs)))

    async def acall(self, *args: Any, llm_kwargs: dict[str, Any] | None = None, **prompt_args: Any) -> Model:
        response = await self._llm.achat(self._messages(prompt_args), **self._chat_kwargs(llm_kwargs))
        return self._parse(response)

    def stream_call(
        self, *args: Any, llm_kwargs: dict[str, Any] | None = None, **prompt_args: Any
    ) -> Generator[Model | FlexibleModel, None, None]:
        """Partial objects as the JSON grows (LlamaIndex's partial-JSON repair), ending with the full one."""
        chunks = self._llm.stream_chat(self._messages(prompt_args), **self._chat_kwargs(llm_kwargs))
        current: list[BaseModel] | None = None
        for chunk in chunks:
            partial = process_streaming_objects(chunk, self._output_cls, cur_objects=current, llm=self._llm)
            current = [partial]
            yield partial

    async def astream_call(
        self, *args: Any, llm_kwargs: dict[str, Any] | None = None, **prompt_args: Any
    ) -> AsyncGenerator[Model | FlexibleModel, None]:
        """Async ``stream_call``."""
        chunks = await self._llm.astream_chat(self._messages(prompt_args), **self._chat_kwargs(llm_kwargs))

        async def gen() -> AsyncGenerator[Model | FlexibleModel, None]:
            current: list[BaseModel] | None = None
            async for chunk in chunks:
                partial = process_streaming_objects(
                    chunk, self._output_cls, cur_objects=current, llm=self._llm
                )
                current = [partial]
                yield partial

        return gen()
