"""The incremental metric engine.

State is a set of counters, each the number of current rows that contribute to it. A change
subtracts the contributions of its old row and adds those of its new row, so after any
sequence of inserts, updates and deletes the counters equal a full recount, and each change
costs O(1) per affected metric. The engine never reads the database itself: `load` takes
rows at start-up and `apply` takes changes afterwards, through the very same code path.

Beds are counted per room as well, and reach a department through their room; when a room
appears, moves or disappears, its beds' counts move with it, so write order does not matter.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from livedash.changefeed.base import Change, Row
from livedash.metrics.clock import Clock
from livedash.metrics.contributions import CONTRIBUTIONS, Contribution
from livedash.metrics.definitions import (
    DAILY_METRICS,
    FAMILY_METRICS,
    METRIC_NAMES,
    METRICS,
    Key,
    Scope,
    SystemStatus,
    Value,
)
from livedash.store.models import BedStatus
from livedash.timeutil import local_date

HOSPITAL: None = None
"""The department key of hospital-wide values."""

DepartmentId = int | None
MetricKey = tuple[str, DepartmentId]


@dataclass(frozen=True, slots=True)
class MetricValue:
    """A metric's current value for one department (`None`: the whole hospital)."""

    metric: str
    department: str | None
    value: Value
    version: int
    timestamp: datetime
    department_id: int | None = None


COUNTED_TABLES = ("departments", "rooms", "beds", *CONTRIBUTIONS)
"""Every table the engine counts; departments and rooms first only make start-up cheaper."""

_METRIC_ORDER = {name: index for index, name in enumerate(METRIC_NAMES)}


class MetricEngine:
    """Counters for every metric, kept current one change at a time."""

    def __init__(self, zone: ZoneInfo, clock: Clock, *, version_floor: int = 0) -> None:
        self._zone = zone
        self._clock = clock
        self._counters: Counter[Key] = Counter()
        self._room_beds: dict[int, Counter[str]] = {}
        self._room_department: dict[int, DepartmentId] = {}
        self._departments: dict[int, str] = {}
        self._published: dict[MetricKey, MetricValue] = {}
        # Seeded from the wall clock so that a restarted engine continues above the versions
        # its predecessor sent (or above `version_floor`, the highest any instance has sent);
        # strictly increasing from there.
        self._version = max(time.time_ns() // 1000, version_floor)
        self._today = self._local_today()
        self.position = 0
        self._appliers: dict[str, Callable[[Row | None, Row | None], None]] = {
            "departments": self._apply_department,
            "rooms": self._apply_room,
            "beds": self._apply_bed,
        }
        self._touched: set[tuple[str, DepartmentId]] = set()
        self._system = SystemStatus()
        self._historical: dict[MetricKey, Value] = {}

    # -- reading -------------------------------------------------------------------------

    @property
    def zone(self) -> ZoneInfo:
        """The hospital's time zone."""
        return self._zone

    @property
    def system(self) -> SystemStatus:
        """The service's own health as last recorded."""
        return self._system

    def now(self) -> datetime:
        """The engine's clock (aware UTC)."""
        return self._clock.now()

    @property
    def departments(self) -> dict[int, str]:
        """Known departments, id to code."""
        return dict(self._departments)

    def department_codes(self) -> set[str]:
        """Codes of every known department."""
        return set(self._departments.values())

    def snapshot(
        self, metrics: Iterable[str] | None = None, departments: Iterable[str | None] | None = None
    ) -> list[MetricValue]:
        """Current values, optionally only of some metrics and departments."""
        wanted_metrics = set(metrics) if metrics is not None else None
        wanted_departments = set(departments) if departments is not None else None
        return [
            value
            for value in self._published.values()
            if (wanted_metrics is None or value.metric in wanted_metrics)
            and (wanted_departments is None or value.department in wanted_departments)
        ]

    def value(self, metric: str, department: str | None = None) -> Value:
        """One metric's current value, by department code (`None`: hospital-wide)."""
        department_id = self.department_id(department)
        return self._evaluate(metric, department_id)

    # -- writing -------------------------------------------------------------------------

    def load(self, table: str, row: Row) -> None:
        """Count an existing row at start-up (nothing is published until `finish_loading`)."""
        self._dispatch(table, None, row)

    def finish_loading(self, position: int) -> list[MetricValue]:
        """End start-up at feed `position`: publish every value once."""
        self.position = position
        self._touched.clear()
        self._today = self._local_today()
        keys = [(metric, department) for metric in METRIC_NAMES for department in self._scopes()]
        return self._publish(keys)

    def apply(self, changes: Iterable[Change]) -> list[MetricValue]:
        """Apply changes after the engine's position; return the values that changed."""
        updates = self.refresh_time()
        for change in changes:
            if change.position <= self.position:
                continue  # already counted: delivered again after a restart
            self._dispatch(change.table, change.old, change.new)
            self.position = change.position
        touched, self._touched = self._touched, set()
        keys = {
            (metric, department)
            for family, department in touched
            for metric in FAMILY_METRICS.get(family, ())
            if department is HOSPITAL or department in self._departments
        }
        return updates + self._publish(sorted(keys, key=_sort_key))

    def refresh_time(self) -> list[MetricValue]:
        """After midnight (hospital time), publish the day-scoped values for the new day."""
        today = self._local_today()
        if today == self._today:
            return []
        self._today = today
        keys = [(metric, department) for metric in DAILY_METRICS for department in self._scopes()]
        return self._publish(keys)

    def set_historical(self, values: Mapping[MetricKey, Value]) -> list[MetricValue]:
        """Record the historical tier's figures (by metric and department id); publish changes."""
        self._historical.update(values)
        keys = [key for key in values if key[1] is HOSPITAL or key[1] in self._departments]
        return self._publish(sorted(keys, key=_sort_key))

    def set_system(self, status: SystemStatus) -> list[MetricValue]:
        """Record the service's own health; publish what changed, in every scope."""
        if status == self._system:
            return []
        self._system = status
        keys = [
            (metric, department)
            for metric in FAMILY_METRICS["system"]
            for department in self._scopes()
        ]
        return self._publish(keys)

    # -- internals -----------------------------------------------------------------------

    def _local_today(self) -> date:
        return local_date(self._clock.now(), self._zone)

    def _scopes(self) -> list[DepartmentId]:
        return [HOSPITAL, *sorted(self._departments)]

    def department_id(self, code: str | None) -> DepartmentId:
        """The id of a department code (`None`: the hospital); `KeyError` if unknown."""
        if code is None:
            return HOSPITAL
        for department_id, known in self._departments.items():
            if known == code:
                return department_id
        raise KeyError(code)

    def _publish(self, keys: Iterable[MetricKey]) -> list[MetricValue]:
        now = self._clock.now()
        updates: list[MetricValue] = []
        for metric, department in keys:
            value = self._evaluate(metric, department)
            previous = self._published.get((metric, department))
            if previous is not None and previous.value == value:
                continue
            self._version += 1
            published = MetricValue(
                metric=metric,
                department=self._departments.get(department) if department is not None else None,
                value=value,
                version=self._version,
                timestamp=now,
                department_id=department,
            )
            self._published[(metric, department)] = published
            updates.append(published)
        return updates

    def _evaluate(self, metric: str, department: DepartmentId) -> Value:
        scope = Scope(self._counters, department, self._today, self._system, self._historical)
        return METRICS[metric].compute(scope)

    def _dispatch(self, table: str, old: Row | None, new: Row | None) -> None:
        applier = self._appliers.get(table)
        if applier is not None:
            applier(old, new)
            return
        contributions = CONTRIBUTIONS.get(table)
        if contributions is None:
            return
        if old is not None:
            self._add(contributions(old), old.get("department_id"), -1)
        if new is not None:
            self._add(contributions(new), new.get("department_id"), +1)

    def _add(self, contributions: Iterable[Contribution], department: Any, sign: int) -> None:
        for family, amount, detail, at, _series in contributions:
            if family is None:
                continue
            key = (family, *detail) if at is None else (family, local_date(at, self._zone), *detail)
            self._bump(key, HOSPITAL, sign * amount)
            if department is not None:
                self._bump(key, department, sign * amount)

    def _bump(self, key: Key, department: DepartmentId, amount: int) -> None:
        if not amount:
            return
        family, *rest = key
        full = (family, department, *rest)
        self._counters[full] += amount
        if self._counters[full] == 0:
            del self._counters[full]
        self._touched.add((family, department))

    # -- departments, rooms and beds -----------------------------------------------------

    def _apply_department(self, old: Row | None, new: Row | None) -> None:
        if old is not None and old.get("id") is not None:
            department_id = int(old["id"])
            self._departments.pop(department_id, None)
            # Its values were published under the old code; a new code publishes afresh.
            for key in [key for key in self._published if key[1] == department_id]:
                del self._published[key]
        if new is not None and new.get("id") is not None:
            department_id = int(new["id"])
            self._departments[department_id] = str(new.get("code") or department_id)
            # A new (or renamed) department publishes all its values once.
            self._touched.update((family, department_id) for family in FAMILY_METRICS)

    def _apply_room(self, old: Row | None, new: Row | None) -> None:
        if old is not None and old.get("id") is not None:
            self._move_room(int(old["id"]), -1)
            self._room_department.pop(int(old["id"]), None)
        if new is not None and new.get("id") is not None:
            room_id = int(new["id"])
            self._room_department[room_id] = new.get("department_id")
            self._move_room(room_id, +1)

    def _move_room(self, room_id: int, sign: int) -> None:
        """Add (+1) or remove (-1) a known room and its beds from its department's counts."""
        if room_id not in self._room_department:
            return
        department = self._room_department[room_id]
        scopes = [HOSPITAL] if department is None else [HOSPITAL, department]
        beds_by_status = self._room_beds.get(room_id, Counter())
        occupied = beds_by_status[BedStatus.OCCUPIED] > 0
        for scope in scopes:
            self._bump(("rooms",), scope, sign)
            if occupied:
                self._bump(("rooms_occupied",), scope, sign)
        if department is None:
            return
        for status, beds in beds_by_status.items():
            self._bump(("beds", status), department, sign * beds)
            self._bump(("beds_all",), department, sign * beds)

    def _apply_bed(self, old: Row | None, new: Row | None) -> None:
        if old is not None:
            self._count_bed(old, -1)
        if new is not None:
            self._count_bed(new, +1)

    def _count_bed(self, row: Row, sign: int) -> None:
        status = str(row.get("status"))
        self._bump(("beds", status), HOSPITAL, sign)
        self._bump(("beds_all",), HOSPITAL, sign)
        room_id = row.get("room_id")
        if room_id is None:
            return
        room_id = int(room_id)
        beds_by_status = self._room_beds.setdefault(room_id, Counter())
        was_occupied = beds_by_status[BedStatus.OCCUPIED] > 0
        beds_by_status[status] += sign
        if beds_by_status[status] == 0:
            del beds_by_status[status]
            if not beds_by_status:
                del self._room_beds[room_id]
        if room_id not in self._room_department:
            return  # the room is not known yet; its beds join a department when it is
        department = self._room_department[room_id]
        if department is not None:
            self._bump(("beds", status), department, sign)
            self._bump(("beds_all",), department, sign)
        now_occupied = beds_by_status[BedStatus.OCCUPIED] > 0
        if was_occupied != now_occupied:
            step = 1 if now_occupied else -1
            self._bump(("rooms_occupied",), HOSPITAL, step)
            if department is not None:
                self._bump(("rooms_occupied",), department, step)


def _sort_key(key: MetricKey) -> tuple[int, int, int]:
    metric, department = key
    return (
        _METRIC_ORDER[metric],
        -1 if department is None else 0,
        department or 0,
    )
