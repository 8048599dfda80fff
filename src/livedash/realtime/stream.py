"""The update stream: every `dashboard_update` sent gets a position (epoch, offset).

A bounded history of sent updates lets a client that reconnects name the last position it saw
and receive exactly what it missed (Centrifugo's model). The history is an in-memory ring on
the embedded default and a Redis Stream in a deployment, so any instance can replay what the
leader sent. Offsets grow by one per update within an epoch; a new epoch starts whenever the
history may have lost entries (a restart of the embedded service, Redis restarted or
unreachable while updates were sent), and a client from an older epoch gets a fresh snapshot.
"""

from __future__ import annotations

import json
import secrets
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from redis.asyncio import Redis

from livedash.cluster.shared_redis import text
from livedash.observability.breaker import CircuitBreaker

Payload = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Position:
    epoch: str
    offset: int

    def as_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "offset": self.offset}


@dataclass(frozen=True, slots=True)
class Entry:
    offset: int
    payload: Payload
    added_at: float  # wall clock, seconds


def new_epoch() -> str:
    return secrets.token_hex(6)


class UpdateHistory(Protocol):
    """Where sent updates are kept for recovery."""

    def rotate(self) -> None:
        """Start a new epoch with the next append (entries may have been lost)."""
        ...

    async def append(self, payloads: Sequence[Payload]) -> list[Position]:
        """Give each payload the next position and keep it; in order."""
        ...

    async def top(self) -> Position:
        """The position of the last update sent (offset 0 before the first)."""
        ...

    async def since(self, position: Position) -> list[Entry] | None:
        """Every kept update after `position`, or None if the history cannot tell (another
        epoch, or entries after `position` already dropped for size or age)."""
        ...


class MemoryHistory:
    """A ring of the last `size` updates, at most `max_age` seconds old (one process)."""

    def __init__(
        self, size: int, max_age: float, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.epoch = new_epoch()
        self._entries: deque[Entry] = deque(maxlen=size)
        self._offset = 0
        self._max_age = max_age
        self._clock = clock
        self.on_append: Callable[[str, list[Entry]], None] | None = None
        """Hears each batch as it is kept, with the epoch (the bus to socket workers)."""

    def rotate(self) -> None:
        """A new epoch now: what this process sent before may not be what it holds."""
        self.epoch = new_epoch()
        self._entries.clear()
        self._offset = 0

    async def append(self, payloads: Sequence[Payload]) -> list[Position]:
        now = self._clock()
        entries = []
        for payload in payloads:
            self._offset += 1
            entries.append(Entry(self._offset, payload, now))
        self._entries.extend(entries)
        if self.on_append is not None:
            self.on_append(self.epoch, entries)
        return [Position(self.epoch, entry.offset) for entry in entries]

    def kept(self) -> list[Entry]:
        """Every entry held now, oldest first."""
        return list(self._entries)

    async def top(self) -> Position:
        return Position(self.epoch, self._offset)

    async def since(self, position: Position) -> list[Entry] | None:
        return covered(self.epoch, self._offset, list(self._entries), position, self._window())

    def _window(self) -> float:
        return self._clock() - self._max_age


class MirroredHistory(MemoryHistory):
    """A socket worker's copy of the primary's history, with the primary's positions: a
    client recovers the same way whichever process it reaches."""

    def adopt(self, epoch: str, entries: Sequence[Entry]) -> None:
        """Keep the primary's `entries` (a new `epoch` drops what was kept before)."""
        if epoch != self.epoch:
            self.epoch = epoch
            self._entries.clear()
            self._offset = 0
        for entry in entries:
            if entry.offset > self._offset:
                self._entries.append(entry)
                self._offset = entry.offset

    async def append(self, payloads: Sequence[Payload]) -> list[Position]:
        raise RuntimeError("a socket worker's history is the primary's: it never appends")


HISTORY = "history"
"""The kind of a bus message that carries history entries."""


def entries_message(epoch: str, entries: Sequence[Entry]) -> dict[str, Any]:
    """History entries as the bus carries them."""
    rows = [[entry.offset, entry.payload, entry.added_at] for entry in entries]
    return {"t": HISTORY, "epoch": epoch, "entries": rows}


def adopt_message(history: MirroredHistory, message: dict[str, Any]) -> None:
    """Keep the entries of a bus message made by `entries_message`."""
    rows = message["entries"]
    history.adopt(str(message["epoch"]), [Entry(int(o), p, float(t)) for o, p, t in rows])


def covered(
    epoch: str, top: int, entries: list[Entry], position: Position, oldest_allowed: float
) -> list[Entry] | None:
    """The entries after `position` if `entries` hold all of them, else None."""
    if position.epoch != epoch or position.offset > top or position.offset < 0:
        return None
    if position.offset == top:
        return []
    after = [entry for entry in entries if entry.offset > position.offset]
    if not after or after[0].offset != position.offset + 1:
        return None  # the first missed update was already dropped
    if after[0].added_at < oldest_allowed:
        return None  # older than the history is meant to keep
    return after


# Appends a batch atomically: rotates the epoch when asked (or when it was lost with Redis's
# data), numbers the entries, trims to the size, and keeps the keys no longer than the age.
_APPEND = """
local epoch = redis.call('GET', KEYS[1])
if (not epoch) or ARGV[1] == '1' then
  epoch = ARGV[2]
  redis.call('SET', KEYS[1], epoch)
  redis.call('SET', KEYS[2], 0)
  redis.call('DEL', KEYS[3])
end
local first = redis.call('INCRBY', KEYS[2], #ARGV - 5) - (#ARGV - 5) + 1
for i = 6, #ARGV do
  local id = (first + i - 6) .. '-1'
  redis.call('XADD', KEYS[3], 'MAXLEN', ARGV[3], id, 'p', ARGV[i], 't', ARGV[5])
end
for k = 1, 3 do redis.call('EXPIRE', KEYS[k], ARGV[4]) end
return {epoch, first}
"""


class RedisHistory:
    """The history as a Redis Stream shared by every instance (the leader appends)."""

    def __init__(
        self,
        redis: Redis,
        size: int,
        max_age: float,
        *,
        prefix: str = "livedash:",
        breaker: CircuitBreaker | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self._clock = clock
        self._size = size
        self._max_age = max_age
        self._keys = [f"{prefix}stream:epoch", f"{prefix}stream:offset", f"{prefix}stream"]
        self._append = redis.register_script(_APPEND)
        self._rotate = True  # a new leader starts a new epoch: it cannot vouch for the old one
        self._breaker = breaker

    def rotate(self) -> None:
        """Start a new epoch with the next append (entries may have been lost)."""
        self._rotate = True

    async def append(self, payloads: Sequence[Payload]) -> list[Position]:
        if not payloads:
            return []
        encoded = [json.dumps(payload, separators=(",", ":")) for payload in payloads]
        if self._breaker is not None and not self._breaker.allow():
            self._rotate = True
            raise ConnectionError("Redis is down (circuit open)")
        try:
            epoch, first = await self._append(
                keys=self._keys,
                args=[
                    "1" if self._rotate else "0",
                    new_epoch(),
                    self._size,
                    max(int(self._max_age) * 2, 1),
                    repr(self._clock()),
                    *encoded,
                ],
            )
        except Exception as error:
            self._rotate = True  # what was sent meanwhile is not in the history
            if self._breaker is not None:
                self._breaker.trip(error)  # sent without a position: recovery must resync
            raise
        self._rotate = False
        if self._breaker is not None:
            self._breaker.success()
        epoch = text(epoch)
        return [Position(epoch, int(first) + index) for index in range(len(payloads))]

    async def top(self) -> Position:
        epoch, offset = await self._redis.mget(self._keys[:2])
        if epoch is None:
            return Position("", 0)
        return Position(text(epoch), int(offset or 0))

    async def since(self, position: Position) -> list[Entry] | None:
        top = await self.top()
        if position.epoch != top.epoch or position.offset >= top.offset:
            return covered(top.epoch, top.offset, [], position, 0.0)
        raw: Any = await self._redis.xrange(
            self._keys[2], min=f"{position.offset + 1}-0", count=self._size
        )
        entries = [_entry(entry_id, fields) for entry_id, fields in raw or []]
        # The epoch may have rotated between the two reads: then the offsets do not match.
        return covered(top.epoch, top.offset, entries, position, self._clock() - self._max_age)


def _entry(entry_id: Any, fields: Any) -> Entry:
    decoded = {text(key): text(value) for key, value in dict(fields).items()}
    return Entry(int(text(entry_id).split("-")[0]), json.loads(decoded["p"]), float(decoded["t"]))
