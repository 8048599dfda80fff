"""Rate limits that socket workers count in the main process (the embedded default's Redis).

A socket's own limit lives with the socket, in its worker. A user's and a client address's
limits must add up over every process the user's sockets reach, as Redis makes them add up
over instances: a worker's limiter for those uses `BusLimitStorage`, which asks the main
process to run each storage call on its own storage (`LimitCalls`), where the main process's
limiters count too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from limits.aio.storage import MovingWindowSupport, Storage

from livedash.cluster.local_bus import Message, reply

LIMIT = "limit"
"""The kind of a bus request that runs one storage call in the main process."""

_OPERATIONS = ("incr", "get", "get_expiry", "clear", "reset", "acquire_entry", "get_moving_window")

Call = Callable[..., Awaitable[Any]]


class BusLimitStorage(Storage, MovingWindowSupport):
    """A `limits` storage whose calls run in the main process."""

    STORAGE_SCHEME = ["async+livedash-bus"]  # noqa: RUF012 (limits' own attribute)

    def __init__(self, call: Call) -> None:
        """`call(kind, **fields)` sends a bus request and returns its result."""
        super().__init__(None)
        self._call = call

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return ConnectionError

    async def _run(self, operation: str, *arguments: Any) -> Any:
        return await self._call(LIMIT, op=operation, args=list(arguments))

    async def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        return int(await self._run("incr", key, expiry, amount))

    async def get(self, key: str) -> int:
        return int(await self._run("get", key))

    async def get_expiry(self, key: str) -> float:
        return float(await self._run("get_expiry", key))

    async def check(self) -> bool:
        return True

    async def reset(self) -> int | None:
        result = await self._run("reset")
        return int(result) if result is not None else None

    async def clear(self, key: str) -> None:
        await self._run("clear", key)

    async def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        return bool(await self._run("acquire_entry", key, limit, expiry, amount))

    async def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        start, count = await self._run("get_moving_window", key, limit, expiry)
        return float(start), int(count)


class LimitCalls:
    """The main process's side: runs workers' storage calls on `storage`."""

    def __init__(self, storage: Storage) -> None:
        self._storage = storage

    async def answer(self, request: Message) -> Message:
        """The reply to one `LIMIT` request."""
        operation, arguments = request.get("op"), request.get("args")
        if operation not in _OPERATIONS or not isinstance(arguments, list):
            return reply(request, error=f"not a storage call: {operation!r}")
        result = await getattr(self._storage, str(operation))(*arguments)
        return reply(request, list(result) if isinstance(result, tuple) else result)
