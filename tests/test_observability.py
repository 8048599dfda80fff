"""Prometheus metrics and the dependencies' circuit breakers, as operators see them."""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import pytest

from livedash.observability.breaker import CircuitBreaker, State
from livedash.observability.logging import ENGINEIO_LOGGER, SOCKETIO_LOGGER, configure_logging
from livedash.testing.recorder import update_of
from livedash.testing.servers import RedisServer
from tests.support import probes
from tests.support.live import Connect, LiveServer
from tests.support.logs import use_test_logging
from tests.support.writers import Write, register_patient


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_failures_tries_once_half_open_and_closes_on_success() -> None:
    clock = FakeClock()
    changes: list[State] = []
    breaker = CircuitBreaker("cache", failure_threshold=2, reset_timeout=5.0, clock=clock)
    breaker.on_change(lambda b: changes.append(b.state))
    breaker.failure(ConnectionError("refused"))
    assert breaker.state is State.CLOSED
    assert breaker.allow()
    breaker.failure(ConnectionError("refused"))
    assert breaker.state is State.OPEN
    assert not breaker.allow()  # fails fast, no call made
    clock.now = 5.0
    assert breaker.state is State.HALF_OPEN
    assert breaker.allow()
    assert not breaker.allow()  # one trial at a time
    breaker.failure("still refused")
    assert breaker.state is State.OPEN
    clock.now = 10.0
    assert breaker.allow()
    breaker.success()
    assert breaker.state is State.CLOSED
    assert changes == [State.OPEN, State.CLOSED]
    assert breaker.last_error is None


def test_a_lost_write_trips_the_breaker_open_at_once() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("cache", failure_threshold=3, reset_timeout=5.0, clock=clock)
    breaker.trip(ConnectionError("publish given up"))
    assert breaker.state is State.OPEN
    assert breaker.last_error == "publish given up"
    clock.now = 5.0
    assert breaker.allow()
    breaker.success()
    assert breaker.state is State.CLOSED
    breaker.failure("slow")  # an ordinary failure counts from zero again
    assert breaker.state is State.CLOSED


async def _metrics(server: LiveServer) -> str:
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


async def test_metrics_show_the_instance_feed_and_fan_out(
    hospital: dict[str, int], server: LiveServer, connect: Connect, token: Any, writer: Write
) -> None:
    client = await connect(server, token())
    await client.call("subscribe_metrics", {"metrics": ["patients_total"]})
    await register_patient(writer, hospital["ED"], "counted")
    await client.next("dashboard_update", update_of("patients_total", "ED", 2))
    text = await _metrics(server)
    assert 'livedash_circuit_breaker_state{dependency="database"} 0.0' in text
    assert "livedash_sockets 1.0" in text
    assert "livedash_leader 1.0" in text
    assert "livedash_feed_last_change_timestamp_seconds" in text
    sent = next(
        line
        for line in text.splitlines()
        if line.startswith('livedash_updates_total{result="sent"}')
    )
    assert float(sent.split()[-1]) > 0


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_a_redis_outage_opens_the_cache_breaker_and_its_return_closes_it(
    hospital: dict[str, int],
    server: LiveServer,
    connect: Connect,
    token: Any,
    redis_server: RedisServer,
) -> None:
    client = await connect(server, token())
    assert (await client.next("connection_status"))["status"] == "connected"
    redis_server.kill()
    down = await client.next("connection_status", lambda s: s["status"] == "degraded", within=15)
    assert down["degraded"] == ["cache"]
    assert down["reasons"]["cache"]
    text = await _metrics(server)
    assert 'livedash_circuit_breaker_state{dependency="cache"} 2.0' in text
    health = await probes.health(server.url, token())
    assert health["dependencies"]["cache"]["state"] == "open"
    assert health["status"] == "degraded"

    redis_server.start()
    await client.next("connection_status", lambda s: s["status"] == "connected", within=15)
    assert 'livedash_circuit_breaker_state{dependency="cache"} 0.0' in await _metrics(server)


def test_socket_library_logs_go_through_structlog_and_only_from_errors_up(
    capsys: pytest.CaptureFixture[str],
) -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    levels = {name: logging.getLogger(name).level for name in (SOCKETIO_LOGGER, ENGINEIO_LOGGER)}
    try:
        configure_logging("info", json=True)
        engineio = logging.getLogger(ENGINEIO_LOGGER)
        engineio.warning("Method PUT not supported")
        engineio.error("post request handler error")
        logging.getLogger(SOCKETIO_LOGGER).warning("Cannot receive from redis")
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        use_test_logging()
    assert [(line["event"], line["level"], line["logger"]) for line in lines] == [
        ("post request handler error", "error", ENGINEIO_LOGGER),
        ("Cannot receive from redis", "warning", SOCKETIO_LOGGER),
    ]
