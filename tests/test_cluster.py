"""Several instances behind a real nginx (deploy/nginx.conf) behave as one service.

Real processes throughout: PostgreSQL with a logical slot, Redis, two `livedash serve`
processes and nginx in front. nginx pins a client by its full address, so clients bind to
different loopback addresses (127.0.0.x) to land on different instances.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import socketio

from livedash.settings import Settings
from livedash.testing.recorder import Recorder, update_of
from livedash.testing.servers import NginxServer, RedisServer
from tests.support.instances import Instance
from tests.support.writers import Write, register_patient


@pytest.fixture
def backend() -> str:
    return "postgres"


class Cluster:
    def __init__(self, instances: list[Instance], nginx: NginxServer) -> None:
        self.instances = instances
        self.nginx = nginx
        self._sessions: list[aiohttp.ClientSession] = []
        self._clients: list[socketio.AsyncClient] = []

    async def leader(self) -> Instance:
        for instance in self.instances:
            alive = instance.process is not None and instance.process.returncode is None
            if alive and (await instance.health()).get("role") == "leader":
                return instance
        raise AssertionError("no instance leads")

    async def connect(self, address: str, token: str, transport: str) -> Recorder:
        """A client from `address`, through nginx only."""
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(address, 0)))
        self._sessions.append(session)
        client = socketio.AsyncClient(reconnection=False, http_session=session)
        self._clients.append(client)
        recorder = Recorder(client)
        await client.connect(
            self.nginx.url, auth={"token": token}, transports=[transport], wait_timeout=10
        )
        await recorder.next("authenticated")
        return recorder

    async def sockets(self) -> list[int]:
        return [int((await i.health()).get("sockets", 0)) for i in self.instances]

    async def close(self) -> None:
        for client in self._clients:
            with contextlib.suppress(Exception):
                await client.disconnect()
        for session in self._sessions:
            await session.close()


@pytest.fixture
async def cluster(two_instances: list[Instance], tmp_path: Path) -> AsyncIterator[Cluster]:
    nginx = NginxServer(tmp_path / "nginx", [i.port for i in two_instances]).start()
    made: Cluster | None = None
    try:
        made = Cluster(two_instances, nginx)
        yield made
    finally:
        if made is not None:
            await made.close()
        nginx.stop()


async def _one_client_on_each(
    cluster: Cluster, token: Callable[..., str]
) -> tuple[Recorder, Recorder]:
    """A long-polling client on one instance and a WebSocket client on the other."""
    polling = await cluster.connect("127.0.0.2", token(), "polling")
    first = await cluster.sockets()
    assert sorted(first) == [0, 1]
    for last_octet in range(3, 60):
        websocket = await cluster.connect(f"127.0.0.{last_octet}", token(), "websocket")
        if await cluster.sockets() == [1, 1]:
            return polling, websocket
        await websocket.client.disconnect()
        await asyncio.wait_for(websocket.disconnected.wait(), 10)
    raise AssertionError("nginx sent every address to the same instance")


async def test_one_write_reaches_clients_of_both_instances_with_one_version(
    cluster: Cluster, token: Callable[..., str], writer: Write, hospital: dict[str, int]
) -> None:
    polling, websocket = await _one_client_on_each(cluster, token)
    for client in (polling, websocket):
        await client.call("subscribe_metrics", {"metrics": ["patients_total"]})
        snapshot = await client.next("metrics_snapshot")
        values = {(v["metric"], v["department"]): v["value"] for v in snapshot["values"]}
        assert values["patients_total", "ED"] == 1

    # Many polling requests of one session all reached the same instance (or the session
    # would have been refused as unknown): the pinning works for long-polling.
    await register_patient(writer, hospital["ED"], "through nginx")
    first = await polling.next("dashboard_update", update_of("patients_total", "ED", 2))
    second = await websocket.next("dashboard_update", update_of("patients_total", "ED", 2))
    assert first["version"] == second["version"]
    assert first == second

    roles = sorted([(await i.health())["role"] for i in cluster.instances])
    assert roles == ["follower", "leader"]


async def test_the_survivor_takes_over_the_feed_when_the_leader_dies(
    cluster: Cluster, token: Callable[..., str], writer: Write, hospital: dict[str, int]
) -> None:
    leader = await cluster.leader()
    survivor = next(i for i in cluster.instances if i is not leader)
    client: Recorder | None = None
    for last_octet in range(2, 60):
        candidate = await cluster.connect(f"127.0.0.{last_octet}", token(), "websocket")
        if (await survivor.health())["sockets"] == 1:
            client = candidate
            break
        await candidate.client.disconnect()
        await asyncio.wait_for(candidate.disconnected.wait(), 10)
    assert client is not None, "no address reached the follower"
    await client.call("subscribe_metrics", {"metrics": ["patients_total"]})
    await client.next("metrics_snapshot")

    await register_patient(writer, hospital["ED"], "before the crash")
    before = await client.next("dashboard_update", update_of("patients_total", "ED", 2))

    await leader.kill()
    # Written while no instance reads the feed: the slot keeps them for the next leader.
    for number in range(5):
        await register_patient(writer, hospital["CARD"], f"during the failover {number}")
    await register_patient(writer, hospital["ED"], "after the crash")

    after = await client.next("dashboard_update", update_of("patients_total", "ED", 3), within=30)
    cardiology = await client.next(
        "dashboard_update", update_of("patients_total", "CARD", 6), within=30
    )
    hospital_wide = await client.next(
        "dashboard_update", update_of("patients_total", None, 9), within=30
    )
    assert after["version"] > before["version"]
    assert cardiology["version"] > before["version"]
    assert hospital_wide["value"] == 9
    # The values above are published while the new leader finishes starting; its /health
    # (another process: no event to await) reports the slot once it has.
    async with asyncio.timeout(10):
        while "slot" not in (health := await survivor.health()):  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    assert health["role"] == "leader"
    assert health["slot"]["exists"] is True


async def test_rate_limits_count_across_instances_and_fail_open_without_redis(
    settings: Settings, serve: Any, token: Callable[..., str], redis_server: RedisServer
) -> None:
    limited = settings.model_copy(update={"rate_limit_rest": "3/minute"})
    first, second = await serve(limited), await serve(limited)
    headers = {"Authorization": f"Bearer {token()}"}
    async with aiohttp.ClientSession() as http:
        statuses = []
        for server in (first, second, first, second):
            async with http.get(server.url + "/api/metrics", headers=headers) as response:
                statuses.append(response.status)
        # The user's quota is one, wherever the requests land.
        assert statuses == [200, 200, 200, 429]

        redis_server.kill()
        async with http.get(second.url + "/api/metrics", headers=headers) as response:
            # The shared count is gone with Redis: the request is let through, not refused.
            assert response.status == 200
