"""``HermesLLM``: a LlamaIndex ``FunctionCallingLLM`` over the Hermes engine, local or on a server (``base_url``).

Trace of a call: ``chat`` -> ``to_core_messages`` (ChatMessage -> core Message) ->
``HermesEngine.generate`` (prompt, grammar, generation, parsing, validation) -> ``chat_response``
(GenerationResult -> ChatResponse with ``ToolCallBlock``s). Completion endpoints wrap the chat
ones, and structured output uses the engine's JSON mode (see ``_structured``).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import llama_index.core.instrumentation as instrument
from llama_index.core.base.llms.generic_utils import (
    achat_to_completion_decorator,
    astream_chat_to_completion_decorator,
    chat_to_completion_decorator,
    stream_chat_to_completion_decorator,
)
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseAsyncGen,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseAsyncGen,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.bridge.pydantic import Field, PrivateAttr, SecretStr
from llama_index.core.instrumentation.events.llm import (
    LLMStructuredPredictEndEvent,
    LLMStructuredPredictStartEvent,
)
from llama_index.core.llms.callbacks import llm_chat_callback, llm_completion_callback
from llama_index.core.llms.function_calling import FunctionCallingLLM
from llama_index.core.llms.llm import ToolSelection
from llama_index.core.types import PydanticProgramMode

from hermes_core.errors import UnsupportedOptionError
from hermes_core.frontend import REQUEST_OPTIONS
from hermes_core.options import (
    check_load_options,
    check_placement,
    check_request_options,
    engine_load_options,
)
from llama_index_hermes._agent_loop import stand_in_selections
from llama_index_hermes._messages import chat_response, to_core_messages
from llama_index_hermes._model_info import fallback_context_window, model_label, peek_context_window
from llama_index_hermes._streaming import ChunkBuilder
from llama_index_hermes._structured import JsonModeProgram
from llama_index_hermes._tools import (
    first_tool_call_only,
    resolve_tool_choice,
    to_openai_tools,
    tool_selections,
)

if TYPE_CHECKING:
    from llama_index.core.prompts.base import BasePromptTemplate
    from llama_index.core.tools.types import BaseTool

    from hermes_core.engines.local.hermes_engine import HermesEngine

dispatcher = instrument.get_dispatcher(__name__)

# Per-call options ``chat`` & co. accept: exactly the engine's per-request options.
CALL_OPTIONS = REQUEST_OPTIONS


class HermesLLM(FunctionCallingLLM):
    """Runs a Hermes-format function-calling model locally (default: the embedded SmolLM2-135M-Instruct).

    Tool calls are grammar-constrained, so ``tool_required``/``tool_choice`` are guaranteed rather than
    hoped for. The model is loaded lazily, once per process, through ``hermes_core.get_engine``; with
    ``base_url`` it runs on a llama-server, vLLM or SGLang server instead (docs/scale-out.md).
    """

    model: Any = Field(
        default=None,
        description="None for the embedded model, a local path or Hugging Face id, or a (model, tokenizer) pair.",
        exclude=True,
    )
    quantization: str | None = Field(
        default=None, description="Load-time quantization, e.g. '4bit' or '8bit'."
    )
    device_map: Any = Field(
        default=None, description="transformers device_map used when loading.", exclude=True
    )
    torch_dtype: Any = Field(default=None, description="torch dtype used when loading.", exclude=True)
    max_new_tokens: int = Field(default=512, gt=0, description="Most tokens one response may generate.")
    temperature: float = Field(default=0.0, ge=0.0, description="0 decodes greedily; above 0 samples.")
    top_p: float | None = Field(default=None, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    repetition_penalty: float | None = Field(
        default=None,
        gt=0.0,
        description="Penalty for repeating tokens (1.0 = off); small models loop less with ~1.2.",
    )
    stop: list[str] | None = Field(default=None, description="Extra stop sequences.")
    seed: int | None = Field(default=None, description="Sampling seed for reproducible runs.")
    constrained: bool = Field(default=True, description="Enforce tool-call / JSON grammars while decoding.")
    duplicate_tool_calls: Literal["end_turn", "keep"] = Field(
        default="end_turn",
        description="A call repeating one already made in the turn ends the turn and is dropped; 'keep' keeps it.",
    )
    prefix_cache: bool = Field(
        default=True, description="Reuse the KV cache of a shared prompt prefix across calls."
    )
    variant: str = Field(default="auto", description="Prompt family; 'auto' reads the model's chat template.")
    reasoning: bool | None = Field(
        default=None, description="Let a reasoning model think first (None = its default)."
    )
    reasoning_budget: int | None = Field(
        default=None,
        ge=1,
        description="Most tokens the reasoning block may take (None = half of max_new_tokens).",
    )
    context_window: int | None = Field(
        default=None, gt=0, description="Override the context window reported before the model is loaded."
    )
    base_url: str | None = Field(
        default=None,
        description="Run on a llama-server, vLLM or SGLang server at this URL; model then names the served "
        "model's tokenizer (None = the embedded model, which llama-server can serve).",
    )
    dialect: str | None = Field(
        default=None,
        description="With base_url: 'llama-server', 'vllm' or 'sglang' (default: ask the server).",
    )
    api_key: SecretStr | None = Field(default=None, description="With base_url: sent as a bearer token.")
    timeout: float | None = Field(
        default=None,
        gt=0,
        description="With base_url: seconds to wait to connect and for each streamed piece.",
    )
    max_retries: int | None = Field(
        default=None, ge=0, description="With base_url: retries of a connection that fails before sending."
    )

    _engine: Any = PrivateAttr(default=None)
    _engine_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _peeked_context_window: int | None = PrivateAttr(default=None)

    def __init__(self, model: Any = None, *, engine: HermesEngine | None = None, **kwargs: Any) -> None:
        """``engine=`` reuses an already loaded engine (it then replaces ``model`` and the load options)."""
        if engine is not None:
            clashing = [
                name for name in ("quantization", "device_map", "torch_dtype", "base_url") if kwargs.get(name)
            ]
            if model is not None or clashing:
                given = ", ".join(["model", *clashing] if model is not None else clashing)
                raise UnsupportedOptionError(
                    f"HermesLLM got engine= together with {given}; an engine is already loaded, so pass "
                    "either engine= or the model and its load options, not both."
                )
        check_placement("HermesLLM", kwargs)
        check_load_options(kwargs)
        check_request_options(kwargs)
        super().__init__(model=model, **kwargs)
        self._engine = engine

    @classmethod
    def class_name(cls) -> str:
        return "HermesLLM"

    # ------------------------------------------------------------------ engine
    def _load_options(self) -> dict[str, Any]:
        """Only the load options the user set, so equal settings share one cached engine."""
        return engine_load_options(self)

    @property
    def engine(self) -> HermesEngine:
        """The engine, loaded on first use (shared process-wide through ``get_engine``)."""
        if self._engine is None:
            with self._engine_lock:
                if self._engine is None:
                    from hermes_core import get_engine

                    self._engine = get_engine(self.model, **self._load_options())
        return self._engine

    async def _aengine(self) -> HermesEngine:
        """The engine, loading it on a worker thread so a first async call never blocks the loop."""
        if self._engine is not None:
            return self._engine
        return await asyncio.to_thread(lambda: self.engine)

    @property
    def metadata(self) -> LLMMetadata:
        """Cheap, honest metadata: never loads weights (see ``_model_info`` for the pre-load values)."""
        model_name, context_window = self._describe()
        return LLMMetadata(
            context_window=context_window,
            num_output=self.max_new_tokens,
            is_chat_model=True,
            is_function_calling_model=True,
            model_name=model_name,
        )

    def _describe(self) -> tuple[str, int]:
        """Model name and context window: exact from a loaded engine, else the cheapest honest guess."""
        if self._engine is not None:
            return self._engine.model_name, self._engine.context_window
        if self.context_window is not None:
            return model_label(self.model), self.context_window
        if self._peeked_context_window is None:
            peeked = peek_context_window(self.model)
            self._peeked_context_window = peeked if peeked is not None else fallback_context_window()
        return model_label(self.model), self._peeked_context_window

    # ----------------------------------------------------------------- options
    def _options(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Engine options for one call: the instance defaults overlaid with per-call ``kwargs``."""
        unknown = sorted(set(kwargs) - CALL_OPTIONS)
        if unknown:
            raise UnsupportedOptionError(
                f"HermesLLM does not support {', '.join(map(repr, unknown))}; per-call options are: "
                f"{', '.join(sorted(CALL_OPTIONS))}."
            )
        defaults = {
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "repetition_penalty": self.repetition_penalty,
            "stop": self.stop,
            "seed": self.seed,
            "constrained": self.constrained,
            "reasoning": self.reasoning,
            "reasoning_budget": self.reasoning_budget,
            "duplicate_tool_calls": self.duplicate_tool_calls,
        }
        options = {name: value for name, value in {**defaults, **kwargs}.items() if value is not None}
        if options.get("tools"):
            options["tools"] = to_openai_tools(options["tools"])
        check_request_options(options)  # before the engine loads: a bad option fails in milliseconds
        return options

    @staticmethod
    def _max_tool_calls(options: dict[str, Any]) -> int | None:
        return 1 if options.get("parallel_tool_calls") is False else None

    # -------------------------------------------------------------------- chat
    @llm_chat_callback()
    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """One assistant turn; ``kwargs`` are per-call engine options (see ``CALL_OPTIONS``)."""
        options = self._options(kwargs)
        result = self.engine.generate(to_core_messages(messages), **options)
        return chat_response(result, max_tool_calls=self._max_tool_calls(options))

    @llm_chat_callback()
    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        """Stream one assistant turn; every chunk holds the message so far, ``delta`` only new prose."""
        options = self._options(kwargs)
        events = self.engine.stream(to_core_messages(messages), **options)
        builder = ChunkBuilder(max_tool_calls=self._max_tool_calls(options))

        def gen() -> ChatResponseGen:
            try:
                for event in events:
                    chunk = builder.feed(event)
                    if chunk is not None:
                        yield chunk
            finally:  # a consumer that stops early stops generation now, not at garbage collection
                events.close()

        return gen()

    @llm_chat_callback()
    async def achat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        """Async ``chat``: generation runs off the event loop (the engine's ``agenerate``)."""
        options = self._options(kwargs)
        core_messages = to_core_messages(messages)
        engine = await self._aengine()
        result = await engine.agenerate(core_messages, **options)
        return chat_response(result, max_tool_calls=self._max_tool_calls(options))

    @llm_chat_callback()
    async def astream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseAsyncGen:
        """Async ``stream_chat`` over the engine's ``astream`` (the loop is never blocked)."""
        options = self._options(kwargs)
        core_messages = to_core_messages(messages)
        engine = await self._aengine()
        builder = ChunkBuilder(max_tool_calls=self._max_tool_calls(options))

        async def gen() -> ChatResponseAsyncGen:
            events = engine.astream(core_messages, **options)
            try:
                async for event in events:
                    chunk = builder.feed(event)
                    if chunk is not None:
                        yield chunk
            finally:
                await events.aclose()

        return gen()

    # -------------------------------------------------------------- completion
    @llm_completion_callback()
    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        """Completion as a one-user-message chat (``formatted`` is moot: the core renders ChatML)."""
        return chat_to_completion_decorator(self.chat)(prompt, **kwargs)

    @llm_completion_callback()
    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        """Streaming completion derived from ``stream_chat``."""
        return stream_chat_to_completion_decorator(self.stream_chat)(prompt, **kwargs)

    @llm_completion_callback()
    async def acomplete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        """Async completion derived from ``achat``."""
        return await achat_to_completion_decorator(self.achat)(prompt, **kwargs)

    @llm_completion_callback()
    async def astream_complete(
        self, prompt: str, formatted: bool = False, **kwargs: Any
    ) -> CompletionResponseAsyncGen:
        """Async streaming completion derived from ``astream_chat``."""
        return await astream_chat_to_completion_decorator(self.astream_chat)(prompt, **kwargs)

    # -------------------------------------------------------- function calling
    def _prepare_chat_with_tools(
        self,
        tools: Sequence[BaseTool],
        user_msg: str | ChatMessage | None = None,
        chat_history: list[ChatMessage] | None = None,
        verbose: bool = False,
        allow_parallel_tool_calls: bool = False,
        tool_required: bool = False,
        tool_choice: Any = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Chat kwargs for a tool-calling turn; ``tool_required``/``tool_choice`` become grammar constraints."""
        messages = list(chat_history or [])
        if isinstance(user_msg, str):
            messages.append(ChatMessage(role=MessageRole.USER, content=user_msg))
        elif user_msg is not None:
            messages.append(user_msg)
        return {
            "messages": messages,
            "tools": to_openai_tools(tools),
            "tool_choice": resolve_tool_choice(tool_choice, tool_required),
            "parallel_tool_calls": allow_parallel_tool_calls,
            **kwargs,
        }

    def _validate_chat_with_tools_response(
        self,
        response: ChatResponse,
        tools: Sequence[BaseTool],
        allow_parallel_tool_calls: bool = False,
        **kwargs: Any,
    ) -> ChatResponse:
        """Keep only the first call when parallel calls were not allowed (the grammar normally ensures it)."""
        return response if allow_parallel_tool_calls else first_tool_call_only(response)

    def get_tool_calls_from_response(
        self, response: ChatResponse, error_on_no_tool_call: bool = True, **kwargs: Any
    ) -> list[ToolSelection]:
        """The response's calls as ``ToolSelection``s (ids match its ``ToolCallBlock``s).

        A reply whose every call attempt was rejected yields stand-in selections (see ``_agent_loop``)
        so an agent loop shows the model why; with ``error_on_no_tool_call`` it raises instead, naming them.
        """
        selections = tool_selections(response, error_on_no_tool_call=error_on_no_tool_call)
        return selections or stand_in_selections(response, selections)

    # ------------------------------------------------------ structured output
    def _json_mode(self) -> bool:
        return self.pydantic_program_mode == PydanticProgramMode.DEFAULT

    @dispatcher.span
    def structured_predict(
        self,
        output_cls: type[Any],
        prompt: BasePromptTemplate,
        llm_kwargs: dict[str, Any] | None = None,
        **prompt_args: Any,
    ) -> Any:
        """Structured output via JSON mode (schema-constrained), unless another program mode was chosen."""
        if not self._json_mode():
            return super().structured_predict(output_cls, prompt, llm_kwargs, **prompt_args)
        dispatcher.event(
            LLMStructuredPredictStartEvent(output_cls=output_cls, template=prompt, template_args=prompt_args)
        )
        result = JsonModeProgram(self, output_cls, prompt)(llm_kwargs=llm_kwargs, **prompt_args)
        dispatcher.event(LLMStructuredPredictEndEvent(output=result))
        return result

    @dispatcher.span
    async def astructured_predict(
        self,
        output_cls: type[Any],
        prompt: BasePromptTemplate,
        llm_kwargs: dict[str, Any] | None = None,
        **prompt_args: Any,
    ) -> Any:
        """Async ``structured_predict``."""
        if not self._json_mode():
            return await super().astructured_predict(output_cls, prompt, llm_kwargs, **prompt_args)
        dispatcher.event(
            LLMStructuredPredictStartEvent(output_cls=output_cls, template=prompt, template_args=prompt_args)
        )
        result = await JsonModeProgram(self, output_cls, prompt).acall(llm_kwargs=llm_kwargs, **prompt_args)
        dispatcher.event(LLMStructuredPredictEndEvent(output=result))
        return result

    def _structured_stream_call(
        self,
        output_cls: type[Any],
        prompt: BasePromptTemplate,
        llm_kwargs: dict[str, Any] | None = None,
        **prompt_args: Any,
    ) -> Any:
        """The hook ``stream_structured_predict`` uses: JSON mode streaming partial objects."""
        if not self._json_mode():
            return super()._structured_stream_call(output_cls, prompt, llm_kwargs, **prompt_args)
        return JsonModeProgram(self, output_cls, prompt).stream_call(llm_kwargs=llm_kwargs, **prompt_args)

    async def _structured_astream_call(
        self,
        output_cls: type[Any],
        prompt: BasePromptTemplate,
        llm_kwargs: dict[str, Any] | None = None,
        **prompt_args: Any,
    ) -> Any:
        """The hook ``astream_structured_predict`` uses."""
        if not self._json_mode():
            return await super()._structured_astream_call(output_cls, prompt, llm_kwargs, **prompt_args)
        return await JsonModeProgram(self, output_cls, prompt).astream_call(
            llm_kwargs=llm_kwargs, **prompt_args
        )
