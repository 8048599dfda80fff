"""Readiness's verdict is that of the newest measurement, whatever order measurements end in.

A measurement started before the feed did (the background refresh, at start) can end after
one started once it runs (the composition root's first refresh): its "the change feed is not
running" then replaced the newer verdict, and a freshly started instance said it was not ready
for a whole probe interval (seen as a failing health test on a loaded machine).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from livedash.observability.readiness import Check, Probe, Readiness


class Feed:
    """A probe of a feed that is not running until the test says so; with `held`, each
    measurement waits until the test ends it (`end(n)`, n from 0)."""

    def __init__(self, *, held: bool = False) -> None:
        self.running = False
        self.held = held
        self.waiting: list[asyncio.Event] = []
        self.started = asyncio.Condition()

    async def measure(self) -> Sequence[Check]:
        running = self.running  # as when the measurement began
        if self.held:
            release = asyncio.Event()
            async with self.started:
                self.waiting.append(release)
                self.started.notify_all()
            await release.wait()
        return [Check("feed", running, "reading" if running else "the change feed is not running")]

    async def measuring(self, count: int) -> None:
        async with self.started:
            await self.started.wait_for(lambda: len(self.waiting) >= count)

    def end(self, number: int) -> None:
        self.waiting[number].set()


async def test_an_older_measurement_that_ends_last_does_not_replace_a_newer_verdict() -> None:
    feed = Feed(held=True)
    readiness = Readiness([], [Probe(("feed",), feed.measure)], interval=3600)
    before_start = asyncio.create_task(readiness.refresh())
    await feed.measuring(1)
    feed.running = True
    after_start = asyncio.create_task(readiness.refresh())
    await feed.measuring(2)

    feed.end(1)
    await after_start
    assert readiness.ready
    feed.end(0)
    await before_start  # began before the feed ran; ends last
    report = readiness.report()
    assert report.ready, report.as_dict(full=True)
    assert report.failing == []


async def test_each_newer_measurement_still_replaces_the_one_before() -> None:
    feed = Feed()
    readiness = Readiness([], [Probe(("feed",), feed.measure)], interval=3600)
    await readiness.refresh()
    assert readiness.report().failing == ["feed"]
    feed.running = True
    await readiness.refresh()
    assert readiness.ready
    feed.running = False
    await readiness.refresh()
    assert not readiness.ready
