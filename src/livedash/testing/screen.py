"""The reference recovery client: a dashboard's socket that follows docs/api.md, Recovery.

What it does, rule by rule (the page, `web/static/dashboard.js`, does the same in JavaScript):

1. it remembers the position of the last update, snapshot or subscription answer (`position`);
2. on every authentication it sends `subscribe_metrics` with `since` = that position;
3. and 4. a replay (`recovered: true`) and a fresh snapshot (`recovered: false`) are both
   applied by the rules below;
5. it shows, per metric and department, the value of the highest `version` (`shown`); it takes
   P from the answer, and only updates received after the answer move the position past it;
6. snapshots follow the version rule too, and a value of version 0 replaces what is held;
7. a snapshot the service sends on its own is applied like any other.

Two users. The fault tests open a few screens, record every event (`record`) and compare what
they show with SQL. The soak runs hundreds of them in worker processes for minutes: nothing is
recorded but what its figures need, and with `persistent` a screen keeps trying as a page left
open would (it reconnects after the service ended a session, authenticates again after a
refusal, and starts over on a new socket.io client when a subscription goes unanswered).
`rules="offset"` is the client before 2026-11-24 (an update not above the offset held is
dropped; a subscription's or `recovered: false` snapshot replaces everything), which lost
updates; the soak keeps it to show that.

Besides the screen it keeps, per subscription (an "era"), the answer and the positions
received; for each position, the era that first received it, so that a repeat is caught (the
docs allow one: a replayed update also arriving live, at or below the answer's position, in
the same era); and when each thing arrived and when its content was made, for recovery times.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import math
import random
import time
from array import array
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import aiohttp
import socketio

from livedash.testing.oracle import Key, differences
from livedash.testing.recorder import Recorder

ANSWER_SECONDS = 20.0
"""How long `subscribed`, `arrives` and `status` wait."""
RETRY_SECONDS = 1.0
UNANSWERED_SECONDS = 30.0
"""With `persistent`: a subscription unanswered this long starts over on a new client."""

Rules = Literal["docs", "offset"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """How python-socketio waits between reconnection attempts."""

    delay: float
    delay_max: float
    randomization: float


QUICK = Backoff(0.05, 0.3, 0.02)
"""A test's: back within a fraction of a second."""
BROWSER = Backoff(0.5, 5.0, 0.5)
"""socket.io's own kind: doubling up to 5 s, +-50%, as a page reconnects."""


@dataclass(slots=True)
class Subscription:
    """One `subscribe_metrics` sent (an era), and what came of it."""

    era: int
    connection: int
    sent_at: float
    answer: dict[str, Any] | None = None
    answered_at: float | None = None
    during: list[tuple[str, int]] = field(default_factory=list)
    """Positions received between sending it and its answer."""
    highest: dict[str, int] = field(default_factory=dict)
    """Epoch -> the highest offset received in this era."""
    new_epochs: set[str] = field(default_factory=set)
    """Epochs this screen first saw in this era, after the answer."""

    @property
    def at(self) -> tuple[str, int] | None:
        """The answer's position P, once answered."""
        position = (self.answer or {}).get("position")
        return (str(position["epoch"]), int(position["offset"])) if position else None


@dataclass(frozen=True, slots=True)
class Repeat:
    """A position received a second time."""

    epoch: str
    offset: int
    first_era: int
    era: int
    same: bool
    """The same metric, department, version and value as the first copy."""
    update: dict[str, Any]


class Screen(Recorder):
    """A dashboard page's socket (see the module's docstring); `open()` it, `close()` it."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        session: aiohttp.ClientSession | None = None,
        metrics: Sequence[str] | None = None,
        backoff: Backoff = QUICK,
        persistent: bool = False,
        record: bool = True,
        trace: bool = False,
        rules: Rules = "docs",
    ) -> None:
        self.url = url
        self.token = token
        self.metrics = metrics
        """What it subscribes to; None: every metric the token may see."""
        self.persistent = persistent
        self.rules = rules
        self._session = session
        self._backoff = backoff
        self.shown: dict[Key, tuple[int, Any]] = {}
        """What it shows: (version, value) per metric and department."""
        self.position: dict[str, Any] | None = None
        self.era = 0
        self.subscriptions: list[Subscription] = []
        self.acks: dict[int, dict[str, Any]] = {}
        """Era -> its answer (a refusal as {"ok": False, ...})."""
        self.updates: list[tuple[int, dict[str, Any]]] = []
        """(era, update) as received (with `record`)."""
        self.snapshots: list[tuple[int, dict[str, Any]]] = []
        self.repeats: list[Repeat] = []
        self.counts: Counter[str] = Counter()
        self.status_counts: Counter[str] = Counter()
        self.last_update: dict[str, float] = {}
        """Metric -> when its last update arrived."""
        self.received_at = array("d")
        self.produced_at = array("d")
        """For each update, snapshot and answer: when it arrived, when its content was made."""
        self.absences: list[list[float]] = []
        """[went offline at, came back at, subscription answered at (0: not yet)]."""
        self.offline = False
        self.answered = asyncio.Event()
        """Set once a subscription was answered."""
        self.connections = 0
        self.trace: list[tuple[Any, ...]] | None = [] if trace else None
        """With `trace`: every event, as (time, connection, kind, ...)."""
        self._connection = 0  # the current connection's number; 0 while not connected
        self._current: Subscription | None = None  # the current connection's last one
        self._seen: dict[str, array[int]] = {}
        self._prints: dict[str, array[int]] = {}
        self._back = asyncio.Event()
        self._connecting = asyncio.Lock()
        self._closing = False
        self._tasks: set[asyncio.Task[None]] = set()
        super().__init__(self._new_client(), record=record)

    # -- connection ----------------------------------------------------------------------

    def _new_client(self) -> socketio.AsyncClient:
        return socketio.AsyncClient(
            reconnection=True,
            reconnection_attempts=0,
            reconnection_delay=self._backoff.delay,
            reconnection_delay_max=self._backoff.delay_max,
            randomization_factor=self._backoff.randomization,
            handle_sigint=False,
            http_session=self._session,
        )

    def _attach(self, client: socketio.AsyncClient) -> None:
        super()._attach(client)
        client.on("connect", self._on_connect)
        client.on("disconnect", self._on_disconnect)
        client.on("authenticated", self._on_authenticated)
        client.on("auth_error", self._on_auth_error)
        client.on("error", self._on_error)
        client.on("connection_status", self._on_status)
        client.on("dashboard_update", self._on_update)
        client.on("metrics_snapshot", self._on_snapshot)

    async def _renew(self) -> None:
        """A new socket.io client, as a page reload would (the state kept): python-socketio
        never reconnects on its own again once shutdown() aborted a reconnection."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.client.shutdown(), 5)
        self._connection = 0
        self._current = None
        self.client = self._new_client()
        self._attach(self.client)

    def _auth(self) -> dict[str, str]:
        return {"token": self.token}

    async def open(self, *, wait: bool = True) -> Screen:
        """Connect; with `wait`, wait for the first subscription's answer (see `answered`)."""
        if self.persistent:
            self._spawn(self._keep())
        era = self.era + 1
        await self.connect()
        if wait:
            await self.subscribed(era)
        return self

    async def connect(self) -> None:
        """Connect once (with `persistent`: retry until connected, unless offline)."""
        async with self._connecting:
            while not self.client.connected and not self.offline and not self._closing:
                try:
                    await self.client.connect(
                        self.url, auth=self._auth, transports=["websocket"], wait_timeout=10
                    )
                except Exception as error:
                    if not self.persistent:
                        raise
                    self.counts[f"connect_failures ({type(error).__name__})"] += 1
                    await asyncio.sleep(RETRY_SECONDS * random.uniform(0.5, 1.5))

    async def go_offline(self) -> None:
        """The screen is switched off (or loses the network): no reconnecting by itself."""
        self.offline = True
        self.absences.append([time.time(), 0.0, 0.0])
        self._note("offline")
        async with self._connecting:
            await self._renew()  # disconnects, or stops reconnecting

    async def come_back(self, *, within: float = ANSWER_SECONDS) -> dict[str, Any]:
        """Connect (again): the subscription that follows names the last position seen.
        Returns its answer."""
        era = self.era + 1
        self._returning()
        await self.connect()
        return await self.subscribed(era, within=within)

    def _returning(self) -> None:
        if self.offline:
            self.offline = False
            self.absences[-1][1] = time.time()

    async def away(self, seconds: float) -> None:
        """Offline now, back after `seconds` (or at `return_now()`), without waiting for the
        answer; skipped if offline already."""
        if self.offline or self._closing:
            self.counts["absences_skipped"] += 1
            return
        self._note("away", seconds)
        await self.go_offline()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._back.wait(), seconds)
        self._back.clear()
        self._returning()
        await self.connect()

    def return_now(self) -> None:
        """End an `away` early."""
        if self.offline:
            self._back.set()

    async def close(self) -> None:
        """Disconnect for good (a screen away comes back no more)."""
        self._closing = True
        self._back.set()
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.client.shutdown(), 5)

    async def subscribed(self, era: int, *, within: float = ANSWER_SECONDS) -> dict[str, Any]:
        """The answer to the `era`-th subscription (waits for it); a refusal fails."""
        await self.until(lambda: era in self.acks, within=within)
        ack = self.acks[era]
        if ack.get("ok") is not True:
            raise AssertionError(f"subscription {era} refused: {ack}")
        return ack

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _keep(self) -> None:
        """python-socketio reconnects after a lost transport, not after the server ended the
        session (e.g. the authentication timed out while the database was down): do it then.
        A subscription unanswered for UNANSWERED_SECONDS: start again on a new client."""
        down_since: float | None = None
        while not self._closing:
            await asyncio.sleep(RETRY_SECONDS)
            current = self._current
            if (
                self.client.connected
                and current is not None
                and current.answered_at is None
                and time.time() - current.sent_at > UNANSWERED_SECONDS
                and not self.offline
            ):
                self.counts["subscription_unanswered"] += 1
                self._note("subscription_unanswered")
                async with self._connecting:
                    await self._renew()
                await self.connect()
                continue
            task = getattr(self.client, "_reconnect_task", None)
            reconnecting = task is not None and not task.done()
            if self.client.connected or self.offline or reconnecting or self._connecting.locked():
                down_since = None
                continue
            down_since = down_since or time.monotonic()
            if time.monotonic() - down_since > 2 * RETRY_SECONDS:
                self.counts["manual_reconnects"] += 1
                await self.connect()

    # -- events --------------------------------------------------------------------------

    def _note(self, kind: str, *fields: Any) -> None:
        if self.trace is not None:
            self.trace.append((time.time(), self._connection, kind, *fields))

    async def _on_connect(self) -> None:
        self.connections += 1
        self._connection = self.connections
        self._current = None
        self._note("connect")

    async def _on_disconnect(self, *args: Any) -> None:
        reason = args[0] if args else None
        self._note("disconnect", str(reason))
        self._connection = 0
        self._current = None
        self.counts[f"disconnect {reason}"] += 1
        await super()._on_disconnect(*args)

    async def _on_authenticated(self, data: Any) -> None:
        await self._record("authenticated", data)
        await self._subscribe()

    async def _subscribe(self) -> None:
        connection = self._connection
        if not connection:
            return
        self.era += 1
        subscription = Subscription(self.era, connection, time.time())
        self.subscriptions.append(subscription)
        self._current = subscription
        request: dict[str, Any] = {}
        if self.metrics is not None:
            request["metrics"] = list(self.metrics)
        if self.position is not None:
            request["since"] = self.position
        self._note("subscribe", request.get("since"))

        async def answered(*answer: Any) -> None:
            await self._on_answer(subscription, answer[0] if answer else None)

        try:
            await self.client.emit("subscribe_metrics", request, callback=answered)
        except Exception:
            if not self.persistent:
                raise
            self.counts["subscribe_send_failed"] += 1

    async def _subscribe_later(self, subscription: Subscription) -> None:
        await asyncio.sleep(RETRY_SECONDS)
        if subscription.connection == self._connection:
            await self._subscribe()

    async def _on_answer(self, subscription: Subscription, answer: Any) -> None:
        now = time.time()
        ack = answer if isinstance(answer, dict) else {"ok": False, "ack": answer}
        current = subscription is self._current
        self._note("answer", {k: v for k, v in ack.items() if k not in ("metrics", "departments")})
        if ack.get("ok") is True:
            subscription.answer, subscription.answered_at = ack, now
            position = ack.get("position")
            if current and position:
                if self.rules == "docs":
                    self.position = position  # rule 5: P, even below a live update's
                else:
                    self._remember(position)
            self._count_answer(subscription)
            self._produced(now, subscription.sent_at)
            self.answered.set()
            if current and self.absences and not self.absences[-1][2] and not self.offline:
                self.absences[-1][2] = now
        else:
            self.counts["subscribe_refused"] += 1
            if self.persistent and current:
                self._spawn(self._subscribe_later(subscription))
        await self._record("subscription_ack", answer)
        async with self._changed:
            self.acks[subscription.era] = ack
            self._changed.notify_all()

    def _count_answer(self, subscription: Subscription) -> None:
        recovered = (subscription.answer or {}).get("recovered")
        at = subscription.at
        if recovered is True:
            self.counts["recovered_replayed"] += 1
            if at is not None:
                epoch, top = at
                during = [o for e, o in subscription.during if e == epoch]
                overtaking = sum(1 for offset in during if offset > top)
                self.counts["replayed_updates"] += len(during) - overtaking
                self.counts["live_before_answer"] += overtaking
                self.counts["replays_overtaken"] += 1 if overtaking else 0
        elif recovered is False:
            self.counts["recovered_snapshot"] += 1
        else:
            self.counts["first_subscriptions"] += 1

    async def _on_auth_error(self, data: Any) -> None:
        await self._record("auth_error", data)
        self.counts["auth_error"] += 1
        if self.persistent:
            self._spawn(self._authenticate_later(self._connection))

    async def _on_error(self, data: Any) -> None:
        await self._record("error", data)
        event = data.get("event") if isinstance(data, dict) else None
        code = data.get("code") if isinstance(data, dict) else data
        self.counts[f"error {event}: {code}"] += 1
        if self.persistent and event == "authenticate":
            self._spawn(self._authenticate_later(self._connection))

    async def _authenticate_later(self, connection: int) -> None:
        await asyncio.sleep(RETRY_SECONDS)
        if connection and connection == self._connection and self.client.connected:
            with contextlib.suppress(Exception):
                await self.client.emit("authenticate", self._auth())

    async def _on_status(self, status: Any) -> None:
        await self._record("connection_status", status)
        self.status_counts[str(status.get("status"))] += 1
        self._note("status", status.get("status"), status.get("degraded"))

    async def _on_update(self, update: Any) -> None:
        now = time.time()
        self.counts["updates"] += 1
        metric, department = update["metric"], update["department"]
        self.last_update[metric] = now
        self._note(
            "update", update.get("position"), metric, department, update["version"], update["value"]
        )
        if self.record:
            self.updates.append((self.era, update))
        subscription = self._current
        position = update.get("position")
        shown = True
        if position:
            epoch, offset = str(position["epoch"]), int(position["offset"])
            self._mark_seen(epoch, offset, update, subscription)
            answered = subscription is None or subscription.answered_at is not None
            floor = 0
            if subscription is not None:
                floor = subscription.highest.get(epoch, 0)
                subscription.highest[epoch] = max(floor, offset)
                if not answered:
                    subscription.during.append((epoch, offset))
            held = self.position
            held_offset = held["offset"] if held and held["epoch"] == epoch else None
            if not answered and offset <= max(floor, held_offset or 0):
                # Before the answer: a replayed update that a live one above P overtook.
                self.counts["not_above_before_answer"] += 1
            if self.rules == "offset":
                if held_offset is not None and offset <= held_offset:
                    self.counts["dropped_not_above"] += 1
                    shown = False
                else:
                    self._remember(position)
            elif answered:
                self._remember(position)
        else:
            self.counts["updates_without_position"] += 1
        if shown:
            self._show([update])
            self._produced(now, _moment(update["timestamp"]))
        await self._record("dashboard_update", update)

    async def _on_snapshot(self, snapshot: Any) -> None:
        now = time.time()
        subscription = self._current
        answering = subscription is not None and subscription.answered_at is None
        # Otherwise a resync the service sent once it was healthy again (rule 7).
        kind = "snapshot_subscription" if answering else "snapshot_unsolicited"
        self.counts[kind] += 1
        recovered = snapshot.get("recovered")
        values = snapshot["values"]
        if self.trace is not None:
            held = [(v["metric"], v["department"], v["version"], v["value"]) for v in values]
            self._note(kind, snapshot.get("position"), recovered, snapshot.get("server_time"), held)
        if self.record:
            self.snapshots.append((self.era, snapshot))
        if self.rules == "offset" and (recovered is False or answering):
            self.shown = {
                (v["metric"], v["department"]): (int(v["version"]), v["value"]) for v in values
            }
        else:
            self._show(values)
        if snapshot.get("position"):
            self._remember(snapshot["position"])
        self._produced(now, _moment(snapshot["server_time"]))
        await self._record("metrics_snapshot", snapshot)

    def _remember(self, position: dict[str, Any]) -> None:
        held = self.position
        if (
            held is None
            or held["epoch"] != position["epoch"]
            or position["offset"] > held["offset"]
        ):
            self.position = position

    def _show(self, values: Iterable[dict[str, Any]]) -> None:
        """Rules 5 and 6: the highest version; version 0 replaces."""
        for value in values:
            key = (value["metric"], value["department"])
            held = self.shown.get(key)
            if held is None or value["version"] == 0 or held[0] < value["version"]:
                self.shown[key] = (int(value["version"]), value["value"])

    def _mark_seen(
        self, epoch: str, offset: int, update: dict[str, Any], subscription: Subscription | None
    ) -> None:
        eras, prints = self._seen.get(epoch), self._prints.get(epoch)
        if eras is None or prints is None:
            eras, prints = self._seen[epoch], self._prints[epoch] = array("I"), array("q")
            if subscription is not None and subscription.answered_at is not None:
                subscription.new_epochs.add(epoch)
        if offset >= len(eras):
            more = offset + 1 - len(eras) + 1024
            eras.extend([0] * more)
            prints.extend([0] * more)
        fingerprint = hash(
            (update["metric"], update["department"], update["version"], repr(update["value"]))
        )
        if eras[offset]:
            same = prints[offset] == fingerprint
            self.repeats.append(Repeat(epoch, offset, eras[offset], self.era, same, update))
        else:
            eras[offset], prints[offset] = max(self.era, 1), fingerprint

    def _produced(self, received: float, produced: float) -> None:
        self.received_at.append(received)
        self.produced_at.append(produced)

    # -- what it shows, and what went wrong ----------------------------------------------

    @property
    def subscribed_now(self) -> bool:
        """Connected, and its subscription on this connection answered."""
        current = self._current
        return bool(self.client.connected and current and current.answered_at)

    def differences(self, truth: dict[Key, Any]) -> dict[Key, tuple[Any, Any]]:
        """(shown, SQL) of every value of `truth` this screen does not show."""
        return differences(self.shown, truth)

    def shown_values(self, truth_keys: Iterable[Key]) -> dict[Key, Any]:
        keys = set(truth_keys)
        return {key: value for key, (_, value) in self.shown.items() if key in keys}

    def duplicates(self) -> tuple[int, list[dict[str, Any]]]:
        """Repeated positions: how many docs/api.md allows (dropped by the version rule),
        and the others (applied twice)."""
        wrong = [repeat.update for repeat in self.repeats if not self.allowed(repeat)]
        return len(self.repeats) - len(wrong), wrong

    def allowed(self, repeat: Repeat) -> bool:
        """Both copies answer one subscription (its replay and the live update), at or below
        the position it was answered with, and they are the same update."""
        ack = self.acks.get(repeat.era, {}).get("position") or {}
        answered = ack.get("epoch") == repeat.epoch and repeat.offset <= ack.get("offset", -1)
        return repeat.same and repeat.first_era == repeat.era and answered

    def version_regressions(self) -> list[tuple[Key, int, int]]:
        """Within one epoch, in offset order: updates of a key whose version is not above the
        previous update of that key (of the recorded updates)."""
        by_epoch: dict[str, dict[int, dict[str, Any]]] = {}
        for _, update in self.updates:
            position = update.get("position")
            if position:
                by_epoch.setdefault(position["epoch"], {})[position["offset"]] = update
        wrong = []
        for updates in by_epoch.values():
            last: dict[Key, int] = {}
            for offset in sorted(updates):
                update = updates[offset]
                key = (update["metric"], update["department"])
                if key in last and update["version"] <= last[key]:
                    wrong.append((key, last[key], update["version"]))
                last[key] = update["version"]
        return wrong

    def gaps(self) -> int:
        """Offsets a subscription should have received and this screen never did.

        For a screen subscribed to everything it may see, and allowed to see everything,
        every update the service sends is its own: after an answer at P, the offsets of P's
        epoch run P+1, P+2, ... with no hole; an epoch that began afterwards runs from 1."""
        missing = 0
        for subscription in self.subscriptions:
            at = subscription.at
            for epoch, highest in subscription.highest.items():
                if at is not None and at[0] == epoch:
                    start = at[1] + 1
                elif epoch in subscription.new_epochs:
                    start = 1
                else:
                    continue
                eras = self._seen[epoch]
                missing += sum(1 for offset in range(start, highest + 1) if not eras[offset])
        return missing

    def recovery(self, faults: Sequence[tuple[float, float | None]]) -> list[float | str | None]:
        """For each (fault at, healthy at): seconds from the fault until this screen received,
        after the service was healthy again, something made after the fault. "away" if it was
        offline on purpose meanwhile; None if that never happened."""
        answers: list[float | str | None] = []
        for fault_at, healthy_at in faults:
            if healthy_at is None:
                answers.append(None)
                continue
            start = bisect.bisect_left(self.received_at, healthy_at)
            found: float | None = None
            for index in range(start, len(self.received_at)):
                if self.produced_at[index] >= fault_at:
                    found = self.received_at[index]
                    break
            until = found if found is not None else math.inf
            away = any(
                went <= until and (answered or math.inf) >= fault_at
                for went, _, answered in self.absences
            )
            answers.append("away" if away else (None if found is None else found - fault_at))
        return answers

    def state(self) -> str:
        """Where it stands: subscribed, waiting for an answer, or not connected."""
        current = self._current
        if not self.client.connected or not self._connection:
            return "not connected"
        if current is None:
            return "connected, not authenticated"
        if current.answered_at is None:
            return f"waiting {time.time() - current.sent_at:.0f} s for its subscription's answer"
        return "subscribed"

    def statuses(self) -> list[dict[str, Any]]:
        """The `connection_status` events recorded."""
        return self.received("connection_status")

    def mark(self) -> int:
        """Where the events recorded so far end: for `arrives(..., after=mark)`."""
        return len(self.events)

    async def arrives(
        self,
        event: str,
        where: Callable[[Any], bool],
        *,
        after: int,
        within: float = ANSWER_SECONDS,
    ) -> dict[str, Any]:
        """The first `event` matching `where` among those recorded from index `after` on,
        waiting for it."""

        def find() -> tuple[dict[str, Any]] | None:
            for name, data in self.events[after:]:
                if name == event and where(data):
                    return (data,)
            return None

        await self.until(lambda: find() is not None, within=within)
        found = find()
        if found is None:
            raise AssertionError(f"{event} vanished from the events")
        return found[0]

    async def status(self, kind: str, *, after: int) -> dict[str, Any]:
        """The first `connection_status` saying `kind` from event index `after` on."""
        return await self.arrives("connection_status", lambda s: s["status"] == kind, after=after)


def _moment(stamp: str) -> float:
    moment = datetime.fromisoformat(stamp)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
