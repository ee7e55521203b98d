"""A request joining a running batch prefills piece by piece between decode steps; the batch keeps decoding."""

from __future__ import annotations

import dataclasses
import itertools
import threading

import pytest
import torch

from hermes_core import load_engine
from hermes_core.engines.base import GenerationRequest
from hermes_core.engines.local.engine import piece_ends
from hermes_core.engines.local.scheduler import Submission


def test_pieces_cut_each_turn_chunk_from_its_start():
    assert piece_ends(0, [10, 20], 25, 4) == [4, 8, 10, 14, 18, 20, 24, 25]
    # reuse ends at a chunk start: the remaining pieces are the ones a cold prefill runs
    assert piece_ends(10, [10, 20], 25, 4) == [14, 18, 20, 24, 25]
    assert piece_ends(0, [10, 20], 25, None) == [10, 20, 25]
    assert piece_ends(0, [], 7, 512) == [7]


def _request(length: int, new: int, seed: int) -> GenerationRequest:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(10, 300, (length,), generator=generator).tolist()
    return GenerationRequest(prompt_ids=ids, max_new_tokens=new, stop_token_ids=[0])


def test_a_long_prompt_joins_without_pausing_the_running_request(tiny_model_dir):
    engine = load_engine(str(tiny_model_dir), torch_dtype=torch.float32, prefill_chunk_tokens=16)
    local = engine.engine
    running, joiner = _request(10, 40, 1), _request(200, 8, 2)  # 200 tokens: 13 pieces of at most 16
    local.stats.peak_batch = 0
    solo = [local.run(dataclasses.replace(r, cancel=threading.Event())).token_ids for r in (running, joiner)]
    events: list[str] = []
    original = local._prefill_piece

    def piece(ids, cache, last):
        events.append(f"piece {len(ids)}")
        return original(ids, cache, last)

    local._prefill_piece = piece
    second = Submission(dataclasses.replace(joiner, cancel=threading.Event()), lambda t: events.append("B"))

    def on_running_token(token: int) -> None:
        events.append("A")
        if events.count("A") == 3:  # the first request decodes: now the long one arrives
            local.scheduler.submit(second)

    first = Submission(dataclasses.replace(running, cancel=threading.Event()), on_running_token)
    local.scheduler.submit(first)
    assert first.done.wait(60) and second.done.wait(60)
    del local._prefill_piece
    assert first.final.token_ids == solo[0] and second.final.token_ids == solo[1]
    joining = events[events.index("A", events.index("A", events.index("A") + 1) + 1) + 1 :]
    pieces = [i for i, event in enumerate(joining) if event.startswith("piece")]
    # 12 pieces of 16 run alone; the 13th (8 tokens) goes with a decode step of the running request
    assert len(pieces) == 12 and all(joining[i] == "piece 16" for i in pieces)
    assert local.stats.peak_batch == 2
    # a token of the running request between every two pieces of the joining one
    assert all("A" in joining[a:b] for a, b in itertools.pairwise(pieces))


def test_bad_prefill_chunk_tokens_fails_at_construction(tiny_model_dir):
    with pytest.raises(ValueError, match="prefill_chunk_tokens must be a positive integer"):
        load_engine(str(tiny_model_dir), prefill_chunk_tokens=0)
