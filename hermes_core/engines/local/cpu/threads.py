"""Run torch work that sets a model up on a thread that then ends, so generation has the CPU's OpenMP team.

torch's CPU kernels split work with OpenMP, and GNU OpenMP (the runtime torch ships) keeps one thread
team per thread that ever ran a parallel region, for as long as that thread lives. Once the teams
alive hold more threads than the CPU has (a loading thread's and the scheduler's, each with
``torch.get_num_threads()`` threads, on a machine where that is every CPU), the runtime stops letting
idle team threads spin and puts them to sleep between regions, so every parallel kernel pays a wake-up:
measured here (2 CPUs), the int4 matmul of a decode step went from 26 to 65 us and the embedded
model's decode from 111 to 65 tokens/s (``benchmarks/bench_openmp_teams.py``). Loading on a thread of
its own, which exits with its team, leaves the scheduler thread's team as the only one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def on_fresh_thread(function: Callable[..., T], *args: Any, name: str = "hermes-load", **kwargs: Any) -> T:
    """``function(*args, **kwargs)`` run on a new thread that ends with it; its result, or its exception re-raised."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append((True, function(*args, **kwargs)))
        except BaseException as exc:  # handed to the caller, whatever it is
            outcome.append((False, exc))

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    thread.join()
    succeeded, value = outcome[0]
    if not succeeded:
        raise value
    return value
