"""LeanQueue behaves as asyncio.Queue does for its users: python-engineio and uvicorn."""

from __future__ import annotations

import asyncio

import pytest

from livedash.realtime.lean_queue import LeanQueue


async def test_items_leave_in_order_and_a_waiting_get_is_woken_by_a_put() -> None:
    queue: LeanQueue[int] = LeanQueue()
    assert queue.empty()
    assert queue.qsize() == 0
    assert not queue.full()
    waiting = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    assert not waiting.done()
    queue.put_nowait(1)
    await queue.put(2)
    assert await waiting == 1
    assert queue.qsize() == 1
    assert queue.get_nowait() == 2
    with pytest.raises(asyncio.QueueEmpty):
        queue.get_nowait()


async def test_a_get_cancelled_under_a_timeout_loses_no_item() -> None:
    # python-engineio's long-poll waits under asyncio.wait_for.
    queue: LeanQueue[str] = LeanQueue()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(queue.get(), 0.01)
    first = asyncio.ensure_future(queue.get())
    second = asyncio.ensure_future(queue.get())
    await asyncio.sleep(0)
    queue.put_nowait("packet")
    first.cancel()  # woken for the item, then cancelled before it ran: the item passes on
    assert await second == "packet"
    assert first.cancelled()
    assert queue.empty()


async def test_join_waits_for_every_item_to_be_done() -> None:
    queue: LeanQueue[int] = LeanQueue()
    await queue.join()  # nothing unfinished
    queue.put_nowait(1)
    queue.put_nowait(2)
    joined = asyncio.ensure_future(queue.join())
    queue.get_nowait()
    queue.task_done()
    await asyncio.sleep(0)
    assert not joined.done()
    assert queue._unfinished_tasks == 1  # what realtime/frames.py reads
    queue.get_nowait()
    queue.task_done()
    await asyncio.wait_for(joined, 1)
    with pytest.raises(ValueError, match="too many times"):
        queue.task_done()
