"""Why a value changed: the last updates of each (metric, department), with the rows behind them.

Where the feed is read, the engine notes, for each counter family and department a batch
touched, which changes touched it (`MetricEngine.apply`, at the cost of one lookup per counter
it moves). When it then publishes a value, it records a cause: the value before and after, its
version (as `dashboard_update` carried it), and the last few of those changes that touched the
metric's input families in that department, each as a `Note` (no row content). A new day and
the historical tier's refresh are causes too, without rows. The log keeps the newest
`CAUSES_KEPT` causes per key. A leader's log starts empty: in a cluster, it answers with its
predecessors' causes too, from Redis (`newest`).

A change is named by its table, operation, row id, commit time and department code, and by
nothing else of the row: no name or other content ever reaches a cause.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable
from datetime import datetime
from typing import Any, NamedTuple, Protocol

from livedash.metrics.definitions import Value

CAUSES_KEPT = 10
"""Causes kept per (metric, department): the newest ones."""
CHANGES_PER_CAUSE = 5
"""Row changes listed in one cause: the last ones of its batch."""

CauseKey = tuple[str, str | None]
"""A metric and a department code (None: the hospital-wide totals)."""


class Published(Protocol):
    """A published value, as far as its cause is concerned (`MetricValue`)."""

    @property
    def metric(self) -> str: ...

    @property
    def department(self) -> str | None: ...

    @property
    def version(self) -> int: ...


class Reason(enum.StrEnum):
    """What moved a value."""

    ROWS = "rows"
    """Row changes from the feed (listed)."""
    NEW_DAY = "new_day"
    """Midnight in the hospital's time zone: the day-scoped figures started over."""
    ROLL_UPS = "roll_ups"
    """The historical tier's figures, recomputed from the hourly roll-ups."""


class RowChange(NamedTuple):
    """One row change behind a value: where and when, never what the row holds."""

    table: str
    op: str
    row_id: int | str | None
    committed_at: datetime
    department: str | None


Note = tuple[int, str, str, Any, datetime, str | None]
"""A change as a cause keeps it, made once per batch for the changes causes list: its
position, table, operation, row id, commit time and the row's department code (a plain tuple:
the cheapest record Python makes; `RowChange`s are made from it when a cause is read)."""


class Cause(NamedTuple):
    """One published value of a metric for a department, and what moved it."""

    metric: str
    department: str | None
    version: int
    at: datetime
    before: Value
    after: Value
    reason: Reason
    changes: tuple[RowChange, ...] = ()
    more_changes: bool = False
    """More changes of its batch touched the value than `changes` lists."""


Entry = tuple[int, datetime, Value, Value, Reason, tuple[Note, ...], bool]
"""A cause as the log keeps it under its key: version, at, before, after, reason, the notes of
its changes and more_changes."""


class CauseLog:
    """The newest causes of each (metric, department), in memory."""

    def __init__(self, kept: int = CAUSES_KEPT) -> None:
        self._kept = kept
        self._rings: dict[CauseKey, deque[Entry]] = {}

    def record(self, key: CauseKey, entry: Entry) -> None:
        """Keep a cause of `key`, dropping its oldest beyond the bound."""
        ring = self._rings.get(key)
        if ring is None:
            ring = self._rings[key] = deque(maxlen=self._kept)
        ring.append(entry)

    def recent(self, metric: str, department: str | None) -> list[Cause]:
        """The causes kept for a key, newest first."""
        ring = self._rings.get((metric, department), ())
        return [_cause(metric, department, entry) for entry in reversed(ring)]

    def every(self) -> list[Cause]:
        """Every cause kept, of every key, oldest first within a key."""
        return [
            _cause(metric, department, entry)
            for (metric, department), ring in self._rings.items()
            for entry in ring
        ]

    def of(self, values: Iterable[Published]) -> list[Cause]:
        """The causes recorded for these published values (those that have one)."""
        found = []
        for value in values:
            ring = self._rings.get((value.metric, value.department), ())
            for entry in reversed(ring):  # the newest, unless published twice in a batch
                if entry[0] == value.version:
                    found.append(_cause(value.metric, value.department, entry))
                    break
        return found


def newest(*logs: Iterable[Cause], kept: int = CAUSES_KEPT) -> list[Cause]:
    """The newest `kept` causes of one key from several logs, each version once, newest
    first (a version in more than one log: the last log's)."""
    unique = {cause.version: cause for log in logs for cause in log}
    return [unique[version] for version in sorted(unique, reverse=True)[:kept]]


def _cause(metric: str, department: str | None, entry: Entry) -> Cause:
    version, at, before, after, reason, notes, more = entry
    rows = tuple(
        RowChange(
            table,
            str(op),
            row_id if isinstance(row_id, int | str) else None,
            committed_at,
            # A department's value was moved in that department, even by a row that moved
            # out of it; a hospital-wide one names the row's own.
            department if department is not None else code,
        )
        for _, table, op, row_id, committed_at, code in notes
    )
    return Cause(metric, department, version, at, before, after, reason, rows, more)
