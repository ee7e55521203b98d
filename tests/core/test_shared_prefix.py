"""Rows over one prompt prefix hold its KV once and attend over it together (cascade attention)."""

from __future__ import annotations

import copy
import dataclasses
import threading

import pytest
import torch

from hermes_core import Message, load_engine
from hermes_core.engines.local.batch_step import LlamaBatchStep, single_row_logits
from hermes_core.engines.local.kv_cache import new_kv_cache
from hermes_core.engines.local.scheduler import Submission
from hermes_core.engines.local.shared_prefix import (
    SharedPrefix,
    cascade_attention,
    pieces_attention,
    suffix_cache,
)


def test_cascade_attention_is_softmax_over_prefix_and_suffix_together():
    """The log-sum-exp merge equals one attention over the concatenated keys (GQA: 8 query heads, 2 KV heads)."""
    generator = torch.Generator().manual_seed(0)
    rows, heads, kv_heads, dim = 3, 8, 2, 16
    query = torch.randn(rows, heads, 1, dim, generator=generator)
    prefix_key, prefix_value = (torch.randn(1, kv_heads, 50, dim, generator=generator) for _ in range(2))
    suffixes = [
        tuple(torch.randn(1, kv_heads, n, dim, generator=generator) for _ in range(2)) for n in (1, 7, 20)
    ]
    merged = cascade_attention(query, prefix_key, prefix_value, suffixes, 0.25)
    for row, (key, value) in enumerate(suffixes):
        keys = torch.cat([prefix_key, key], dim=2).repeat_interleave(heads // kv_heads, dim=1)
        values = torch.cat([prefix_value, value], dim=2).repeat_interleave(heads // kv_heads, dim=1)
        expected = torch.softmax(query[row : row + 1] @ keys.transpose(-1, -2) * 0.25, dim=-1) @ values
        assert torch.allclose(merged[row : row + 1], expected.transpose(1, 2), rtol=0, atol=1e-6)


def test_pieces_over_one_prefix_attend_in_one_call_as_each_would_alone():
    """Several rows' new tokens over one prefix (read in one call): causal softmax over prefix + own keys."""
    generator = torch.Generator().manual_seed(1)
    heads, kv_heads, dim = 8, 2, 16
    prefix_key, prefix_value = (torch.randn(1, kv_heads, 40, dim, generator=generator) for _ in range(2))
    prefix = SharedPrefix(list(range(40)), [prefix_key], [prefix_value])
    queries, caches = [], []
    for seen, count in ((0, 5), (3, 1), (6, 9)):  # cached own tokens before the piece, tokens in it
        queries.append(torch.randn(1, heads, count, dim, generator=generator))
        caches.append(
            tuple(torch.randn(1, kv_heads, seen + count, dim, generator=generator) for _ in range(2))
        )
    outputs = pieces_attention(queries, caches, prefix, 0, 0.25)
    for query, (key, value), output in zip(queries, caches, outputs, strict=True):
        count, length = query.shape[2], key.shape[2]
        keys = torch.cat([prefix_key, key], dim=2).repeat_interleave(heads // kv_heads, dim=1)
        values = torch.cat([prefix_value, value], dim=2).repeat_interleave(heads // kv_heads, dim=1)
        scores = query @ keys.transpose(-1, -2) * 0.25
        own = torch.arange(length) <= (length - count + torch.arange(count)).unsqueeze(-1)
        visible = torch.cat([torch.ones(count, 40, dtype=torch.bool), own], dim=1)
        expected = torch.softmax(scores.masked_fill(~visible, float("-inf")), dim=-1) @ values
        assert output.shape == (1, count, heads, dim)
        assert torch.allclose(output, expected.transpose(1, 2), rtol=0, atol=1e-6)


# Largest logit difference against whole-cache rows (logits of about 1.3 on the tiny model).
TOLERANCE = {"fp32": 1e-5, "bf16": 2e-2, "nf4-bf16": 2e-2}


@pytest.mark.parametrize("load", ["fp32", "bf16", "nf4-bf16"])
def test_step_over_a_shared_prefix_matches_rows_with_whole_caches(tiny_model_dir, load):
    options = {"fp32": dict(torch_dtype=torch.float32), "bf16": dict(torch_dtype=torch.bfloat16)}.get(load)
    if load == "nf4-bf16":
        pytest.importorskip("bitsandbytes")
        options = dict(quantization="4bit", torch_dtype=torch.bfloat16)
    model = load_engine(str(tiny_model_dir), **options).model
    step = LlamaBatchStep.for_model(model)
    generator = torch.Generator().manual_seed(0)
    prompt = torch.randint(10, 300, (120,), generator=generator).tolist()
    questions = [torch.randint(10, 300, (n,), generator=generator).tolist() for n in (5, 17, 9, 30)]
    with torch.inference_mode():
        common = new_kv_cache(model)
        single_row_logits(model, "cache", prompt, common)
        prefix = SharedPrefix.from_cache(common, prompt)
        whole = []
        for question in questions:
            cache = copy.deepcopy(common)
            single_row_logits(model, "cache", question, cache)
            whole.append(cache)
        own = [suffix_cache(cache, len(prompt), model) for cache in whole]
        assert all(cache.get_seq_length() == len(q) for cache, q in zip(own, questions, strict=True))
        # a fifth row with no prefix decodes in the same step, by itself
        alone = new_kv_cache(model)
        single_row_logits(model, "cache", questions[0], alone)
        alone_copy = copy.deepcopy(alone)
        tokens = [3, 100, 200, 7, 50]
        for _ in range(8):
            expected = step(tokens, [*whole, alone_copy])
            shared = step(tokens, [*own, alone], [prefix] * 4 + [None])
            assert (shared - expected).abs().max() <= TOLERANCE[load]
            if load == "fp32":
                assert torch.equal(shared.argmax(-1), expected.argmax(-1))
            assert torch.equal(shared[4], expected[4])  # the unshared row is untouched by the others
            tokens = expected.argmax(-1).tolist()
    assert all(torch.equal(k, common.layers[i].keys[..., :120, :]) for i, k in enumerate(prefix.keys))


def _submit_all(local, requests):
    """Submit from one thread; record, at each token, which prefixes the running rows reference."""
    seen: list[tuple[int, int, int]] = []  # (rows, distinct prefixes among them, longest own cache)

    def on_token(token: int) -> None:
        rows = list(local.scheduler._rows)
        prefixes = {id(row.prefix) for row in rows if row.prefix is not None}
        seen.append((len(rows), len(prefixes), max(row.cache.get_seq_length() for row in rows)))

    submissions = [Submission(dataclasses.replace(r, cancel=threading.Event()), on_token) for r in requests]
    for submission in submissions:
        local.scheduler.submit(submission)
    for submission in submissions:
        assert submission.done.wait(120)
        assert submission.error is None, submission.error
    return [s.final.token_ids for s in submissions], seen


@pytest.mark.parametrize("warm", [True, False])
def test_requests_over_one_tools_turn_hold_it_once_and_answer_as_alone(tiny_model_dir, warm):
    """fp32 greedy: every answer equals the answer alone; the rows reference one prefix, not copies."""
    engine = load_engine(str(tiny_model_dir), torch_dtype=torch.float32, max_new_tokens=16)
    local = engine.engine
    system = Message("system", "You answer questions about the weather, briefly and exactly. " * 4)
    asks = [[system, Message("user", f"Weather in city {i}, please?")] for i in range(5)]
    requests = [
        dataclasses.replace(
            engine._prepare(ask, constrained=False, max_new_tokens=16).request, stop_token_ids=[0]
        )
        for ask in asks
    ]
    shared_length = requests[0].chunk_starts[-1]
    assert shared_length > 60
    solo = [local.run(dataclasses.replace(r, cancel=threading.Event())).token_ids for r in requests]
    local.prefix_cache.clear()
    if warm:
        local.run(dataclasses.replace(requests[0], cancel=threading.Event()))
    before = local.stats.shared_prefix_rows
    answers, seen = _submit_all(local, requests)
    assert answers == solo
    assert local.stats.shared_prefix_rows - before == 5
    together = [entry for entry in seen if entry[0] == 5]
    assert together and all(prefixes == 1 for _, prefixes, _ in together)
    # each row keeps only its question and answer: the shared turn is not in its own cache
    assert max(longest for _, _, longest in together) < len(requests[-1].prompt_ids) - shared_length + 16
    # the prefix went back to the prefix cache, and a later request alone still answers the same
    assert local.prefix_cache.holds(requests[0].prompt_ids[:shared_length])
    assert local.run(dataclasses.replace(requests[2], cancel=threading.Event())).token_ids == solo[2]


def test_kv_budget_counts_a_shared_prefix_once(tiny_model_dir):
    system = Message("system", "Tools and rules for the assistant, long enough to matter. " * 6)
    asks = [[system, Message("user", f"Question {i}?")] for i in range(4)]
    peaks = {}
    for share in (True, False):
        engine = load_engine(
            str(tiny_model_dir), torch_dtype=torch.float32, share_prefixes=share, kv_budget_tokens=1
        )
        local = engine.engine
        requests = [
            dataclasses.replace(
                engine._prepare(ask, constrained=False, max_new_tokens=10).request, stop_token_ids=[0]
            )
            for ask in asks
        ]
        prompt, shared = len(requests[0].prompt_ids), requests[0].chunk_starts[-1]
        # room for two whole requests, and for one prefix with four questions and their answers
        local.scheduler.kv_budget_tokens = 2 * (prompt + 10)
        assert shared + 4 * (prompt - shared + 10) <= 2 * (prompt + 10)
        local.run(dataclasses.replace(requests[0], cancel=threading.Event()))  # the turn is cached
        local.stats.peak_batch = 0
        _submit_all(local, requests)
        peaks[share] = local.stats.peak_batch
    assert peaks == {True: 4, False: 2}


@pytest.mark.parametrize("load", ["fp32", "bf16"])
def test_mixed_step_prefills_last_pieces_with_the_decoding_rows(tiny_model_dir, load):
    """Decoding rows (own cache, shared prefix) and joining rows' last pieces (with and without a prefix)
    in one step give the logits each would get alone, within the shared-prefix tolerance."""
    dtype = torch.float32 if load == "fp32" else torch.bfloat16
    model = load_engine(str(tiny_model_dir), torch_dtype=dtype).model
    step = LlamaBatchStep.for_model(model)
    generator = torch.Generator().manual_seed(3)
    prompt, first, question, short = (
        torch.randint(10, 300, (n,), generator=generator).tolist() for n in (120, 30, 20, 7)
    )
    with torch.inference_mode():
        common = new_kv_cache(model)
        single_row_logits(model, "cache", prompt, common)
        prefix = SharedPrefix.from_cache(common, prompt)
        decoding = new_kv_cache(model)
        single_row_logits(model, "cache", first, decoding)
        sharing_whole = copy.deepcopy(common)
        single_row_logits(model, "cache", short, sharing_whole)
        sharing = suffix_cache(sharing_whole, len(prompt), model)
        alone = [copy.deepcopy(decoding), sharing_whole, copy.deepcopy(common), new_kv_cache(model)]
        pieces = [[5], [6], question, short]
        expected = torch.cat(
            [single_row_logits(model, "cache", p, c) for p, c in zip(pieces, alone, strict=True)]
        )
        caches = [decoding, sharing, new_kv_cache(model), new_kv_cache(model)]
        mixed = step.mixed(pieces, caches, [None, prefix, prefix, None])
        assert (mixed - expected).abs().max() <= TOLERANCE[load]
        assert torch.equal(mixed.argmax(-1), expected.argmax(-1))
        assert [c.get_seq_length() for c in caches] == [31, 8, 20, 7]
        tokens = expected.argmax(-1).tolist()
        after = step(tokens, caches, [None, prefix, prefix, None])
        solo = torch.cat(
            [single_row_logits(model, "cache", [t], c) for t, c in zip(tokens, alone, strict=True)]
        )
        assert (after - solo).abs().max() <= TOLERANCE[load]
