"""The incremental metric engine.

State is a set of counters, each the number of current rows that contribute to it. A change
subtracts the contributions of its old row and adds those of its new row, so after any
sequence of inserts, updates and deletes the counters equal a full recount, and each change
costs O(1) per affected metric. The engine never reads the database itself: `load` takes
rows at start-up and `apply` takes changes afterwards, through the very same code path.

Beds are counted per room as well, and reach a department through their room; when a room
appears, moves or disappears, its beds' counts move with it, so write order does not matter.

Each counter a change moves notes the change, so that a value published after a batch can
say which rows moved it (`causes`, see `livedash.metrics.causes`).
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
from livedash.metrics.causes import CHANGES_PER_CAUSE, CauseLog, Note, Reason
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
Touched = dict[tuple[str, DepartmentId], list[Change | None]]
"""(family, department) -> the changes that moved its counters, in order (None: at start-up)."""


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
        self._touched: Touched = {}
        self._change: Change | None = None  # the change being applied, which `_bump` notes
        self._system = SystemStatus()
        self._historical: dict[MetricKey, Value] = {}
        self.causes = CauseLog()
        """What moved each published value (recorded by `apply`, `refresh_time` and
        `set_historical`)."""

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
            self._change = change
            self._dispatch(change.table, change.old, change.new)
            self.position = change.position
        self._change = None
        touched, self._touched = self._touched, {}
        keys = {
            (metric, department)
            for family, department in touched
            for metric in FAMILY_METRICS.get(family, ())
            if department is HOSPITAL or department in self._departments
        }
        return updates + self._publish(sorted(keys, key=_sort_key), Reason.ROWS, touched)

    def refresh_time(self) -> list[MetricValue]:
        """After midnight (hospital time), publish the day-scoped values for the new day."""
        today = self._local_today()
        if today == self._today:
            return []
        self._today = today
        keys = [(metric, department) for metric in DAILY_METRICS for department in self._scopes()]
        return self._publish(keys, Reason.NEW_DAY)

    def set_historical(self, values: Mapping[MetricKey, Value]) -> list[MetricValue]:
        """Record the historical tier's figures (by metric and department id); publish changes."""
        self._historical.update(values)
        keys = [key for key in values if key[1] is HOSPITAL or key[1] in self._departments]
        return self._publish(sorted(keys, key=_sort_key), Reason.ROLL_UPS)

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

    def _publish(
        self,
        keys: Iterable[MetricKey],
        reason: Reason | None = None,
        touched: Touched | None = None,
    ) -> list[MetricValue]:
        """Publish the values of `keys` that changed; with a `reason`, record their causes
        (the rows behind each: those `touched` noted for its families)."""
        now = self._clock.now()
        updates: list[MetricValue] = []
        noted = touched or {}
        # The metrics that read the same families in the same department share one list, and
        # the lists share each change's note: made only for the changes a cause lists.
        behind: dict[tuple[tuple[str, ...], DepartmentId], tuple[tuple[Note, ...], bool]] = {}
        notes: dict[int, Note] = {}
        for metric, department in keys:
            value = self._evaluate(metric, department)
            previous = self._published.get((metric, department))
            if previous is not None and previous.value == value:
                continue
            self._version += 1
            code = self._departments.get(department) if department is not None else None
            published = MetricValue(
                metric=metric,
                department=code,
                value=value,
                version=self._version,
                timestamp=now,
                department_id=department,
            )
            self._published[(metric, department)] = published
            updates.append(published)
            if reason is not None:
                families = METRICS[metric].families
                last = behind.get((families, department))
                if last is None:
                    last = behind[families, department] = self._last(
                        noted, families, department, notes
                    )
                before = previous.value if previous is not None else None
                self.causes.record(
                    (metric, code), (published.version, now, before, value, reason, *last)
                )
        return updates

    def _last(
        self,
        touched: Touched,
        families: tuple[str, ...],
        department: DepartmentId,
        notes: dict[int, Note],
    ) -> tuple[tuple[Note, ...], bool]:
        """The notes of the last changes that moved `families` in `department`, and whether
        there were more."""
        if len(families) == 1:  # most metrics: the family's own list, in order already
            noted = touched.get((families[0], department), [])
            last = [change for change in noted[-CHANGES_PER_CAUSE:] if change is not None]
            more = len(noted) > CHANGES_PER_CAUSE
        else:
            lists = [touched.get((family, department), []) for family in families]
            unique = {
                change.position: change
                for noted in lists
                for change in noted[-CHANGES_PER_CAUSE:]
                if change is not None
            }
            newest = sorted(unique)[-CHANGES_PER_CAUSE:]
            last = [unique[position] for position in newest]
            more = len(unique) > len(newest) or any(len(n) > CHANGES_PER_CAUSE for n in lists)
        made = []
        for change in last:
            note = notes.get(change.position)
            if note is None:
                note = notes[change.position] = self._note(change)
            made.append(note)
        return tuple(made), more

    def _note(self, change: Change) -> Note:
        """What a cause may say of `change`: where and when, not the row's content."""
        row = change.new if change.new is not None else (change.old or {})
        if change.table == "departments":
            code = row.get("code")
        else:
            identifier = self._department_of(change.table, row)
            code = self._departments.get(identifier) if identifier is not None else None
        return (
            change.position,
            change.table,
            change.op,
            row.get("id"),
            change.committed_at,
            str(code) if code is not None else None,
        )

    def _department_of(self, table: str, row: Row) -> DepartmentId:
        if table == "departments":
            identifier = row.get("id")
        elif table == "beds":
            room = row.get("room_id")
            identifier = self._room_department.get(int(room)) if room is not None else None
        else:
            identifier = row.get("department_id")
        return int(identifier) if isinstance(identifier, int) else None

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
        scope = (family, department)
        noted = self._touched.get(scope)
        if noted is None:
            self._touched[scope] = [self._change]
        elif noted[-1] is not self._change:
            noted.append(self._change)

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
            for family in FAMILY_METRICS:
                noted = self._touched.setdefault((family, department_id), [])
                if not noted or noted[-1] is not self._change:
                    noted.append(self._change)

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
