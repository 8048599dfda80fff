"""Stopping background tasks for sure.

On Python 3.11 a library that awaits `asyncio.wait_for` inside a task (redis-py does, for its
socket timeout) can swallow the task's cancellation: the task goes on as if nothing happened
and whoever awaits it waits forever (seen in bench/soak.py: a deposed leader kept reading the
slot beside the new one). So: cancel again until the task has really ended.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import Any

RETRY_SECONDS = 0.2


async def cancel_and_wait(task: asyncio.Future[Any]) -> None:
    """Cancel `task` (repeatedly, if it swallows the cancellation) and wait until it ends."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=RETRY_SECONDS)
    with contextlib.suppress(asyncio.CancelledError, Exception):
        task.result()


class BackgroundTasks:
    """Tasks that run beside their owner and end with it: each is kept until it finishes
    (the event loop holds only weak references), and `close` stops the ones left."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Future[Any]] = set()

    def spawn(self, work: Awaitable[Any], *, name: str | None = None) -> asyncio.Future[Any]:
        """Run `work` in the background; the task is returned, and forgotten once done."""
        task = asyncio.ensure_future(work)
        if name is not None and isinstance(task, asyncio.Task):
            task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def close(self) -> None:
        """Cancel every task still running and wait until each has ended."""
        for task in list(self._tasks):
            await cancel_and_wait(task)
