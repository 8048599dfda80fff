"""Reading again until a condition holds, for figures that move with nothing to await: a
counter Prometheus scrapes, the figures socket workers report each second."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

WAIT_SECONDS = 15.0


async def read_until(
    read: Callable[[], Awaitable[T]],
    condition: Callable[[T], bool],
    *,
    what: str,
    every: float,
    within: float = WAIT_SECONDS,
) -> T:
    """`read()` every `every` seconds until `condition` holds; the failure names `what` and
    shows the last read."""
    last: T | None = None
    try:
        async with asyncio.timeout(within):
            while True:
                last = await read()
                if condition(last):
                    return last
                await asyncio.sleep(every)
    except TimeoutError:
        raise AssertionError(f"{what} never met the condition; last:\n{last}") from None
