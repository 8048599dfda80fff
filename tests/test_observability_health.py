"""Liveness and readiness as an orchestrator and an operator see them: `/health/live`,
`/health/ready` check by check, the feed's lag, and the hospital's main application polled.

Dependencies are stopped for real (Redis killed, a PostgreSQL server of the test's own killed,
the feed held by a consumer that does not return, a main application that answers 500 or
hangs); each change of state is awaited by asking the endpoint until a deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from livedash.auth.tokens import issue_token
from livedash.metrics.engine import MetricValue
from livedash.services import Services
from livedash.settings import Settings
from livedash.store.migrate import upgrade_async
from livedash.store.models import Role
from livedash.testing.recorder import Recorder
from livedash.testing.servers import PostgresServer, RedisServer
from tests.support.browser import Sign
from tests.support.live import Connect, LiveServer, Serve
from tests.support.main_app import MainApp
from tests.support.prometheus import scrape
from tests.support.writers import Users, Write, register_patient

CHANGE_SECONDS = 20.0  # at most this long for a dependency's loss (or return) to show
# Generous: while the database is down, every failing task logs a traceback, and the test
# run's logging (rich, with locals) holds the event loop for seconds at a time.
REQUEST_SECONDS = 30.0


async def ready(url: str, token: str | None = None) -> tuple[int, dict[str, Any]]:
    """`/health/ready`: its status code and body (with a token: the full one)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=url, timeout=REQUEST_SECONDS) as http:
        response = await http.get("/health/ready", headers=headers)
    body: dict[str, Any] = response.json()
    return response.status_code, body


async def until(
    ask: Callable[[], Awaitable[tuple[int, dict[str, Any]]]],
    wanted: Callable[[int, dict[str, Any]], bool],
    *,
    within: float = CHANGE_SECONDS,
) -> dict[str, Any]:
    """Ask until the answer is `wanted`; the body of that answer."""
    deadline = time.monotonic() + within
    while True:
        code, body = await ask()
        if wanted(code, body):
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"still {code} after {within:g} s: {body}")
        await asyncio.sleep(0.05)


# -- healthy ----------------------------------------------------------------------------------


@pytest.mark.both_backends
async def test_live_and_ready_answer_with_every_check_when_healthy(
    backend: str, hospital: dict[str, int], server: LiveServer, sign: Sign
) -> None:
    async with httpx.AsyncClient(base_url=server.url) as http:
        live = await http.get("/health/live")
    assert (live.status_code, live.json()) == (200, {"status": "alive"})

    expected = {"database", "feed", "job_queue", "memory", "connections"}
    if backend == "postgres":
        expected |= {"redis", "replication_slot"}
    body = await until(lambda: ready(server.url), lambda code, _: code == 200)
    assert body["status"] == "ready"
    assert body["failing"] == []
    assert set(body["checks"]) == expected
    # Anyone learns the verdicts; not the reasons or figures (they tell how busy it is).
    assert all(set(check) == {"ok", "required"} for check in body["checks"].values()), body

    code, full = await ready(server.url, await sign())
    assert code == 200
    checks = full["checks"]
    assert all(check["ok"] and check["reason"] for check in checks.values()), checks
    assert checks["feed"]["role"] == "leader"
    assert checks["feed"]["lag_seconds"] < 30
    assert checks["connections"]["limit"] == server.settings.max_connections
    assert checks["memory"]["rss_bytes"] > 0
    assert full["instance"]["role"] == "leader"
    if backend == "postgres":
        assert checks["replication_slot"]["wal_status"] in ("reserved", "extended")
        assert checks["feed"]["lag_bytes"] >= 0
    else:
        assert checks["feed"]["pending_changes"] == 0

    code, refused = await ready(server.url, await sign(Role.VIEWER))
    assert code == 403, refused

    scraped = await scrape(server.url)
    assert scraped.get("livedash_ready") == 1.0
    assert scraped.get("livedash_feed_lag_seconds") is not None
    assert scraped.get("livedash_feed_position") is not None
    if backend == "postgres":
        assert scraped.get("livedash_feed_lag_bytes") is not None
    else:
        assert scraped.get("livedash_feed_pending_changes") == 0.0
    assert scraped.get("livedash_upstream_up") is None  # no main application configured


# -- Redis ------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_not_ready_while_redis_is_down_and_ready_once_it_is_back(
    hospital: dict[str, int],
    server: LiveServer,
    token: Callable[..., str],
    redis_server: RedisServer,
) -> None:
    operator = token()
    await until(lambda: ready(server.url), lambda code, _: code == 200)

    await asyncio.to_thread(redis_server.kill)
    down = await until(lambda: ready(server.url), lambda code, _: code == 503)
    assert down["status"] == "not_ready"
    assert down["failing"] == ["redis"], down
    code, full = await ready(server.url, operator)
    assert code == 503
    assert "Redis" in full["checks"]["redis"]["reason"], full["checks"]["redis"]
    assert full["checks"]["database"]["ok"] is True
    assert (await scrape(server.url)).get("livedash_ready") == 0.0

    await asyncio.to_thread(redis_server.start)
    back = await until(lambda: ready(server.url), lambda code, _: code == 200)
    assert back["failing"] == []


# -- the database -----------------------------------------------------------------------------


async def test_not_ready_while_the_database_is_down_and_ready_once_it_is_back(
    own_postgres: PostgresServer, redis_server: RedisServer, tmp_path: Path
) -> None:
    url = await own_postgres.create_database("hospital")
    await upgrade_async(url)
    no_rules = tmp_path / "no-alert-rules.yaml"
    no_rules.write_text("rules: []\n")
    settings = Settings(
        database_url=url,
        redis_url=redis_server.url,
        feed_slot="slot_ready",
        alert_rules_file=no_rules,
        jwt_secret="test-secret-" + "x" * 64,
        jwt_secret_file=tmp_path / "unused-secret",
        leader_poll_seconds=0.2,
        ready_probe_seconds=0.2,
        _env_file=None,  # type: ignore[call-arg]
    )
    users = Users(own_postgres.dsn("hospital"))
    users.save("ops", Role.SUPER_ADMIN, ())
    users.close()
    operator = issue_token(settings, "ops", Role.SUPER_ADMIN, ())
    server = await LiveServer(settings).start()
    try:
        await until(lambda: ready(server.url), lambda code, _: code == 200)

        await asyncio.to_thread(own_postgres.kill)
        down = await until(
            lambda: ready(server.url),
            lambda code, body: code == 503 and "database" in body["failing"],
        )
        # What reads the database cannot be measured either; Redis is not blamed.
        assert set(down["failing"]) <= {"database", "job_queue", "replication_slot"}, down

        await asyncio.to_thread(own_postgres.start)
        await until(lambda: ready(server.url), lambda code, _: code == 200)
        # Back as the leader, reading the feed again.
        code, full = await ready(server.url, operator)
        assert code == 200, full
        assert full["checks"]["database"]["ok"] is True
    finally:
        await server.stop()


# -- the feed's lag ---------------------------------------------------------------------------


class Holding:
    """A consumer of the metric stream that, once armed, does not return: the feed waits."""

    def __init__(self) -> None:
        self.armed = False
        self.held = asyncio.Event()
        self.release = asyncio.Event()

    async def on_updates(self, values: list[MetricValue]) -> None:
        if self.armed:
            self.held.set()
            await self.release.wait()

    async def while_leading(self) -> None:
        await asyncio.Event().wait()


async def test_a_feed_behind_its_bound_makes_the_instance_not_ready_until_it_catches_up(
    hospital: dict[str, int], settings: Settings, token: Callable[..., str], writer: Write
) -> None:
    holding = Holding()

    def build(_services: Services) -> Holding:
        return holding

    bounded = settings.model_copy(
        update={"ready_max_feed_lag_seconds": 0.5, "ready_probe_seconds": 0.1}
    )
    operator = token()
    server = await LiveServer(bounded, consumers=[build]).start()
    try:
        await until(lambda: ready(server.url), lambda code, _: code == 200)
        holding.armed = True
        await register_patient(writer, hospital["ED"], "held in the feed")
        async with asyncio.timeout(10):
            await holding.held.wait()
        # Counted, but not past the consumer: what comes next waits in the change log.
        await register_patient(writer, hospital["ED"], "behind the first")

        down = await until(lambda: ready(server.url), lambda code, _: code == 503)
        assert down["failing"] == ["feed"], down
        code, full = await ready(server.url, operator)
        feed = full["checks"]["feed"]
        assert code == 503
        assert feed["lag_seconds"] > 0.5, feed
        assert feed["pending_changes"] >= 1, feed
        assert "over the 0.5 s bound" in feed["reason"], feed
        scraped = await scrape(server.url)
        assert scraped.get("livedash_ready") == 0.0
        assert (scraped.get("livedash_feed_lag_seconds") or 0) > 0.5
        assert (scraped.get("livedash_feed_pending_changes") or 0) >= 1

        holding.armed = False
        holding.release.set()
        await until(lambda: ready(server.url), lambda code, _: code == 200)
        code, full = await ready(server.url, operator)
        assert full["checks"]["feed"]["lag_seconds"] == 0
        assert full["checks"]["feed"]["pending_changes"] == 0
    finally:
        holding.release.set()
        await server.stop()


# -- the main application ---------------------------------------------------------------------


def shown(client: Recorder, metric: str) -> Any:
    """The hospital-wide value of `metric` the client was last sent."""
    value = None
    for event, data in client.events:
        values = data["values"] if event == "metrics_snapshot" else [data]
        if event in ("metrics_snapshot", "dashboard_update"):
            for item in values:
                if item["metric"] == metric and item["department"] is None:
                    value = item["value"]
    return value


async def until_shown(client: Recorder, metric: str, value: Any) -> None:
    deadline = time.monotonic() + CHANGE_SECONDS
    while shown(client, metric) != value:
        assert time.monotonic() < deadline, f"{metric} still {shown(client, metric)}"
        await asyncio.sleep(0.05)


async def test_the_main_application_is_polled_up_and_down_without_touching_readiness(
    hospital: dict[str, int],
    settings: Settings,
    serve: Serve,
    connect: Connect,
    token: Callable[..., str],
    main_app: MainApp,
) -> None:
    timeout = 2.0
    server = await serve(
        settings.model_copy(
            update={
                "main_app_health_url": main_app.url,
                "main_app_poll_seconds": 0.1,
                "main_app_timeout_seconds": timeout,
            }
        )
    )
    operator = token()

    async def main_app_check() -> tuple[int, dict[str, Any]]:
        code, body = await ready(server.url, operator)
        return code, body["checks"]["main_app"]

    up = await until(main_app_check, lambda _, check: check["up"] is True)
    assert up["ok"] is True
    assert up["required"] is False
    screen = await connect(server, operator)
    await screen.call("subscribe_metrics", {"metrics": ["main_app_up"]})
    await until_shown(screen, "main_app_up", 1)

    main_app.mode = "error"
    down = await until(main_app_check, lambda _, check: check["up"] is False)
    assert down["reason"] == "answered HTTP 500", down
    assert "never makes livedash not ready" in down["note"]
    code, body = await ready(server.url)
    assert (code, body["status"], body["failing"]) == (200, "ready", [])
    assert body["checks"]["main_app"] == {"ok": False, "required": False}
    await until_shown(screen, "main_app_up", 0)
    assert (await scrape(server.url)).get("livedash_upstream_up") == 0.0

    main_app.mode = "ok"
    await until(main_app_check, lambda _, check: check["up"] is True)
    await until_shown(screen, "main_app_up", 1)
    assert (await scrape(server.url)).get("livedash_upstream_up") == 1.0

    # Hanging: each poll gives up after the timeout, then the breaker holds the polls back.
    main_app.mode = "hang"
    hung = await until(
        main_app_check,
        lambda _, check: check["up"] is False and check["breaker"]["state"] != "closed",
    )
    assert hung["breaker"]["down_since"] is not None, hung
    assert f"no answer within {timeout:g} s" in hung["reason"], hung
    await until_shown(screen, "main_app_up", 0)
    started = time.monotonic()
    code, body = await ready(server.url)
    assert time.monotonic() - started < timeout / 2, "a request waited for the main application"
    assert (code, body["status"]) == (200, "ready")
