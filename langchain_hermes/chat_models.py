"""``ChatHermes``: LangChain chat model over a Hermes-format engine, local or on a server (``base_url``).

Trace of one call: ``invoke`` -> ``ChatHermes._generate`` -> ``to_core_messages`` ->
``HermesEngine.generate`` (prompt, grammar-constrained decoding, parsing, validation) ->
``GenerationResult`` -> ``to_ai_message`` -> ``AIMessage``. This class only converts and delegates.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, Literal

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LangSmithParams, LanguageModelInput
from langchain_core.language_models.model_profile import ModelProfile
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable
from pydantic import ConfigDict, Field, PrivateAttr, SecretStr, field_validator, model_validator

from hermes_core.engines.local.loading import EMBEDDED_NAME
from hermes_core.errors import UnsupportedOptionError
from hermes_core.options import (
    check_load_options,
    check_placement,
    check_request_options,
    engine_load_options,
)
from langchain_hermes._agent_loop import AgentChunkBuilder, in_langgraph_node, with_stand_ins
from langchain_hermes._messages import PROVIDER, restore_call_errors, to_ai_message, to_core_messages
from langchain_hermes._options import check_options, check_response_format, engine_options, request_options
from langchain_hermes._profile import hermes_profile, token_limits
from langchain_hermes._structured import StructuredMethod, structured_output_runnable
from langchain_hermes._tools import ToolLike, check_flag, check_tool_choice, convert_tools


class ChatHermes(BaseChatModel):
    """Chat model running a Hermes-format function-calling model locally with grammar-constrained tool calls.

    ``ChatHermes()`` uses the embedded SmolLM2-135M-Instruct, offline. Weights load on first use
    and are shared process-wide (by every instance with the same model and load options). With
    ``base_url`` the model runs on a llama-server, vLLM or SGLang server instead (docs/scale-out.md).
    """

    model: str | None = None
    """Local path or Hugging Face id of a ChatML/Hermes model; None = the embedded default model."""
    engine: Any = Field(default=None, exclude=True)
    """A ready-made ``hermes_core.HermesEngine`` to use instead of loading ``model``."""
    quantization: str | None = None
    """Quantization for loading (passed to ``hermes_core.get_engine``), e.g. ``"auto"``."""
    device_map: Any = None
    """Device placement for loading (passed to ``hermes_core.get_engine``)."""
    torch_dtype: Any = None
    """Weight dtype for loading (passed to ``hermes_core.get_engine``)."""
    max_new_tokens: int = Field(default=512, ge=1, alias="max_tokens")
    """Most tokens to generate per call (also accepted as ``max_tokens``)."""
    temperature: float = Field(default=0.0, ge=0.0)
    """Sampling temperature; 0 decodes greedily."""
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    """Nucleus sampling mass (with temperature > 0)."""
    repetition_penalty: float | None = Field(default=None, gt=0.0)
    """Penalty for repeating tokens (1.0 = off); small models loop less with ~1.2."""
    stop: list[str] | None = None
    """Stop sequences; output is cut before the first one."""
    seed: int | None = None
    """Random seed for sampling (reproducible runs with temperature > 0)."""
    constrained: bool = True
    """Constrain tool calls and JSON output with a grammar (xgrammar)."""
    duplicate_tool_calls: Literal["end_turn", "keep"] = "end_turn"
    """A call repeating one already made in the turn ends the turn and is dropped; ``"keep"`` keeps repeats."""
    prefix_cache: bool = True
    """Reuse the KV cache of a shared prompt prefix across calls."""
    variant: str = "auto"
    """Prompt family (``hermes_core.format.variants``): ``"auto"`` reads the model's chat template."""
    reasoning: bool | None = None
    """Let a reasoning model think first (None = its family's default; see docs/model-variants.md)."""
    reasoning_budget: int | None = Field(default=None, ge=1)
    """Most tokens the reasoning block may take (None = half of max_new_tokens)."""
    base_url: str | None = None
    """Run on a server instead of locally: llama-server, vLLM or SGLang at this URL (``model`` then names
    the served model's tokenizer; None = the embedded model, which llama-server can serve)."""
    dialect: str | None = None
    """With ``base_url``: ``llama-server``, ``vllm`` or ``sglang`` (default: ask the server)."""
    api_key: SecretStr | None = None
    """With ``base_url``: sent as a bearer token."""
    timeout: float | None = Field(default=None, gt=0)
    """With ``base_url``: seconds to wait for the server to connect and for each streamed piece (600)."""
    max_retries: int | None = Field(default=None, ge=0)
    """With ``base_url``: retries of a connection that fails before the server has the request (2)."""
    streaming: bool = False
    """Whether ``invoke`` streams internally (so callbacks see tokens)."""

    model_config = ConfigDict(populate_by_name=True, protected_namespaces=(), extra="forbid")

    _engine: Any = PrivateAttr(default=None)

    def __init__(self, model: Any = None, /, **kwargs: Any) -> None:
        """Accept the model positionally too: ``ChatHermes("NousResearch/Hermes-2-Pro-Llama-3-8B")``."""
        if model is not None:
            if "model" in kwargs:
                raise ValueError("ChatHermes got the model twice (positionally and as model=); pass it once.")
            kwargs["model"] = model
        check_load_options(kwargs)
        check_request_options(request_options(kwargs))
        super().__init__(**kwargs)

    @model_validator(mode="before")
    @classmethod
    def _refuse_unknown_arguments(cls, values: Any) -> Any:
        """Name arguments that do not apply to a local model (instead of silently ignoring them)."""
        if not isinstance(values, dict):
            return values
        if values.get("base_url") is not None and values.get("engine") is not None:
            raise ValueError(
                "ChatHermes got engine= and base_url=; pass one of them (the engine already runs)."
            )
        check_placement("ChatHermes", values)
        known = set(cls.model_fields) | {f.alias for f in cls.model_fields.values() if f.alias}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"ChatHermes got unknown argument(s) {', '.join(map(repr, unknown))}; "
                f"it takes: {', '.join(sorted(known - set(BaseChatModel.model_fields)))} "
                "(plus LangChain's common ones such as callbacks, tags and output_version)."
            )
        return values

    @field_validator("model", mode="before")
    @classmethod
    def _path_to_str(cls, value: Any) -> Any:
        """Accept ``pathlib.Path`` for a local model; point loaded objects to ``engine=``."""
        if isinstance(value, tuple):
            raise ValueError(
                "model takes a path or Hugging Face id; for an already-loaded (model, tokenizer) pair pass "
                "engine=hermes_core.get_engine((model, tokenizer)) instead."
            )
        return os.fspath(value) if isinstance(value, os.PathLike) else value

    # ---------------------------------------------------------------- identity
    @property
    def _llm_type(self) -> str:
        return PROVIDER

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model": self._model_label(),
            "base_url": self.base_url,
            "quantization": self.quantization,
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "repetition_penalty": self.repetition_penalty,
            "seed": self.seed,
            "constrained": self.constrained,
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        """Tracing parameters; a per-call ``model`` override is reported as the model."""
        params = LangSmithParams(
            ls_provider=PROVIDER,
            ls_model_name=str(kwargs.get("model") or self._model_label()),
            ls_model_type="chat",
            ls_temperature=kwargs.get("temperature", self.temperature),
            ls_max_tokens=kwargs.get("max_new_tokens", kwargs.get("max_tokens", self.max_new_tokens)),
        )
        if stop or self.stop:
            params["ls_stop"] = list(stop or self.stop or [])
        return params

    def _model_label(self) -> str:
        """The configured model's name, without loading it (stable, so LangChain's cache keys are too)."""
        if self.engine is not None:
            return str(self.engine.model_name)
        return self.model if self.model is not None else EMBEDDED_NAME

    def _resolve_model_profile(self) -> ModelProfile | None:
        """Capabilities (tool calling, tool choice, structured output...); token limits once loaded."""
        return hermes_profile(self.engine)

    def _fill_token_limits(self, engine: Any) -> None:
        """Add the loaded model's token limits to the profile (keys already set are kept)."""
        if self.profile is not None and "max_input_tokens" not in self.profile:
            self.profile = ModelProfile(**{**token_limits(engine), **self.profile})

    # ----------------------------------------------------------------- engine
    def _load_options(self) -> dict[str, Any]:
        """Options that select the shared engine (only those set, so equal setups share one)."""
        return engine_load_options(self)

    def _get_engine(self, model: str | None = None) -> Any:
        """The engine for this model (loaded once per process on first use), or for ``model`` if given."""
        from hermes_core import get_engine

        if model is not None and model != self.model:
            return get_engine(model, **self._load_options())
        if self.engine is not None:
            return self.engine
        if self._engine is None:
            self._engine = get_engine(self.model, **self._load_options())
            self._fill_token_limits(self._engine)
        return self._engine

    async def _aget_engine(self, model: str | None = None) -> Any:
        """``_get_engine`` without blocking the event loop while weights load."""
        if model is None and self.engine is not None:
            return self.engine
        if model is None and self._engine is not None:
            return self._engine
        return await asyncio.to_thread(self._get_engine, model)

    def _call_options(self, stop: list[str] | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Engine options for one call: instance defaults overridden by per-call kwargs."""
        defaults = {
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "repetition_penalty": self.repetition_penalty,
            "seed": self.seed,
            "constrained": self.constrained,
            "duplicate_tool_calls": self.duplicate_tool_calls,
            "stop": self.stop or None,
            "reasoning": self.reasoning,
            "reasoning_budget": self.reasoning_budget,
        }
        return engine_options(defaults, stop, kwargs)

    # ------------------------------------------------------------- generation
    def _generate_with_cache(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        """LangChain's generate step (cache, internal streaming), with invalid-call errors kept when it streamed."""
        result = super()._generate_with_cache(messages, stop=stop, run_manager=run_manager, **kwargs)
        return _with_call_errors(result)

    async def _agenerate_with_cache(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        """Async ``_generate_with_cache``."""
        result = await super()._agenerate_with_cache(messages, stop=stop, run_manager=run_manager, **kwargs)
        return _with_call_errors(result)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        options = self._call_options(stop, kwargs)
        engine = self._get_engine(kwargs.get("model"))
        result = engine.generate(to_core_messages(messages), **options)
        return ChatResult(generations=[ChatGeneration(message=_reply(result))])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        options = self._call_options(stop, kwargs)
        engine = await self._aget_engine(kwargs.get("model"))
        result = await engine.agenerate(to_core_messages(messages), **options)
        return ChatResult(generations=[ChatGeneration(message=_reply(result))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        # LangChain itself reports each yielded chunk to ``run_manager.on_llm_new_token``.
        options = self._call_options(stop, kwargs)
        engine = self._get_engine(kwargs.get("model"))
        builder = AgentChunkBuilder(v1=self.output_version == "v1")
        agent_loop = in_langgraph_node()
        for event in engine.stream(to_core_messages(messages), **options):
            yield from builder.chunks(event, agent_loop)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        options = self._call_options(stop, kwargs)
        engine = await self._aget_engine(kwargs.get("model"))
        builder = AgentChunkBuilder(v1=self.output_version == "v1")
        agent_loop = in_langgraph_node()
        async for event in engine.astream(to_core_messages(messages), **options):
            for chunk in builder.chunks(event, agent_loop):
                yield chunk

    def get_token_ids(self, text: str) -> list[int]:
        """Token ids from the model's own tokenizer (not GPT-2's)."""
        return self._get_engine().encode(text)

    # ------------------------------------------------------------------ tools
    def bind_tools(
        self,
        tools: Sequence[ToolLike],
        *,
        tool_choice: Any = None,
        parallel_tool_calls: bool | None = None,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Offer ``tools``; ``tool_choice`` (auto/none/any/required/True/name/dict) is enforced by the grammar.

        ``strict`` is accepted for API compatibility: calls are always checked against the schemas
        (grammar while decoding, validation after), so it only changes the schema LangChain emits.
        ``response_format`` (a JSON schema, OpenAI's ``{"type": "json_schema", ...}`` as ``create_agent``
        binds it, or a pydantic class) constrains the final answer: with ``tool_choice`` auto each reply
        is either tool calls or JSON text valid for the schema; a forced ``tool_choice`` makes it calls.
        """
        check_flag("parallel_tool_calls", parallel_tool_calls)
        check_flag("strict", strict)
        check_options(kwargs)
        specs = convert_tools(tools, strict=strict)
        check_tool_choice(tool_choice, specs)
        if kwargs.get("response_format") is not None:
            check_response_format(kwargs["response_format"])
        bound: dict[str, Any] = {"tools": specs, **kwargs}
        if tool_choice is not None:
            bound["tool_choice"] = tool_choice
        if parallel_tool_calls is not None:
            bound["parallel_tool_calls"] = parallel_tool_calls
        return self.bind(**bound)

    def with_structured_output(
        self,
        schema: dict[str, Any] | type | None,
        *,
        method: StructuredMethod = "json_schema",
        include_raw: bool = False,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, dict[str, Any] | Any]:
        """Return output matching ``schema`` (pydantic class, TypedDict or JSON schema).

        ``method``: ``"json_schema"`` (default; grammar-enforced JSON mode for the schema),
        ``"function_calling"`` (the schema bound as a forced tool) or ``"json_mode"`` (any JSON
        object; describe the keys in the prompt; ``schema`` may be None for a plain dict).
        """
        if kwargs:
            raise UnsupportedOptionError(
                f"with_structured_output does not take {', '.join(map(repr, sorted(kwargs)))}; "
                "it takes schema, method, include_raw and strict."
            )
        check_flag("strict", strict)
        return structured_output_runnable(self, schema, method=method, include_raw=include_raw, strict=strict)


def _with_call_errors(result: ChatResult) -> ChatResult:
    """``result`` with the error text of invalid calls restored where adding up chunks dropped it.

    ``invoke`` streams internally when a callback asks for tokens (LangGraph's ``stream_mode="messages"``,
    ``astream_events``, ``streaming=True``); an agent must then see the same errors as without streaming.
    """
    for generation in result.generations:
        if isinstance(generation.message, AIMessage):
            generation.message = restore_call_errors(generation.message)
    return result


def _reply(result: Any) -> AIMessage:
    """The ``AIMessage`` for a finished generation; inside a LangGraph node, with stand-in calls added."""
    message = to_ai_message(result)
    return with_stand_ins(message, result) if in_langgraph_node() else message


__all__ = ["ChatHermes"]
