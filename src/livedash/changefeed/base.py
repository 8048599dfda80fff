"""The change-feed contract, shared by every backend.

A source delivers `Change`s in commit order, in batches, starting after the position its
consumer last confirmed. A consumer confirms a position only once it has applied everything
up to it; after a restart the source resumes right after the confirmed position, so nothing is
skipped. Delivery is at-least-once across crashes: consumers skip positions they already hold.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncConnection

from livedash.errors import ConfigurationError

Row = Mapping[str, Any]
Writer = Callable[[AsyncConnection], Awaitable[None]]


class Op(enum.StrEnum):
    INSERT = "insert"
    UPDATE = "update"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class Change:
    """One committed row change, decoded to Python values, whatever wrote it."""

    position: int
    table: str
    op: Op
    old: Row | None
    new: Row | None
    committed_at: datetime
    transaction: int = 0  # the writer's transaction id, where the backend has one


class ChangeSource(Protocol):
    """What the metric engine needs from a change feed."""

    async def __aenter__(self) -> ChangeSource: ...

    async def __aexit__(self, *exc_info: object) -> None: ...

    def batches(self) -> AsyncIterator[list[Change]]:
        """Batches of changes after the confirmed position, waiting for new ones when idle."""
        ...

    async def confirm(self, position: int, also: Writer | None = None) -> None:
        """Store durably that every change up to `position` has been applied.

        `also` writes in the same transaction, so state derived from the changes (the
        roll-ups) is stored exactly as of the stored position.
        """
        ...

    async def confirmed_position(self) -> int:
        """The last position stored by `confirm` (0 before the first)."""
        ...

    async def position_in(self, connection: AsyncConnection) -> int:
        """The feed position that the read transaction on `connection` has seen up to.

        Called first in the start-up count's transaction, before it reads a row.
        """
        ...

    def start_settled(self) -> bool:
        """No change that the start-up count holds can be delivered any more.

        Until then a position is not stored for state built from the rows (the roll-ups on
        a first start): after a crash it would replay those changes without the filter.
        """
        ...

    def counted_at_start(self, change: Change) -> bool:
        """The start-up count already contains `change`, although it comes after the position.

        Where visibility is not a prefix of the feed (PostgreSQL), a few changes after the
        position were already in the snapshot; they must not be counted twice.
        """
        ...


def open_change_source(database_url: str, consumer: str, **options: Any) -> ChangeSource:
    """The change source for `database_url`'s backend; imported only when used."""
    backend = make_url(database_url).get_backend_name()
    if backend == "sqlite":
        from livedash.changefeed.sqlite import SqliteChangeFeed

        return SqliteChangeFeed(database_url, consumer, **options)
    if backend == "postgresql":
        from livedash.changefeed.postgres import PostgresChangeFeed

        return PostgresChangeFeed(database_url, consumer, **options)
    raise ConfigurationError(f"no change feed for the {backend!r} backend")
