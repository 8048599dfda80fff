"""The composition root's extension point: a consumer of the metric stream, as alerts,
notifications and reports will be, registered through `create_app(consumers=...)`."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import text

from livedash.metrics.engine import MetricValue
from livedash.services import Services
from livedash.settings import Settings
from livedash.testing.recorder import update_of
from tests.support.live import Connect, LiveServer
from tests.support.probes import services_of
from tests.support.writers import Write, register_patient


class Recording:
    """A consumer that notes what it hears and when it leads."""

    def __init__(self, services: Services, *, broken: bool = False) -> None:
        self.services = services
        self.broken = broken
        self.values: list[MetricValue] = []
        self.heard = asyncio.Event()
        self.leading = asyncio.Event()
        self.stopped = asyncio.Event()
        self.departments: list[str] = []

    async def on_updates(self, values: list[MetricValue]) -> None:
        self.values.extend(values)
        self.heard.set()
        if self.broken:
            raise RuntimeError("a consumer that fails on every batch")

    async def while_leading(self) -> None:
        # What a consumer reaches through the services: the database, here.
        async with self.services.database.connect() as connection:
            rows = await connection.execute(text("SELECT code FROM departments ORDER BY code"))
            self.departments = [row[0] for row in rows]
        self.leading.set()
        try:
            await asyncio.Event().wait()
        finally:
            self.stopped.set()


@pytest.mark.both_backends
async def test_a_registered_consumer_hears_the_stream_and_runs_while_leading(
    backend: str,
    hospital: dict[str, int],
    settings: Settings,
    connect: Connect,
    token: Any,
    writer: Write,
) -> None:
    made: list[Recording] = []

    def build(services: Services) -> Recording:
        made.append(Recording(services))
        return made[-1]

    def broken(services: Services) -> Recording:
        return Recording(services, broken=True)

    server = await LiveServer(settings, consumers=[broken, build]).start()
    try:
        [consumer] = made
        assert consumer.services is services_of(server)
        async with asyncio.timeout(10):
            await consumer.leading.wait()
        assert consumer.departments == ["CARD", "ED"]

        screen = await connect(server, token())
        await screen.call("subscribe_metrics", ["patients_total"])
        await register_patient(writer, hospital["ED"], "heard by the consumer")
        # The broken consumer before it fails on every batch; the screen is served anyway.
        await screen.next("dashboard_update", update_of("patients_total", "ED", 2))
        async with asyncio.timeout(10):
            while not any(
                (v.metric, v.department, v.value) == ("patients_total", "ED", 2)
                for v in consumer.values
            ):
                consumer.heard.clear()
                await consumer.heard.wait()
    finally:
        await server.stop()
    assert consumer.stopped.is_set()  # its task ended with the feed


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_only_the_leader_runs_consumers_and_a_new_leader_takes_them_over(
    backend: str, hospital: dict[str, int], settings: Settings
) -> None:
    quick = settings.model_copy(update={"leader_poll_seconds": 0.2})
    made: list[Recording] = []

    def build(services: Services) -> Recording:
        made.append(Recording(services))
        return made[-1]

    first = await LiveServer(quick, consumers=[build]).start()
    second = await LiveServer(quick, consumers=[build]).start()
    try:
        leader, follower = made
        async with asyncio.timeout(10):
            await leader.leading.wait()
            election = services_of(second).election
            assert election is not None
            await election.decided.wait()
        assert not follower.leading.is_set()
        assert not services_of(second).leading

        await first.stop()
        assert leader.stopped.is_set()
        async with asyncio.timeout(15):
            await follower.leading.wait()
        assert services_of(second).leading
    finally:
        await second.stop()
        await first.stop()
