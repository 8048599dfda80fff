"""The shared cache of a deployment: what a follower serves, from where, and what /health says.

Real PostgreSQL and Redis throughout. The first in-process server to start leads (reads the
feed and writes its values to Redis); the others are followers that read L1 (in-process, 1 s),
then L2 (Redis), then count the rows themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import Connection as RedisConnection

from livedash.cluster.cache import CacheStats, LocalCache
from livedash.cluster.state import (
    CAUSES_TTL_SECONDS,
    DEPARTMENTS_TTL_SECONDS,
    TIER_TTL_SECONDS,
    SharedMetricState,
    causes_key,
    decode,
    encode,
    value_key,
)
from livedash.cluster.view import SharedView
from livedash.metrics.causes import CAUSES_KEPT, Cause, Reason, RowChange
from livedash.metrics.clock import SystemClock
from livedash.metrics.definitions import METRIC_NAMES, METRICS, Tier
from livedash.metrics.engine import MetricEngine, MetricValue
from livedash.metrics.figures import HistoryFigures
from livedash.metrics.pipeline import count_rows
from livedash.realtime.outbox import update_payload
from livedash.settings import Settings
from livedash.store.engine import create_engine, libpq_dsn
from livedash.testing.hospital import sql_now
from livedash.testing.recorder import Recorder
from livedash.testing.servers import RedisServer
from tests.support.live import Connect, LiveServer, Serve
from tests.support.probes import health
from tests.support.writers import Write, register_patient

Values = dict[tuple[str, str | None], dict[str, Any]]


@pytest.fixture
def backend() -> str:
    return "postgres"


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url)
    yield client
    with contextlib.suppress(Exception):
        await client.aclose()


@pytest.fixture
async def paid(hospital: dict[str, int], writer: Write) -> Decimal:
    """A payment today in Cardiology: the money values are exact decimals."""
    now = sql_now()
    bill = await writer(
        "INSERT INTO bills (department_id, amount_cents, created_at, paid_at) VALUES (?, ?, ?, ?)",
        (hospital["CARD"], 123450, now, now),
    )
    await writer(
        "INSERT INTO payments (bill_id, department_id, amount_cents, paid_at) VALUES (?, ?, ?, ?)",
        (bill, hospital["CARD"], 123450, now),
    )
    return Decimal("1234.50")


class LockHolder:
    """The test as a candidate for the leader lock, so no follower takes over the feed."""

    def __init__(self, dsn: str, key: int) -> None:
        self._dsn, self._key = dsn, key
        self._connection: asyncpg.Connection | None = None

    async def take(self) -> None:
        """Wait for the lock (queued before any follower's next try) and keep it."""
        self._connection = await asyncpg.connect(self._dsn)
        await self._connection.execute("SELECT pg_advisory_lock($1)", self._key)

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()


@pytest.fixture
async def lock_holder(settings: Settings) -> AsyncIterator[LockHolder]:
    holder = LockHolder(libpq_dsn(settings.database_url), settings.leader_lock_key)
    yield holder
    await holder.close()


async def leader_and_follower(serve: Serve, token: str) -> tuple[LiveServer, LiveServer]:
    leader = await serve()
    follower = await serve()
    assert (await health(leader.url, token))["role"] == "leader"
    assert (await health(follower.url, token))["role"] == "follower"
    return leader, follower


def by_scope(values: list[dict[str, Any]]) -> Values:
    return {(v["metric"], v["department"]): v for v in values}


async def subscribed(client: Recorder) -> Values:
    """Subscribe to every metric of every department; the snapshot that follows."""
    await client.call("subscribe_metrics", {"metrics": list(METRIC_NAMES)})
    return by_scope((await client.next("metrics_snapshot"))["values"])


async def requested(client: Recorder) -> Values:
    await client.call("request_snapshot", {"metrics": list(METRIC_NAMES)})
    return by_scope((await client.next("metrics_snapshot"))["values"])


async def in_redis(redis: Redis) -> Values:
    """Every value the leader stored, in the form a client receives it."""
    keys = [key async for key in redis.scan_iter(match="livedash:m:*")]
    raws = await redis.mget(keys) if keys else []
    found = [update_payload(decode(raw)) for raw in raws if raw is not None]
    return by_scope(found)


async def counted(settings: Settings) -> dict[tuple[str, str | None], Any]:
    """Every value counted from the rows now, as a client receives it (the oracle)."""
    database = create_engine(settings.database_url)
    try:
        engine = MetricEngine(settings.zone, SystemClock())
        async with database.connect() as connection, connection.begin():
            await count_rows(connection, engine)
        engine.finish_loading(0)
    finally:
        await database.dispose()
    return {
        (value.metric, value.department): update_payload(value)["value"]
        for value in engine.snapshot()
    }


def only(values: Values, field: str) -> dict[tuple[str, str | None], Any]:
    return {key: value[field] for key, value in values.items()}


NOT_COUNTED = {"feed_lag_seconds", *(n for n, d in METRICS.items() if d.tier is Tier.HISTORICAL)}
"""Measured by the feed reader, or read from the roll-ups: not counted from the rows."""


def counted_part(values: dict[tuple[str, str | None], Any]) -> dict[tuple[str, str | None], Any]:
    return {key: value for key, value in values.items() if key[0] not in NOT_COUNTED}


def historical_part(values: Values) -> dict[tuple[str, str | None], Any]:
    return {key: v["value"] for key, v in values.items() if METRICS[key[0]].tier is Tier.HISTORICAL}


# -- a follower reads the leader's values ------------------------------------------------------


async def test_a_follower_serves_the_leaders_values_and_versions_from_redis(
    serve: Serve,
    connect: Connect,
    token: Callable[..., str],
    redis: Redis,
    paid: Decimal,
) -> None:
    bearer = token()  # before the feed starts: its `users` row is no change to it
    leader, follower = await leader_and_follower(serve, bearer)
    on_leader = await subscribed(await connect(leader, bearer))
    on_follower = await subscribed(await connect(follower, bearer))
    stored = await in_redis(redis)

    assert on_follower == on_leader
    assert on_follower == stored
    assert min(only(on_follower, "version").values()) > 0  # the leader's, not counted
    assert on_follower["revenue_today", "CARD"]["value"] == str(paid)
    assert on_follower["patients_total", None]["value"] == 2

    cache = (await health(follower.url, bearer))["cache"]
    assert cache["l2_hits"] >= len(on_follower)
    assert cache.get("database_counts", 0) == 0
    # The subscription asked for values at least as new as the stream: not from L1.
    assert cache.get("l2_misses", 0) == 0

    # A plain snapshot request within L1's second is served from L1, unchanged.
    again = await requested(await connect(follower, bearer))
    assert again == on_follower
    assert (await health(follower.url, bearer))["cache"]["l1_hits"] >= len(on_follower)


async def test_a_follower_counts_the_rows_when_redis_holds_nothing(
    serve: Serve,
    connect: Connect,
    token: Callable[..., str],
    redis: Redis,
    settings: Settings,
    lock_holder: LockHolder,
    writer: Write,
    hospital: dict[str, int],
    paid: Decimal,
) -> None:
    bearer = token()  # before the feed starts: its `users` row is no change to it
    leader, follower = await leader_and_follower(serve, bearer)
    client = await connect(follower, bearer)
    before = await subscribed(client)
    assert before["patients_total", "ED"]["value"] == 1

    # The leader goes and nobody takes over (the test holds the lock): no one writes to Redis.
    waiting = asyncio.create_task(lock_holder.take())
    await leader.stop()
    await waiting
    await redis.flushall()
    await register_patient(writer, hospital["ED"], "while no one reads the feed")

    fallback = await subscribed(client)
    assert set(fallback) == set(before)
    assert set(only(fallback, "version").values()) == {0}
    truth = await counted(settings)
    assert counted_part(only(fallback, "value")) == counted_part(truth)
    assert fallback["patients_total", "ED"]["value"] == 2
    assert fallback["revenue_today", "CARD"]["value"] == str(paid)
    # The historical tier comes from the stored roll-ups, as the leader had it.
    assert historical_part(fallback) == historical_part(before)
    assert fallback["revenue_trend", "CARD"]["value"] == "stable"

    status = await health(follower.url, bearer)
    assert status["role"] == "follower"
    assert status["cache"]["database_counts"] == 1
    assert status["cache"]["l2_misses"] >= len(before)


# -- history: cache-aside ------------------------------------------------------------------------

STORED_HOURS = {
    # Roll-ups as an earlier leader stored them: admissions per hour on a November morning.
    datetime(2026, 11, 19, 7, tzinfo=UTC): 3,
    datetime(2026, 11, 19, 9, tzinfo=UTC): 5,
}


@pytest.fixture
async def stored_history(hospital: dict[str, int], writer: Write) -> dict[str, Any]:
    for hour, amount in STORED_HOURS.items():
        for department in (0, hospital["ED"]):  # 0: the hospital-wide row
            await writer(
                "INSERT INTO metric_rollups (series, department_id, hour_start, amount, weighted, "
                "seconds) VALUES (?, ?, ?, ?, 0, 0)",
                ("admissions", department, hour.strftime("%Y-%m-%d %H:%M:%S"), amount),
            )
    return {
        "metric": "admissions",
        "department": "ED",
        "from": "2026-11-19T06:00:00Z",
        "to": "2026-11-19T11:00:00Z",
    }


async def historical(client: Recorder, request: dict[str, Any]) -> list[dict[str, Any]]:
    answer = await client.call("request_historical", request)
    assert answer == await client.next("historical_data")
    points: list[dict[str, Any]] = answer["points"]
    return points


async def test_history_is_read_from_the_database_once_then_from_the_caches(
    serve: Serve,
    connect: Connect,
    token: Callable[..., str],
    redis: Redis,
    stored_history: dict[str, Any],
) -> None:
    bearer = token()  # before the feed starts: its `users` row is no change to it
    leader, follower = await leader_and_follower(serve, bearer)
    other = await serve()
    assert (await health(other.url, bearer))["role"] == "follower"
    expected = [
        {
            "start": f"2026-11-19T{hour:02d}:00:00Z",
            "value": STORED_HOURS.get(datetime(2026, 11, 19, hour, tzinfo=UTC), 0),
            "peak": None,
        }
        for hour in range(6, 11)
    ]

    client = await connect(follower, bearer)
    first = await historical(client, stored_history)
    assert first == expected
    stats = (await health(follower.url, bearer))["cache"]
    assert stats["database_series"] == 1

    second = await historical(client, stored_history)  # within L1's second
    assert second == first
    after = (await health(follower.url, bearer))["cache"]
    assert after["database_series"] == 1
    assert after["l1_hits"] > stats.get("l1_hits", 0)
    assert after["l2_hits"] == stats.get("l2_hits", 0)  # not even Redis was asked

    # Another instance finds it in Redis, written by the first.
    elsewhere = await historical(await connect(other, bearer), stored_history)
    assert elsewhere == first
    other_stats = (await health(other.url, bearer))["cache"]
    assert other_stats.get("database_series", 0) == 0
    assert other_stats["l2_hits"] >= 1
    assert await redis.ttl(
        "livedash:h:admissions:ED:2026-11-19T06:00:00+00:00:2026-11-19T11:00:00+00:00:hour"
    ) == pytest.approx(TIER_TTL_SECONDS[Tier.HISTORICAL], abs=5)

    # The leader's own answer (from its pipeline, once Redis no longer holds the series).
    await redis.flushall()
    on_leader = await historical(await connect(leader, bearer), stored_history)
    assert on_leader == first
    assert (await health(leader.url, bearer))["cache"]["database_series"] == 1


# -- L1 ------------------------------------------------------------------------------------------


class Ticks:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_l1_entry_lives_max_age_seconds_and_not_longer() -> None:
    ticks = Ticks()
    cache: LocalCache[str] = LocalCache(1.0, clock=ticks)
    cache.put("a", "first")
    ticks.now += 1.0
    assert cache.get("a") == "first"  # exactly max_age old: still served
    ticks.now += 0.001
    assert cache.get("a") is None
    assert len(cache) == 0  # an expired entry is dropped when found
    cache.put("a", "second")
    assert cache.get("a") == "second"
    cache.clear()
    assert cache.get("a") is None


def test_a_full_l1_drops_expired_entries_first_then_the_oldest() -> None:
    ticks = Ticks()
    cache: LocalCache[int] = LocalCache(1.0, max_entries=3, clock=ticks)
    cache.put("old", 1)
    ticks.now += 0.8
    cache.put("b", 2)
    cache.put("c", 3)
    ticks.now += 0.5  # "old" has expired, "b" and "c" have not
    cache.put("d", 4)
    assert [cache.get(k) for k in ("old", "b", "c", "d")] == [None, 2, 3, 4]

    cache.put("b", 20)  # stored again: the newest now, and no room is made for it
    assert [cache.get(k) for k in ("b", "c", "d")] == [20, 3, 4]
    cache.put("e", 5)  # full, nothing expired: the oldest stored ("c") goes
    assert [cache.get(k) for k in ("b", "c", "d", "e")] == [20, None, 4, 5]
    assert len(cache) == 3

    with pytest.raises(ValueError, match="at least one entry"):
        LocalCache(1.0, max_entries=0)


def test_cache_stats_count_per_layer() -> None:
    stats = CacheStats()
    stats.hit("l1", 3)
    stats.miss("l1")
    stats.hit("l2")
    assert stats.as_dict() == {"l1_hits": 3, "l1_misses": 1, "l2_hits": 1}


# -- L2: what Redis holds ------------------------------------------------------------------------

NOW = datetime(2026, 11, 23, 8, 30, 15, 123456, tzinfo=UTC)


def value(metric: str, raw: Any, department: str | None = "ED", version: int = 7) -> MetricValue:
    return MetricValue(
        metric=metric,
        department=department,
        value=raw,
        version=version,
        timestamp=NOW,
        department_id=None if department is None else 3,
    )


@pytest.mark.parametrize(
    "raw",
    [
        Decimal("1234.50"),
        Decimal("0.00"),
        Decimal("-12.30"),
        Decimal("123456789012345.67"),
        0,
        17,
        0.8333,
        1.0,
        "increasing",
        None,
    ],
)
def test_a_value_reads_back_as_it_was_written(raw: Any) -> None:
    written = value("revenue_today", raw)
    read = decode(encode(written))
    assert read == written
    assert type(read.value) is type(raw)
    if isinstance(raw, Decimal):
        assert str(read.value) == str(raw)  # the cents stay: "1234.50", not "1234.5"
    assert decode(encode(value("patients_total", raw, None))) == value("patients_total", raw, None)


@pytest.mark.parametrize("tier", list(Tier))
async def test_each_tier_keeps_its_values_for_its_ttl(redis: Redis, tier: Tier) -> None:
    metric = next(name for name, d in METRICS.items() if d.tier is tier)
    state = SharedMetricState(redis)
    await state.publish([value(metric, 1, version=11), value(metric, 2, None, version=12)])
    for department in ("ED", None):
        ttl = await redis.ttl(value_key(metric, department))
        assert TIER_TTL_SECONDS[tier] - 2 <= ttl <= TIER_TTL_SECONDS[tier]
    assert await redis.ttl("livedash:version") == -1  # the floor never expires
    assert await state.version_floor() == 12

    await state.publish_departments({3: "ED", 4: "CARD"})
    assert await state.departments() == {"ED": 3, "CARD": 4}
    assert await redis.ttl("livedash:departments") >= DEPARTMENTS_TTL_SECONDS - 2


async def test_an_older_version_never_replaces_a_newer_one_in_redis(redis: Redis) -> None:
    state = SharedMetricState(redis)
    newer = value("patients_total", 5, version=1_795_471_770_122_757)
    older = value("patients_total", 4, version=1_795_471_770_122_756)
    await state.publish([newer])
    # The periodic rewrite, with a snapshot taken before `newer`, arrives after it.
    await state.publish([older, value("beds_free", 3, version=1_795_471_770_122_700)])
    stored = await state.read([("patients_total", "ED"), ("beds_free", "ED")])
    assert stored[("patients_total", "ED")] == newer
    assert stored[("beds_free", "ED")].value == 3
    assert await state.version_floor() == newer.version  # exact, and not lowered

    # The same version again (the periodic rewrite) keeps the key alive.
    await redis.expire(value_key("patients_total", "ED"), 1)
    await state.publish([newer])
    assert await redis.ttl(value_key("patients_total", "ED")) > 1

    # Something unreadable under a key is replaced by the next write, and read as a miss.
    await redis.set(value_key("beds_free", "ED"), "not json")
    assert await state.read([("beds_free", "ED")]) == {}
    await state.publish([value("beds_free", 2, version=1)])
    assert (await state.read([("beds_free", "ED")]))[("beds_free", "ED")].value == 2


class CountingConnection(RedisConnection):
    """A connection that counts the requests it sends (a pipeline's commands as one)."""

    requests = 0

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        CountingConnection.requests += 1
        await super().send_packed_command(command, check_health)


def cause(version: int, after: int, department: str = "ICU") -> Cause:
    change = RowChange("patients", "insert", version, NOW.replace(tzinfo=None), department)
    return Cause(
        "patients_total", department, version, NOW, after - 1, after, Reason.ROWS, (change,)
    )


async def test_values_and_their_causes_go_to_redis_in_one_request(
    redis_server: RedisServer,
) -> None:
    pool = ConnectionPool.from_url(redis_server.url, connection_class=CountingConnection)
    client = Redis(connection_pool=pool)
    try:
        state = SharedMetricState(client)
        await state.publish([value("patients_total", 1, "ICU", version=1)], [cause(1, 1)])
        versions = range(2, CAUSES_KEPT + 4)
        CountingConnection.requests = 0
        await state.publish(
            [value("patients_total", versions[-1] + 1, "ICU", version=versions[-1])],
            [cause(version, version) for version in versions]
            + [cause(versions[-1], 9, department="NICU")],
        )
        assert CountingConnection.requests == 1

        kept = await state.causes("patients_total", "ICU")
        assert [c.version for c in kept] == list(versions[::-1][:CAUSES_KEPT])  # newest first
        assert kept[0] == cause(versions[-1], versions[-1])
        assert await state.causes("patients_total", "NICU") == [cause(versions[-1], 9, "NICU")]
        ttl = await client.ttl(causes_key("patients_total", "ICU"))
        assert CAUSES_TTL_SECONDS - 2 <= ttl <= CAUSES_TTL_SECONDS
        stored = await state.read([("patients_total", "ICU")])
        assert stored[("patients_total", "ICU")].version == versions[-1]
        assert await state.version_floor() >= versions[-1]
    finally:
        await client.aclose()


# -- a follower's view, with L1's clock in the test's hand -----------------------------------------


@pytest.fixture
async def follower_view(
    settings: Settings, redis: Redis
) -> AsyncIterator[tuple[SharedView, Ticks]]:
    """A follower's SharedView on the test's database and Redis; no leader runs."""
    database = create_engine(settings.database_url)
    ticks = Ticks()
    view = SharedView(
        database,
        SharedMetricState(redis),
        settings.zone,
        SystemClock(),
        leader_pipeline=lambda: None,
        cache_clock=ticks,
    )
    yield view, ticks
    await database.dispose()


async def leader_values(settings: Settings) -> list[MetricValue]:
    """What a leader that just counted the rows publishes (its versions, not 0)."""
    database = create_engine(settings.database_url)
    try:
        engine = MetricEngine(settings.zone, SystemClock())
        figures = HistoryFigures(None, settings.zone)  # nothing unsaved: all is in the rows
        async with database.connect() as connection, connection.begin():
            await count_rows(connection, engine)
            engine.finish_loading(0)
            engine.set_historical(
                await figures.compute(connection, engine.now(), engine.departments)
            )
        return engine.snapshot()
    finally:
        await database.dispose()


def nonzero(stats: CacheStats) -> dict[str, int]:
    return {name: count for name, count in stats.as_dict().items() if count}


async def test_l1_then_redis_then_the_database_as_each_runs_out(
    follower_view: tuple[SharedView, Ticks],
    settings: Settings,
    redis: Redis,
    hospital: dict[str, int],
    paid: Decimal,
    writer: Write,
) -> None:
    view, ticks = follower_view
    published = await leader_values(settings)
    await SharedMetricState(redis).publish(published)
    departments = [None, "ED", "CARD"]
    wire = {(v.metric, v.department): update_payload(v) for v in published}

    def payloads(values: list[MetricValue]) -> dict[tuple[str, str | None], Any]:
        return {(v.metric, v.department): update_payload(v) for v in values}

    first = payloads(await view.snapshot(METRIC_NAMES, departments))
    assert first == wire
    assert nonzero(view.stats) == {"l1_misses": len(wire), "l2_hits": len(wire)}

    await redis.flushall()
    await register_patient(writer, hospital["ED"], "after the leader's count")
    ticks.now += 0.5
    assert payloads(await view.snapshot(METRIC_NAMES, departments)) == wire  # from L1
    assert nonzero(view.stats)["l1_hits"] == len(wire)

    ticks.now += 0.6  # L1's second has passed; Redis holds nothing
    bursts = await asyncio.gather(*(view.snapshot(METRIC_NAMES, departments) for _ in range(5)))
    stats = nonzero(view.stats)
    assert stats["database_counts"] == 1  # a burst waits for one count
    assert stats["l2_misses"] == 5 * len(wire)
    truth = await counted(settings)
    for values in bursts:
        fallback = payloads(values)
        assert set(fallback) == set(wire)
        assert {v["version"] for v in fallback.values()} == {0}
        assert counted_part(only(fallback, "value")) == counted_part(truth)
        assert historical_part(fallback) == historical_part(wire)
        assert fallback["patients_total", "ED"]["value"] == 2
        assert fallback["patients_total", None]["value"] == 3
        assert fallback["revenue_today", "CARD"]["value"] == str(paid)

    # Counted values stay in L1 for a second, like any other.
    await view.snapshot(METRIC_NAMES, departments)
    assert nonzero(view.stats)["database_counts"] == 1
    # A fresh read skips L1 and asks Redis again; with nothing there, it counts again.
    await view.snapshot(METRIC_NAMES, departments, fresh=True)
    assert nonzero(view.stats)["database_counts"] == 2
    assert nonzero(view.stats)["l1_hits"] == stats["l1_hits"] + len(wire)

    # Departments: the leader's list in Redis, else the database's.
    assert await view.departments() == {"ED": hospital["ED"], "CARD": hospital["CARD"]}


# -- Redis down ----------------------------------------------------------------------------------


async def test_with_redis_gone_a_follower_still_answers_from_the_database(
    serve: Serve,
    connect: Connect,
    token: Callable[..., str],
    redis_server: RedisServer,
    settings: Settings,
    writer: Write,
    hospital: dict[str, int],
    paid: Decimal,
) -> None:
    bearer = token()  # before the feed starts: its `users` row is no change to it
    _leader, follower = await leader_and_follower(serve, bearer)
    client = await connect(follower, bearer)
    before = await subscribed(client)

    redis_server.kill()
    again = await subscribed(await connect(follower, bearer))
    assert set(again) == set(before)
    assert set(only(again, "version").values()) == {0}
    assert counted_part(only(again, "value")) == counted_part(await counted(settings))
    assert historical_part(again) == historical_part(before)
    assert again["revenue_today", "CARD"]["value"] == str(paid)
    # The socket that was there keeps working too.
    assert await requested(client) == again

    status = await health(follower.url, bearer)
    assert status["role"] == "follower"
    assert status["cache"]["l2_errors"] >= 1
    assert status["cache"]["database_counts"] >= 1
    # The operator sees why (the status turns "degraded" once the cache's breaker opens).
    assert status["dependencies"]["cache"]["last_error"]
