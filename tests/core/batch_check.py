"""A check shared by the batched-step tests: a batched step's logits equal one-row steps' bit for bit."""

from __future__ import annotations

import copy
from typing import Any

import torch

from hermes_core.engines.local.batch_step import single_row_logits
from hermes_core.engines.local.kv_cache import new_kv_cache


def assert_batched_equals_one_row_steps(
    model: Any, step: Any, prompts: list[list[int]], tokens: list[int], steps: int
) -> list[int]:
    """Prefill each prompt into its own cache, then ``steps`` greedy steps through ``step`` over all rows,
    each checked against ``single_row_logits`` on copies of the caches; returns the last step's tokens."""
    caches = [new_kv_cache(model) for _ in prompts]
    with torch.inference_mode():
        for prompt, cache in zip(prompts, caches, strict=True):
            single_row_logits(model, "cache", prompt, cache)
        alone = [copy.deepcopy(cache) for cache in caches]
        for _ in range(steps):
            batched = step(tokens, caches)
            solo = torch.cat(
                [single_row_logits(model, "cache", [t], c) for t, c in zip(tokens, alone, strict=True)]
            )
            assert torch.equal(batched, solo)
            tokens = batched.argmax(-1).tolist()
    return tokens
