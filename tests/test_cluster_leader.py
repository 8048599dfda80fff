"""The leader election on a real PostgreSQL: one lock holder, and a holder that loses its
lock's connection, however it fails, steps down before it campaigns again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from livedash.cluster.leader import LeaderElection


@pytest.fixture
def backend() -> str:
    return "postgres"


class Candidate:
    """One instance's election, and what it was told."""

    def __init__(self, database_url: str, changed: asyncio.Condition) -> None:
        self.told: list[str] = []
        self.changed = changed
        self.election = LeaderElection(
            database_url,
            4242,
            poll_seconds=0.05,
            on_elected=self._elected,
            on_deposed=self._deposed,
        )

    async def _tell(self, what: str) -> None:
        async with self.changed:
            self.told.append(what)
            self.changed.notify_all()

    async def _elected(self) -> None:
        await self._tell("elected")

    async def _deposed(self, lost: bool) -> None:
        await self._tell("deposed: database lost" if lost else "deposed")

    async def told_at_least(self, count: int) -> list[str]:
        async with asyncio.timeout(10), self.changed:
            await self.changed.wait_for(lambda: len(self.told) >= count)
        return self.told[:count]


@pytest.fixture
async def candidates(database_url: str) -> AsyncIterator[list[Candidate]]:
    changed = asyncio.Condition()  # shared: either candidate's news wakes a waiting test
    made = [Candidate(database_url, changed) for _ in range(2)]
    await made[0].election.__aenter__()
    await made[0].told_at_least(1)  # the first leads, then the second campaigns
    await made[1].election.__aenter__()
    yield made
    for candidate in made:
        await candidate.election.__aexit__(None, None, None)


async def test_one_candidate_leads_and_the_other_takes_over_when_it_stops(
    candidates: list[Candidate],
) -> None:
    first, second = candidates
    assert await first.told_at_least(1) == ["elected"]
    await second.election.decided.wait()
    assert not second.election.leading
    await first.election.__aexit__(None, None, None)
    assert first.told == ["elected", "deposed"]
    assert await second.told_at_least(1) == ["elected"]


async def test_a_leader_whose_connection_fails_in_an_unexpected_way_steps_down(
    candidates: list[Candidate], monkeypatch: pytest.MonkeyPatch
) -> None:
    first = candidates[0]
    real_fetchval = asyncpg.Connection.fetchval
    broken = {"once": True}

    async def fetchval(connection: asyncpg.Connection, *args: Any, **kwargs: Any) -> Any:
        if broken["once"] and connection is first.election._connection:
            broken["once"] = False
            # What asyncpg raised for a connection broken mid-query when PostgreSQL was
            # killed (not an InterfaceError or a PostgresError).
            raise asyncpg.exceptions.InternalClientError(
                "cannot switch to state 15; another operation (2) is in progress"
            )
        return await real_fetchval(connection, *args, **kwargs)

    monkeypatch.setattr(asyncpg.Connection, "fetchval", fetchval)
    assert await first.told_at_least(2) == ["elected", "deposed: database lost"]
    assert not first.election.leading
    # Its connection (and the lock) closed: one of the two leads again, never both.
    async with asyncio.timeout(10), first.changed:
        await first.changed.wait_for(lambda: any(c.election.leading for c in candidates))
    assert [c.election.leading for c in candidates].count(True) == 1, [c.told for c in candidates]
