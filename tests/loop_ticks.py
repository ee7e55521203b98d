"""How often the event loop got control back while some async work ran: the tests' proof it never blocks."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def ticks_while(awaitable: Awaitable[T]) -> tuple[T, int]:
    """Run ``awaitable`` as a task and count how often the loop got control back meanwhile."""
    task = asyncio.ensure_future(awaitable)
    ticks = 0
    while not task.done():
        ticks += 1
        await asyncio.sleep(0.001)
    return task.result(), ticks
