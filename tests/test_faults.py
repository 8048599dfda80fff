"""Faults on real servers: every connected screen ends equal to a SQL recompute.

Redis killed and restarted, PostgreSQL killed and restarted (also with a screen reconnecting
during the outage), the service SIGKILLed in the middle of a burst of writes, a screen offline
for 30 s of simulated time, the leader of two instances killed. Each case ends with every
client's screen equal to `livedash.testing.oracle.recompute`, with no update lost and none
applied twice:

- lost: the final screen (highest version per key, everything replaced by a
  `metrics_snapshot` with `recovered: false`) differs from the recompute;
- applied twice: a `dashboard_update` with a stream position (epoch, offset) the client
  already received, other than the one docs/api.md allows (an update at or below the position
  P its subscription was acknowledged at, which the client drops), or an update of a key whose
  version is not above the previous one of that key in the same epoch.

Clients are `livedash.testing.screen.Screen`s, the reference recovery client (the soak's too):
socket.io clients that reconnect by themselves and, as the page does, subscribe again on every
authentication with `since` = the last position seen, and keep what docs/api.md says to keep.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
import socketio
from asyncpg.exceptions import InternalClientError as ClientError
from redis.asyncio import Redis
from sqlalchemy.engine import make_url

from livedash.auth.tokens import issue_token
from livedash.metrics.clock import ManualClock
from livedash.settings import Settings
from livedash.store.engine import libpq_dsn
from livedash.store.migrate import upgrade_async
from livedash.store.models import Role
from livedash.testing.oracle import Values, recompute
from livedash.testing.recorder import Recorder
from livedash.testing.screen import Screen
from livedash.testing.servers import NginxServer, PostgresServer, RedisServer
from tests.support.instances import Instance
from tests.support.live import LiveServer, Serve
from tests.support.probes import health
from tests.support.rollups import recount, stored
from tests.support.writers import PostgresWriter, Users, Write

TIMESTAMP = "%Y-%m-%d %H:%M:%S.%f"
SETTLE_SECONDS = 30.0  # at most this long for every screen to equal SQL after the last write
FAULT_SECONDS = 20.0  # at most this long for a fault (or its end) to be noticed


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """PostgreSQL (with Redis) unless a test is marked `both_backends`."""
    return str(getattr(request, "param", "postgres"))


# -- the hospital at work -------------------------------------------------------------------


def real_now() -> datetime:
    return datetime.now(UTC)


KINDS = (
    *("patient", "patient", "admit", "discharge", "bed", "bed", "appointment"),
    *("appointment_status", "payment", "alert", "resolve", "shift"),
)


class Activity:
    """The hospital's own programs writing: a seeded mix of one-statement transactions.

    Every kind of row a metric or a roll-up counts is inserted and updated: patients arrive,
    are admitted and discharged, beds change state, appointments are booked and completed,
    bills are paid, alerts are raised and resolved, staff clock in and out. Timestamps come
    from `now` (the service's clock, when the test moves one by hand).
    """

    def __init__(
        self,
        write: Write,
        hospital: dict[str, int],
        *,
        seed: int,
        now: Callable[[], datetime] = real_now,
    ) -> None:
        self.write = write
        self._rng = random.Random(seed)
        self._now = now
        self.departments = [hospital["ED"], hospital["CARD"]]
        self.beds = [ident for name, ident in hospital.items() if "-" in name]
        self.registered: list[tuple[int, int]] = []  # (patient, department)
        self.admitted: list[tuple[int, int]] = []  # (admission, patient)
        self.appointments: list[int] = []
        self.alerts: list[int] = []
        self.staff: list[tuple[int, int]] = []  # (staff, department)
        self.on_shift: dict[int, int] = {}  # staff -> open shift
        self.done = 0
        self.failed: BaseException | None = None
        self._progress = asyncio.Condition()

    def _stamp(self, minutes: float = 0.0) -> str:
        moment = self._now() + timedelta(minutes=minutes)
        return moment.astimezone(UTC).strftime(TIMESTAMP)

    async def step(self) -> None:
        """One operation of the hospital (one or two transactions)."""
        rng, write = self._rng, self.write
        department = rng.choice(self.departments)
        kind = rng.choice(KINDS)
        if kind == "admit" and self.registered:
            patient, department = self.registered.pop(rng.randrange(len(self.registered)))
            await write("UPDATE patients SET status = 'active' WHERE id = ?", (patient,))
            admission = await write(
                "INSERT INTO admissions (patient_id, department_id, admitted_at) VALUES (?, ?, ?)",
                (patient, department, self._stamp()),
            )
            self.admitted.append((admission, patient))
        elif kind == "discharge" and self.admitted:
            admission, patient = self.admitted.pop(rng.randrange(len(self.admitted)))
            await write(
                "UPDATE admissions SET discharged_at = ? WHERE id = ?", (self._stamp(), admission)
            )
            await write(
                "UPDATE patients SET status = 'discharged', discharged_at = ? WHERE id = ?",
                (self._stamp(), patient),
            )
        elif kind == "bed":
            status = rng.choice(["free", "occupied", "occupied", "cleaning", "out_of_service"])
            await write("UPDATE beds SET status = ? WHERE id = ?", (status, rng.choice(self.beds)))
        elif kind == "appointment":
            appointment = await write(
                "INSERT INTO appointments (department_id, scheduled_at, status) "
                "VALUES (?, ?, 'scheduled')",
                (department, self._stamp(rng.uniform(-90, 90))),
            )
            self.appointments.append(appointment)
        elif kind == "appointment_status" and self.appointments:
            status = rng.choice(["checked_in", "completed", "completed", "cancelled", "no_show"])
            await write(
                "UPDATE appointments SET status = ? WHERE id = ?",
                (status, rng.choice(self.appointments)),
            )
        elif kind == "payment":
            amount, paid = rng.randrange(100, 250_000), self._stamp()
            bill = await write(
                "INSERT INTO bills (department_id, amount_cents, created_at, paid_at) "
                "VALUES (?, ?, ?, ?)",
                (department, amount, paid, paid),
            )
            await write(
                "INSERT INTO payments (bill_id, department_id, amount_cents, paid_at) "
                "VALUES (?, ?, ?, ?)",
                (bill, department, amount, paid),
            )
        elif kind == "alert":
            alert = await write(
                "INSERT INTO alerts (department_id, severity, status, title, raised_at) "
                "VALUES (?, ?, 'active', 'fault test', ?)",
                (
                    rng.choice([None, department]),
                    rng.choice(["critical", "high", "medium", "low"]),
                    self._stamp(),
                ),
            )
            self.alerts.append(alert)
        elif kind == "resolve" and self.alerts:
            alert = self.alerts.pop(rng.randrange(len(self.alerts)))
            await write(
                "UPDATE alerts SET status = 'resolved', resolved_at = ? WHERE id = ?",
                (self._stamp(), alert),
            )
        elif kind == "shift":
            await self._shift(department)
        else:  # "patient", or an update with nothing to update yet
            emergency = rng.random() < 0.3
            patient = await write(
                "INSERT INTO patients (department_id, name, status, emergency, registered_at) "
                "VALUES (?, 'fault test', 'registered', ?, ?)",
                (department, int(emergency), self._stamp()),
            )
            self.registered.append((patient, department))

    async def _shift(self, department: int) -> None:
        if len(self.staff) < 4:
            staff = await self.write(
                "INSERT INTO staff (department_id, name, role) VALUES (?, 'fault test', 'nurse')",
                (department,),
            )
            self.staff.append((staff, department))
        staff, home = self._rng.choice(self.staff)
        if staff in self.on_shift:
            await self.write(
                "UPDATE staff_shifts SET clock_out_at = ? WHERE id = ?",
                (self._stamp(), self.on_shift.pop(staff)),
            )
        else:
            self.on_shift[staff] = await self.write(
                "INSERT INTO staff_shifts (staff_id, department_id, clock_in_at) VALUES (?, ?, ?)",
                (staff, home, self._stamp()),
            )

    async def run(self, operations: int, *, stop_on_error: bool = False) -> None:
        """`operations` steps, one after the other; with `stop_on_error`, a write that fails
        (the database went away) ends the run instead of failing the test."""
        for _ in range(operations):
            try:
                await self.step()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ClientError) as error:
                if not stop_on_error:
                    raise
                self.failed = error
                return
            async with self._progress:
                self.done += 1
                self._progress.notify_all()

    async def reached(self, operations: int) -> None:
        """Wait until `operations` steps were done in all."""
        async with asyncio.timeout(FAULT_SECONDS), self._progress:
            await self._progress.wait_for(lambda: self.done >= operations)


async def seed_hospital(write: Write) -> dict[str, int]:
    """As conftest's `hospital`: two departments, two rooms of two beds each, one patient."""
    ids: dict[str, int] = {}
    for code, name in (("ED", "Emergency"), ("CARD", "Cardiology")):
        department = await write("INSERT INTO departments (code, name) VALUES (?, ?)", (code, name))
        ids[code] = department
        for number in ("1", "2"):
            room = await write(
                "INSERT INTO rooms (department_id, number) VALUES (?, ?)", (department, number)
            )
            for label in ("A", "B"):
                ids[f"{code}-{number}{label}"] = await write(
                    "INSERT INTO beds (room_id, label, status) VALUES (?, ?, 'free')",
                    (room, label),
                )
        await write(
            "INSERT INTO patients (department_id, name, status, emergency, registered_at) "
            "VALUES (?, 'first', 'registered', ?, ?)",
            (department, 0, real_now().strftime(TIMESTAMP)),
        )
    return ids


# -- a screen ---------------------------------------------------------------------------------


class Screens:
    """Every screen a test opens; closed (and their sessions) at the end."""

    def __init__(self) -> None:
        self.all: list[Screen] = []
        self._sessions: list[aiohttp.ClientSession] = []

    async def open(self, url: str, token: str, *, address: str | None = None) -> Screen:
        session = None
        if address is not None:
            session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(address, 0)))
            self._sessions.append(session)
        screen = Screen(url, token, session=session)
        self.all.append(screen)
        return await screen.open()

    async def close(self) -> None:
        screens, self.all = self.all, []
        sessions, self._sessions = self._sessions, []
        for screen in screens:
            await screen.close()
        for session in sessions:
            await session.close()


@pytest.fixture
async def screens() -> AsyncIterator[Screens]:
    opened = Screens()
    yield opened
    await opened.close()


async def all_equal_sql(
    screens: Iterable[Screen],
    database_url: str,
    zone: Any,
    today: date | None = None,
    *,
    within: float = SETTLE_SECONDS,
) -> Values:
    """Wait until every screen shows what a SQL recompute says; fail with the differences."""
    truth = await recompute(database_url, zone, today or datetime.now(zone).date())
    for number, screen in enumerate(screens):
        try:
            await screen.until(lambda s=screen: not s.differences(truth), within=within)  # type: ignore[misc]
        except TimeoutError:
            differences = screen.differences(truth)
            pytest.fail(
                f"screen {number} lost {len(differences)} value(s); (shown, SQL): {differences}"
            )
    return truth


def assert_none_applied_twice(screens: Iterable[Screen]) -> int:
    """No update applied twice on any screen; returns the allowed duplicates dropped."""
    dropped = 0
    for number, screen in enumerate(screens):
        allowed, wrong = screen.duplicates()
        assert wrong == [], f"screen {number} received these positions twice: {wrong}"
        regressions = screen.version_regressions()
        assert regressions == [], f"screen {number}: versions not increasing: {regressions}"
        dropped += allowed
    return dropped


async def connect_anonymously(url: str) -> Recorder:
    """A socket that does not authenticate: it hears `connection_status` only."""
    recorder = Recorder(socketio.AsyncClient(reconnection=False))
    await recorder.client.connect(url, transports=["websocket"], wait_timeout=10)
    return recorder


# -- reading the database as an outsider ------------------------------------------------------


class Rows:
    """`await rows.fetch(sql)` on the test database (sqlite3, or asyncpg), for `recount`."""

    def __init__(self, database_url: str) -> None:
        url = make_url(database_url)
        self._sqlite = str(url.database) if url.get_backend_name() == "sqlite" else None
        self._dsn = libpq_dsn(database_url)

    async def fetch(self, sql: str) -> list[tuple[Any, ...]]:
        if self._sqlite is not None:
            path = self._sqlite

            def read() -> list[tuple[Any, ...]]:
                with contextlib.closing(sqlite3.connect(path, timeout=10)) as connection:
                    return connection.execute(sql).fetchall()

            return await asyncio.to_thread(read)
        connection = await asyncpg.connect(self._dsn)
        try:
            return [tuple(row) for row in await connection.fetch(sql)]
        finally:
            await connection.close()

    async def stored_position(self) -> int:
        rows = await self.fetch("SELECT position FROM feed_positions WHERE consumer = 'metrics'")
        return int(rows[0][0]) if rows else 0


async def until_true(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll another process's state (no event to await) until `check` holds, with a deadline."""
    try:
        async with asyncio.timeout(SETTLE_SECONDS):
            while not await check():  # noqa: ASYNC110
                await asyncio.sleep(0.05)
    except TimeoutError:
        pytest.fail(f"never happened: {what}")


async def feed_caught_up(url: str, token: str, rows: Rows) -> int:
    """Wait until the stored feed position reaches what the service at `url` has applied
    (`token`, a super_admin's, reads it from its /health)."""
    applied = int((await health(url, token))["feed_position"])

    async def stored_enough() -> bool:
        return await rows.stored_position() >= applied

    await until_true(stored_enough, f"the feed position {applied} stored")
    return await rows.stored_position()


async def assert_rollups_exact(url: str, token: str, rows: Rows) -> int:
    """Once what the service applied is stored, the hourly roll-ups (kept from the change
    feed, resumed from the stored position after any restart) equal a recount of the rows:
    no change lost or counted twice. Returns the stored position."""
    position = await feed_caught_up(url, token, rows)
    truth = await recount(rows)
    assert truth, "the writes should have made some history"
    assert await stored(rows) == truth
    return position


# -- Redis ------------------------------------------------------------------------------------


async def test_redis_killed_and_restarted(
    hospital: dict[str, int],
    settings: Settings,
    serve: Serve,
    screens: Screens,
    token: Callable[..., str],
    writer: Write,
    redis_server: RedisServer,
) -> None:
    server = await serve(settings.model_copy(update={"leader_poll_seconds": 0.2}))
    steady, away_before, away_during = [await screens.open(server.url, token()) for _ in range(3)]
    activity = Activity(writer, hospital, seed=1)
    await activity.run(20)
    await all_equal_sql(screens.all, settings.database_url, settings.zone)
    await away_before.go_offline()

    # Killed in the middle of a burst of writes.
    burst = asyncio.create_task(activity.run(40))
    await activity.reached(30)
    marks = {screen: screen.mark() for screen in (steady, away_during)}
    await asyncio.to_thread(redis_server.kill)
    for screen, mark in marks.items():
        status = await screen.status("degraded", after=mark)
        assert status["degraded"] == ["cache"], status
        assert status["reasons"]["cache"], status
        assert status["stale_since"] is None, status
    await burst
    outage_starts = len(steady.events)

    # The service keeps serving: a screen that comes back gets a fresh snapshot (the history
    # is in Redis), and writes made during the outage reach every screen.
    back = await away_before.come_back()
    assert back["recovered"] is False, back
    assert away_before.snapshots[-1][1]["recovered"] is False
    await away_during.go_offline()
    await activity.run(30)
    connected = [steady, away_before]
    await all_equal_sql(connected, settings.database_url, settings.zone)
    assert any(name == "dashboard_update" for name, _ in steady.events[outage_starts:])
    assert [s["status"] for s in away_before.statuses()][-1] == "degraded"

    # Restarted on the same port, in the middle of a burst: degraded ends without a restart
    # of the service, and every screen gets a fresh snapshot.
    burst = asyncio.create_task(activity.run(40))
    await activity.reached(activity.done + 10)
    marks = {screen: screen.mark() for screen in connected}
    await asyncio.to_thread(redis_server.start)
    for screen, mark in marks.items():
        status = await screen.status("connected", after=mark)
        assert status["degraded"] == [], status
        assert status["reasons"] == {}, status
        await screen.arrives("metrics_snapshot", lambda s: s["recovered"] is False, after=mark)
    await burst
    await away_during.come_back()
    await activity.run(10)
    await all_equal_sql(screens.all, settings.database_url, settings.zone)
    assert_none_applied_twice(screens.all)


# -- one instance cut off from Redis ----------------------------------------------------------


class RedisUsers:
    """Redis ACL users, one per instance, so that a test can cut one instance off Redis (or
    off its pub/sub) while the others and the server go on."""

    def __init__(self, server: RedisServer) -> None:
        self.server = server
        self.admin = Redis.from_url(server.url)

    async def add(self, name: str) -> str:
        """A user allowed everything; the URL to connect as it."""
        await self.admin.execute_command(
            "ACL", "SETUSER", name, "on", ">secret", "~*", "&*", "+@all"
        )
        return self.server.url.replace("redis://", f"redis://{name}:secret@")

    async def cut_off(self, name: str) -> None:
        await self.admin.execute_command("ACL", "SETUSER", name, "off")
        await self.admin.execute_command("CLIENT", "KILL", "USER", name)

    async def let_back(self, name: str) -> None:
        await self.admin.execute_command("ACL", "SETUSER", name, "on")

    async def deny_channels(self, name: str) -> None:
        """Commands and keys still work (its breaker stays closed); pub/sub does not."""
        await self.admin.execute_command("ACL", "SETUSER", name, "resetchannels")
        await self.admin.execute_command("CLIENT", "KILL", "USER", name, "TYPE", "pubsub")

    async def allow_channels(self, name: str) -> None:
        await self.admin.execute_command("ACL", "SETUSER", name, "allchannels")


@pytest.fixture
async def redis_users(redis_server: RedisServer) -> AsyncIterator[RedisUsers]:
    users = RedisUsers(redis_server)
    yield users
    await users.admin.aclose()


@dataclass
class LeaderAndFollower:
    """Two instances, each on its own Redis user, with a screen on each, in a working
    hospital."""

    on_leader: Screen
    on_follower: Screen
    screens: Screens
    activity: Activity
    settings: Settings

    async def all_equal_sql(self, only: Iterable[Screen] | None = None) -> Values:
        chosen = self.screens.all if only is None else only
        return await all_equal_sql(chosen, self.settings.database_url, self.settings.zone)


@pytest.fixture
async def leader_and_follower(
    hospital: dict[str, int],
    settings: Settings,
    serve: Serve,
    screens: Screens,
    token: Callable[..., str],
    writer: Write,
    redis_users: RedisUsers,
) -> LeaderAndFollower:
    operator = token()  # before the feed starts: its `users` row is no change to it
    base = settings.model_copy(update={"leader_poll_seconds": 0.2})
    leader = await serve(base.model_copy(update={"redis_url": await redis_users.add("leader")}))
    follower = await serve(base.model_copy(update={"redis_url": await redis_users.add("follower")}))
    assert (await health(leader.url, operator))["role"] == "leader"
    assert (await health(follower.url, operator))["role"] == "follower"
    pair = LeaderAndFollower(
        on_leader=await screens.open(leader.url, token()),
        on_follower=await screens.open(follower.url, token()),
        screens=screens,
        activity=Activity(writer, hospital, seed=7),
        settings=settings,
    )
    await pair.activity.run(10)
    await pair.all_equal_sql()
    return pair


async def test_updates_the_leader_sent_while_it_alone_lost_redis_reach_the_followers_screens(
    leader_and_follower: LeaderAndFollower, redis_users: RedisUsers
) -> None:
    pair = leader_and_follower
    on_leader, on_follower = pair.on_leader, pair.on_follower
    # Only the leader loses Redis: the follower's own link (and breaker) stay up, so it has
    # no outage of its own to recover from.
    mark = on_leader.mark()
    await redis_users.cut_off("leader")
    await on_leader.status("degraded", after=mark)
    await pair.activity.run(30)
    truth = await pair.all_equal_sql([on_leader])
    assert on_follower.differences(truth), "the follower's screen should have missed updates"
    assert not [s for s in on_follower.statuses() if s["status"] != "connected"]

    # Back: the leader rewrites Redis and tells the follower, whose screen gets a snapshot.
    marks = {screen: screen.mark() for screen in (on_leader, on_follower)}
    await redis_users.let_back("leader")
    await on_leader.status("connected", after=marks[on_leader])
    await on_follower.arrives(
        "metrics_snapshot", lambda s: s["recovered"] is False, after=marks[on_follower]
    )
    await pair.all_equal_sql()
    await pair.activity.run(10)
    await pair.all_equal_sql()
    assert_none_applied_twice(pair.screens.all)


async def test_a_follower_whose_subscription_to_redis_broke_resends_what_it_missed(
    leader_and_follower: LeaderAndFollower, redis_users: RedisUsers
) -> None:
    pair = leader_and_follower
    on_follower = pair.on_follower
    # Redis answers the follower's commands (its breaker stays closed) but it hears nothing
    # the leader publishes: pub/sub keeps nothing for a subscriber that is away.
    await redis_users.deny_channels("follower")
    await pair.activity.run(30)
    truth = await pair.all_equal_sql([pair.on_leader])
    assert on_follower.differences(truth), "the follower's screen should have missed updates"

    mark = on_follower.mark()
    await redis_users.allow_channels("follower")
    await on_follower.arrives("metrics_snapshot", lambda s: s["recovered"] is False, after=mark)
    await pair.all_equal_sql()
    await pair.activity.run(10)
    await pair.all_equal_sql()
    assert_none_applied_twice(pair.screens.all)
    assert not [s for s in on_follower.statuses() if s["status"] != "connected"]


# -- PostgreSQL -------------------------------------------------------------------------------


class Deployment:
    """The service in-process on a PostgreSQL server of the test's own, with Redis."""

    def __init__(self, postgres: PostgresServer, settings: Settings) -> None:
        self.postgres = postgres
        self.settings = settings
        self.url = settings.database_url
        self.writer = PostgresWriter(postgres.dsn("hospital"))
        self.hospital: dict[str, int] = {}
        self.token = ""
        self.server: LiveServer | None = None

    @property
    def service_url(self) -> str:
        assert self.server is not None
        return self.server.url

    async def new_writer(self) -> PostgresWriter:
        """A writer on a new connection (the old one died with the server)."""
        with contextlib.suppress(Exception):
            await self.writer.close()
        self.writer = PostgresWriter(self.postgres.dsn("hospital"))
        return self.writer


@pytest.fixture
async def deployment(
    own_postgres: PostgresServer, redis_server: RedisServer, tmp_path: Path, screens: Screens
) -> AsyncIterator[Deployment]:
    url = await own_postgres.create_database("hospital")
    await upgrade_async(url)
    settings = Settings(
        database_url=url,
        redis_url=redis_server.url,
        feed_slot="slot_faults",
        jwt_secret="test-secret-" + "x" * 64,
        jwt_secret_file=tmp_path / "unused-secret",
        timezone="Europe/Berlin",
        auth_timeout_seconds=5.0,
        leader_poll_seconds=0.2,
        _env_file=None,  # type: ignore[call-arg]
    )
    made = Deployment(own_postgres, settings)
    users = Users(own_postgres.dsn("hospital"))
    try:
        made.hospital = await seed_hospital(made.writer)
        users.save("test-super_admin", Role.SUPER_ADMIN, ())
        made.token = issue_token(settings, "test-super_admin", Role.SUPER_ADMIN, ())
        made.server = await LiveServer(settings).start()
        yield made
    finally:
        await screens.close()  # before the server goes: no screen left reconnecting
        if made.server is not None:
            await made.server.stop()
        users.close()
        with contextlib.suppress(Exception):
            await made.writer.close()


async def test_postgres_killed_and_restarted(deployment: Deployment, screens: Screens) -> None:
    url, zone = deployment.url, deployment.settings.zone
    first, second = [await screens.open(deployment.service_url, deployment.token) for _ in range(2)]
    activity = Activity(deployment.writer, deployment.hospital, seed=2)
    await activity.run(20)
    truth = await all_equal_sql(screens.all, url, zone)

    # Killed in the middle of a burst: the writes stop with it.
    burst = asyncio.create_task(activity.run(100, stop_on_error=True))
    await activity.reached(30)
    marks = {screen: screen.mark() for screen in (first, second)}
    await asyncio.to_thread(deployment.postgres.kill)
    await burst
    assert activity.failed is not None, "the writes should have failed with the database"
    for screen, mark in marks.items():
        status = await screen.status("stale", after=mark)
        assert isinstance(status["data_age_seconds"], float | int), status
        assert status["data_age_seconds"] >= 0, status
        assert datetime.fromisoformat(status["stale_since"]) <= datetime.now(UTC), status
        assert "database" in status["degraded"], status
    # Clients keep their values: nothing replaces or removes them while the database is
    # away (updates of changes committed before the crash may still arrive).
    held = [set(screen.shown_values(truth)) for screen in (first, second)]
    assert held == [set(truth)] * 2, "a screen lost values when the database went away"
    stale_at = [len(screen.events) for screen in (first, second)]
    # A client connecting now is told so at once (a round trip through the service).
    probe = await connect_anonymously(deployment.service_url)
    try:
        status = await probe.next("connection_status")
        assert status["status"] == "stale", status
        assert status["data_age_seconds"] >= 0, status
    finally:
        await probe.client.disconnect()
    for screen, since in zip((first, second), stale_at, strict=True):
        assert set(screen.shown_values(truth)) == set(truth)
        assert "metrics_snapshot" not in [name for name, _ in screen.events[since:]]

    marks = {screen: screen.mark() for screen in (first, second)}
    await asyncio.to_thread(deployment.postgres.start)
    for screen, mark in marks.items():
        await screen.status("connected", after=mark)
        await screen.arrives("metrics_snapshot", lambda s: s["recovered"] is False, after=mark)
    # The feed resumes; writes after the restart reach every screen, nothing is lost.
    activity.write = await deployment.new_writer()
    await activity.run(30)
    await all_equal_sql(screens.all, url, zone)
    assert_none_applied_twice(screens.all)
    # The feed resumed from its slot and stored position (both survived the crash): the
    # roll-ups hold every change once, those replayed after the crash included.
    await assert_rollups_exact(deployment.service_url, deployment.token, Rows(url))


async def test_a_screen_reconnecting_while_postgres_is_down_catches_up_when_it_returns(
    deployment: Deployment, screens: Screens
) -> None:
    url, zone = deployment.url, deployment.settings.zone
    steady = await screens.open(deployment.service_url, deployment.token)
    blinking = await screens.open(deployment.service_url, deployment.token)
    activity = Activity(deployment.writer, deployment.hospital, seed=6)
    await activity.run(20)
    await all_equal_sql(screens.all, url, zone)

    mark = steady.mark()
    await asyncio.to_thread(deployment.postgres.kill)
    await steady.status("stale", after=mark)
    # Its network blinks while the database is down: it reconnects, and is told it is stale.
    await blinking.go_offline()
    mark = blinking.mark()
    await blinking.client.connect(
        blinking.url, auth=lambda: {"token": blinking.token}, transports=["websocket"]
    )
    status = await blinking.status("stale", after=mark)
    assert status["data_age_seconds"] >= 0, status

    mark = steady.mark()
    await asyncio.to_thread(deployment.postgres.start)
    await steady.status("connected", after=mark)
    activity.write = await deployment.new_writer()
    await activity.run(20)
    # It was not signed out for the database's outage, and catches up once it is back.
    await all_equal_sql(screens.all, url, zone, within=10.0)
    assert not blinking.received("auth_error"), blinking.received("auth_error")
    assert_none_applied_twice(screens.all)


async def test_cache_up_and_database_up_say_what_is_down(
    deployment: Deployment, screens: Screens, redis_server: RedisServer
) -> None:
    screen = await screens.open(deployment.service_url, deployment.token)

    def shown(metric: str) -> Any:
        return screen.shown.get((metric, None), (0, None))[1]

    assert (shown("cache_up"), shown("database_up")) == (1, 1)
    mark = screen.mark()
    await asyncio.to_thread(redis_server.kill)
    await screen.status("degraded", after=mark)
    await screen.until(lambda: shown("cache_up") == 0, within=5.0)
    mark = screen.mark()
    await asyncio.to_thread(redis_server.start)
    await screen.status("connected", after=mark)
    await screen.until(lambda: shown("cache_up") == 1, within=5.0)

    mark = screen.mark()
    await asyncio.to_thread(deployment.postgres.kill)
    await screen.status("stale", after=mark)
    await screen.until(lambda: shown("database_up") == 0, within=5.0)
    mark = screen.mark()
    await asyncio.to_thread(deployment.postgres.start)
    await screen.status("connected", after=mark)
    await screen.until(lambda: shown("database_up") == 1, within=5.0)


# -- the service ------------------------------------------------------------------------------


class Service(Instance):
    """`livedash serve` in its own process (on SQLite without Redis)."""

    def __init__(self, settings: Settings, log: Path, token: str) -> None:
        super().__init__(settings, log, token)
        if settings.redis_url is None:
            self.env.pop("LIVEDASH_REDIS_URL", None)


@pytest.fixture
async def processes() -> AsyncIterator[list[Service]]:
    """Services started by a test; each one still running is stopped at the end."""
    started: list[Service] = []
    yield started
    for service in started:
        await service.stop()


@pytest.mark.both_backends
async def test_service_killed_in_a_burst_of_writes_and_restarted(
    hospital: dict[str, int],
    settings: Settings,
    processes: list[Service],
    screens: Screens,
    token: Callable[..., str],
    writer: Write,
    tmp_path: Path,
) -> None:
    service = Service(settings, tmp_path / "service.log", token())
    processes.append(service)
    await service.start()
    rows = Rows(settings.database_url)
    clients = [await screens.open(service.url, token()) for _ in range(2)]
    activity = Activity(writer, hospital, seed=3)
    await activity.run(20)
    await all_equal_sql(clients, settings.database_url, settings.zone)
    before = await feed_caught_up(service.url, service.token, rows)

    # SIGKILL in the middle of a burst; the hospital keeps writing while the service is down.
    start, burst_size = activity.done, 150
    burst = asyncio.create_task(activity.run(burst_size))
    await activity.reached(start + 40)
    await service.kill()
    killed_after = activity.done
    at_kill = await rows.stored_position()
    for client in clients:
        await asyncio.wait_for(client.disconnected.wait(), FAULT_SECONDS)
    await activity.reached(min(killed_after + 30, start + burst_size))
    await service.start()  # the same port: the screens reconnect by themselves
    for client in clients:
        ack = await client.subscribed(2)
        assert ack["recovered"] is False, ack  # another epoch: a fresh snapshot
    await burst
    await all_equal_sql(clients, settings.database_url, settings.zone)
    assert_none_applied_twice(clients)

    # It resumed its change feed from the stored position (the sequence on SQLite, the slot
    # on PostgreSQL): the roll-ups, which continue from it, hold every change exactly once.
    after = await assert_rollups_exact(service.url, service.token, rows)
    assert before <= at_kill < after


# -- a screen offline -------------------------------------------------------------------------

# Midnight in Berlin (CET): the 30 s offline cross it, so the missed updates include the
# daily figures starting over.
MIDNIGHT = datetime(2026, 11, 23, 23, 0, tzinfo=UTC)


@pytest.mark.both_backends
async def test_a_screen_offline_for_30_simulated_seconds_gets_what_it_missed(
    hospital: dict[str, int],
    settings: Settings,
    serve: Serve,
    screens: Screens,
    token: Callable[..., str],
    writer: Write,
) -> None:
    clock = ManualClock(MIDNIGHT - timedelta(seconds=15))
    custom = {"time_refresh_seconds": 0.05, "history_max_age_seconds": 60.0}
    server = await serve(settings.model_copy(update=custom), clock)
    watcher = await screens.open(server.url, token())
    traveller = await screens.open(server.url, token())
    activity = Activity(writer, hospital, seed=4, now=clock.now)
    url, zone = settings.database_url, settings.zone

    def today() -> date:
        return clock.now().astimezone(zone).date()

    await activity.run(15)
    await all_equal_sql(screens.all, url, zone, today())

    await traveller.go_offline()
    left_at = traveller.position
    assert left_at is not None
    for _ in range(30):  # the service's clock moves on, and the hospital keeps writing
        clock.advance(timedelta(seconds=1))
        await activity.run(1)
    assert today() == MIDNIGHT.astimezone(zone).date()
    await all_equal_sql([watcher], url, zone, today())

    back = await traveller.come_back()
    assert back["recovered"] is True, back  # the history covers the 30 s
    era, top = traveller.era, back["position"]["offset"]
    assert not [s for e, s in traveller.snapshots if e == era]
    replayed: dict[int, dict[str, Any]] = {}
    for e, update in traveller.updates:
        if e == era and update["position"]["offset"] <= top:
            replayed.setdefault(update["position"]["offset"], update)
    missed = [
        update
        for _, update in watcher.updates
        if update["position"]["epoch"] == left_at["epoch"]
        and left_at["offset"] < update["position"]["offset"] <= top
    ]
    assert missed, "the screen should have missed something"
    assert list(replayed.values()) == missed  # in order, each once
    await all_equal_sql([traveller], url, zone, today())

    # Away for longer than the history keeps (60 s here): a fresh snapshot instead.
    await traveller.go_offline()
    await activity.run(10)
    await all_equal_sql([watcher], url, zone, today())
    clock.advance(timedelta(seconds=61))
    back = await traveller.come_back()
    assert back["recovered"] is False, back
    assert traveller.snapshots[-1][1]["recovered"] is False
    await all_equal_sql(screens.all, url, zone, today())
    assert_none_applied_twice(screens.all)


# -- the leader of two instances ---------------------------------------------------------------


async def test_leader_killed_while_two_instances_run(
    hospital: dict[str, int],
    settings: Settings,
    redis_server: RedisServer,
    processes: list[Service],
    screens: Screens,
    token: Callable[..., str],
    writer: Write,
    tmp_path: Path,
) -> None:
    operator = token()
    for number in range(2):  # the first one to start leads; the second waits for the lock
        log = tmp_path / f"instance{number}.log"
        processes.append(await Service(settings, log, operator).start())
    leader, survivor = processes
    assert (await leader.health())["role"] == "leader"
    nginx = NginxServer(tmp_path / "nginx", [i.port for i in processes]).start()
    try:
        # Screens through nginx (it pins a client by address) until both instances have some.
        for last_octet in range(2, 60):
            await screens.open(nginx.url, token(), address=f"127.0.0.{last_octet}")
            on_each = [int((await i.health())["sockets"]) for i in processes]
            if len(screens.all) >= 4 and min(on_each) >= 1:
                break
        assert min(on_each) >= 1, f"nginx sent every address to one instance: {on_each}"
        activity = Activity(writer, hospital, seed=5)
        await activity.run(20)
        await all_equal_sql(screens.all, settings.database_url, settings.zone)

        burst = asyncio.create_task(activity.run(120))
        await activity.reached(activity.done + 30)
        await leader.kill()
        await burst

        async def survivor_leads_everyone() -> bool:
            health = await survivor.health()
            return health.get("role") == "leader" and health["sockets"] == len(screens.all)

        await until_true(survivor_leads_everyone, "the survivor leads and serves every screen")
        await all_equal_sql(screens.all, settings.database_url, settings.zone)
        assert_none_applied_twice(screens.all)
        # The survivor took the feed over from the stored position: nothing lost or counted
        # twice in the roll-ups either.
        await assert_rollups_exact(survivor.url, survivor.token, Rows(settings.database_url))
        # The leader's screens came back through nginx, recovering what they missed from the
        # shared history (or, once the survivor led, a fresh snapshot of its epoch).
        moved = [screen for screen in screens.all if screen.era > 1]
        assert len(moved) == on_each[0]
        for screen in moved:
            assert screen.acks[screen.era]["ok"] is True
    finally:
        await screens.close()  # first: nginx waits for open connections when it quits
        await asyncio.to_thread(nginx.stop)
