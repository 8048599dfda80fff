"""A connection's packet queue, with `asyncio.Queue`'s interface and a fraction of its memory.

python-engineio keeps a queue of packets to send per socket. An `asyncio.Queue` allocates
three deques and an `Event` (a fourth deque) up front, each with a 64-slot block: 3 KB of an
idle socket's 35 KB (tracemalloc over bench/idle_sockets.py). This queue is nearly always empty
and has one consumer, so here items and waiters live in lists made when first needed. uvicorn's
queue of received events, per WebSocket, is one too (realtime/frames.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Generic, TypeVar

T = TypeVar("T")


class LeanQueue(Generic[T]):
    """An unbounded FIFO queue: the part of `asyncio.Queue` that its two users call."""

    __slots__ = ("_getters", "_items", "_joiners", "_unfinished_tasks")

    def __init__(self) -> None:
        self._items: list[T] | None = None
        self._getters: list[asyncio.Future[None]] | None = None
        self._joiners: list[asyncio.Future[None]] | None = None
        # asyncio.Queue's name: livedash.realtime.frames reads it to tell packets in flight.
        self._unfinished_tasks = 0

    def qsize(self) -> int:
        return len(self._items) if self._items else 0

    def empty(self) -> bool:
        return not self._items

    def full(self) -> bool:
        return False

    def put_nowait(self, item: T) -> None:
        if self._items is None:
            self._items = []
        self._items.append(item)
        self._unfinished_tasks += 1
        self._wake_getter()

    async def put(self, item: T) -> None:
        self.put_nowait(item)

    def get_nowait(self) -> T:
        if not self._items:
            raise asyncio.QueueEmpty
        return self._take()

    async def get(self) -> T:
        while not self._items:
            getter = asyncio.get_running_loop().create_future()
            if self._getters is None:
                self._getters = []
            self._getters.append(getter)
            try:
                await getter
            except BaseException:
                getter.cancel()
                with contextlib.suppress(ValueError):
                    self._getters.remove(getter)
                if self._items and not getter.cancelled():
                    self._wake_getter()  # woken, then cancelled: the item is someone else's
                raise
        return self._take()

    def _take(self) -> T:
        assert self._items  # callers checked
        item = self._items.pop(0)
        if not self._items:
            self._items = None  # an idle socket keeps no list
        return item

    def task_done(self) -> None:
        if self._unfinished_tasks <= 0:
            raise ValueError("task_done() called too many times")
        self._unfinished_tasks -= 1
        if self._unfinished_tasks == 0 and self._joiners:
            joiners, self._joiners = self._joiners, None
            for joiner in joiners:
                if not joiner.done():
                    joiner.set_result(None)

    async def join(self) -> None:
        while self._unfinished_tasks:
            joiner = asyncio.get_running_loop().create_future()
            if self._joiners is None:
                self._joiners = []
            self._joiners.append(joiner)
            await joiner

    def _wake_getter(self) -> None:
        while self._getters:
            getter = self._getters.pop(0)
            if not getter.done():
                getter.set_result(None)
                return
