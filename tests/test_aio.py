"""Stopping a background task that swallows its cancellation (as redis-py can on 3.11)."""

from __future__ import annotations

import asyncio

from livedash.aio import cancel_and_wait


async def test_a_task_that_swallows_a_cancellation_is_still_stopped() -> None:
    swallowed = asyncio.Event()

    async def stubborn() -> None:
        while True:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                if swallowed.is_set():
                    raise
                swallowed.set()  # the first cancellation is lost, as in the bug

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    async with asyncio.timeout(5):
        await cancel_and_wait(task)
    assert swallowed.is_set()
    assert task.cancelled()
