"""Stopping background tasks for sure.

On Python 3.11 a library that awaits `asyncio.wait_for` inside a task (redis-py does, for its
socket timeout) can swallow the task's cancellation: the task goes on as if nothing happened
and whoever awaits it waits forever (seen in bench/soak.py: a deposed leader kept reading the
slot beside the new one). So: cancel again until the task has really ended.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

RETRY_SECONDS = 0.2


async def cancel_and_wait(task: asyncio.Future[Any]) -> None:
    """Cancel `task` (repeatedly, if it swallows the cancellation) and wait until it ends."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=RETRY_SECONDS)
    with contextlib.suppress(asyncio.CancelledError, Exception):
        task.result()
