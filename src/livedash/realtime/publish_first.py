"""Other processes first: a pub/sub manager that publishes an emit before serving its own
sockets.

python-socketio's pub/sub managers write an update to every local socket of a room and only
then publish it, so the other instances' (or socket workers') clients wait for the whole local
fan-out (measured with bench/latency.py at 1,000 clients: 109-262 ms more at p50 on followers).
Here the message is published first and the local sockets are served while it travels.
"""

from __future__ import annotations

import contextvars
from typing import Any

_DEFERRED: contextvars.ContextVar[list[Any] | None] = contextvars.ContextVar(
    "livedash_deferred_local_emit", default=None
)


class PublishFirst:
    """Mixed in before a `socketio.AsyncPubSubManager`: its emits publish, then go local."""

    async def emit(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("ignore_queue") or kwargs.get("callback") is not None:
            return await super().emit(*args, **kwargs)  # type: ignore[misc]
        deferred: list[Any] = []
        token = _DEFERRED.set(deferred)
        try:
            await super().emit(*args, **kwargs)  # type: ignore[misc]  # publishes; local held
        finally:
            _DEFERRED.reset(token)
        for message in deferred:
            await super()._handle_emit(message)  # type: ignore[misc]

    async def _handle_emit(self, message: Any) -> None:
        deferred = _DEFERRED.get()
        if deferred is not None:
            deferred.append(message)
            return
        await super()._handle_emit(message)  # type: ignore[misc]
