"""``HermesEngine``: the request frontend bound to a local engine, and the process-wide engine registry.

``load_engine`` loads a model and wraps it; ``get_engine`` shares one engine (and one copy of the
weights) per model and options across a process, so LangChain and LlamaIndex users share a model.
"""

from __future__ import annotations

import inspect
import threading
from typing import Any

from hermes_core.engines.local.engine import (
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_PREFILL_CHUNK_TOKENS,
    EngineStats,
    LocalEngine,
)
from hermes_core.engines.local.prefix_cache import PrefixCache
from hermes_core.frontend import Frontend, _defaults
from hermes_core.options import check_load_options, check_request_options


class HermesEngine(Frontend):
    """Runs a Hermes-format chat model locally: the shared frontend over a ``LocalEngine``."""

    engine: LocalEngine

    def __init__(
        self,
        loaded: Any,
        *,
        constrained: bool = True,
        prefix_cache: bool = True,
        prefix_cache_size: int = 4,
        max_new_tokens: int = 512,
        temperature: float = 0.0,
        top_p: float | None = None,
        repetition_penalty: float | None = None,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        kv_budget_tokens: int | None = None,
        share_prefixes: bool = True,
        prefill_chunk_tokens: int | None = DEFAULT_PREFILL_CHUNK_TOKENS,
        fuse_prefill: bool = True,
        variant: Any = "auto",
        reasoning: bool | None = None,
        reasoning_budget: int | None = None,
    ) -> None:
        super().__init__(
            LocalEngine(
                loaded,
                prefix_cache=prefix_cache,
                prefix_cache_size=prefix_cache_size,
                max_batch_size=max_batch_size,
                kv_budget_tokens=kv_budget_tokens,
                share_prefixes=share_prefixes,
                prefill_chunk_tokens=prefill_chunk_tokens,
                fuse_prefill=fuse_prefill,
            ),
            constrained=constrained,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            repetition_penalty=repetition_penalty,
            variant=variant,
            reasoning=reasoning,
            reasoning_budget=reasoning_budget,
        )

    @property
    def loaded(self) -> Any:
        """The ``LoadedModel`` (model, tokenizer and what loading applied to them)."""
        return self.engine.loaded

    @property
    def model(self) -> Any:
        """The transformers model."""
        return self.engine.model

    @property
    def prefix_cache(self) -> PrefixCache | None:
        """The KV prefix cache (None when turned off)."""
        return self.engine.prefix_cache

    @property
    def stats(self) -> EngineStats:
        """Counters of the local engine: requests served, prompt tokens, reused prefix tokens."""
        return self.engine.stats


def load_engine(
    model: Any = None,
    *,
    quantization: str | None = None,
    device_map: Any = None,
    torch_dtype: Any = None,
    constrained: bool = True,
    prefix_cache: bool = True,
    prefix_cache_size: int = 4,
    max_new_tokens: int = 512,
    temperature: float = 0.0,
    top_p: float | None = None,
    repetition_penalty: float | None = None,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    kv_budget_tokens: int | None = None,
    share_prefixes: bool = True,
    prefill_chunk_tokens: int | None = DEFAULT_PREFILL_CHUNK_TOKENS,
    fuse_prefill: bool = True,
    variant: Any = "auto",
    reasoning: bool | None = None,
    reasoning_budget: int | None = None,
    **load_options: Any,
) -> HermesEngine:
    """Load ``model`` (None = the embedded SmolLM2) and wrap it in a new engine.

    Weights are shared: loading the same model with the same load options twice in one process
    reuses the first load. Every option is checked first, so a bad one never costs a model load.
    """
    check_load_options(
        {"quantization": quantization, "torch_dtype": torch_dtype, "prefix_cache": prefix_cache}
    )
    check_request_options(_defaults(max_new_tokens, temperature, top_p, repetition_penalty, constrained))
    loaded = _load_shared(
        model,
        quantization=quantization,
        device_map=device_map,
        torch_dtype=torch_dtype,
        variant=variant,
        **load_options,
    )
    return HermesEngine(
        loaded,
        constrained=constrained,
        prefix_cache=prefix_cache,
        prefix_cache_size=prefix_cache_size,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        repetition_penalty=repetition_penalty,
        max_batch_size=max_batch_size,
        kv_budget_tokens=kv_budget_tokens,
        share_prefixes=share_prefixes,
        prefill_chunk_tokens=prefill_chunk_tokens,
        fuse_prefill=fuse_prefill,
        variant=variant,
        reasoning=reasoning,
        reasoning_budget=reasoning_budget,
    )


_LOADED: dict[Any, Any] = {}
_ENGINES: dict[Any, HermesEngine] = {}
_REGISTRY_LOCK = threading.Lock()


def _model_key(model: Any) -> Any:
    if isinstance(model, tuple):
        return ("object", *(id(part) for part in model))
    return ("path", str(model) if model is not None else None)


def _load_shared(model: Any, **load_options: Any) -> Any:
    """Load weights once per process for the same model and load options (defaults filled in)."""
    from hermes_core.engines.local.loading import load_model

    options = load_options
    try:
        bound = inspect.signature(load_model).bind(model, **load_options)
    except TypeError:
        pass  # an unknown option: load_model below raises the error that names it
    else:
        bound.apply_defaults()
        options = {name: value for name, value in bound.arguments.items() if name != "model"}
    key = (_model_key(model), tuple(sorted((k, repr(v)) for k, v in options.items())))
    with _REGISTRY_LOCK:
        loaded = _LOADED.get(key)
        if loaded is None:
            loaded = _LOADED[key] = load_model(model, **load_options)
            if isinstance(model, tuple):
                _LOADED[(key, "keepalive")] = model  # keeps the ids in the key valid
        return loaded


def get_engine(model: Any = None, **options: Any) -> Any:
    """Process-wide shared engine for ``model`` and ``options`` (weights are loaded only once).

    Options are keyed with ``load_engine``'s defaults filled in, so ``get_engine(m)`` and
    ``get_engine(m, quantization=None)`` return the same engine. With ``base_url=`` the model runs on
    a server instead: the ``Frontend`` over a ``ServerEngine`` (see ``get_server_engine``), and
    ``model`` names the served model's tokenizer.
    """
    if options.get("base_url") is not None:
        from hermes_core.engines.server.engine import get_server_engine

        return get_server_engine(model, **options)
    options.pop("base_url", None)
    bound = inspect.signature(load_engine).bind(model, **options)
    bound.apply_defaults()
    arguments = dict(bound.arguments)
    arguments.update(arguments.pop("load_options", {}))
    arguments.pop("model")
    key = (_model_key(model), tuple(sorted((k, repr(v)) for k, v in arguments.items())))
    with _REGISTRY_LOCK:
        engine = _ENGINES.get(key)
    if engine is None:
        engine = load_engine(model, **options)
        with _REGISTRY_LOCK:
            engine = _ENGINES.setdefault(key, engine)
    return engine
