"""A wall of 100 screens sharing one account comes back after a restart, and is not refused.

The service runs in its own process with its default limits; the screens are the reference
recovery client (`livedash.testing.screen.Screen`), each doing what a wall's page does on
every sign-in: subscribe (with the last position seen), read two week-long trend charts and
one REST list. They all reconnect within a fraction of a second of the restart: every one
signs in again, is answered with a fresh snapshot, and nothing is refused. One socket of the
same account that floods the service is still limited, and the wall does not notice.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from livedash.errors import RateLimited
from livedash.realtime.limiter import SocketLimiter
from livedash.realtime.schemas import ErrorPayload
from livedash.settings import Settings
from livedash.store.models import Role
from livedash.testing.recorder import update_of
from livedash.testing.screen import Screen
from tests.support.alerting import bearer
from tests.support.instances import Instance
from tests.support.live import Connect
from tests.support.writers import Write, register_patient

WALL = 100
SHOWN = ["patients_total", "patients_waiting", "beds_occupied", "beds_free", "staff_on_duty"]
BACK_SECONDS = 60.0  # for the whole wall to be answered again after the restart


class WallScreen(Screen):
    """A wall's page, left open: on every sign-in it subscribes (as `Screen` does) and reads
    its trend charts, whose answers are kept; it connects again after the service closed its
    session (as the restarting instance does while it drains)."""

    def __init__(self, url: str, token: str, trends: Sequence[dict[str, Any]]) -> None:
        super().__init__(url, token, metrics=SHOWN, persistent=True)
        self.trends = list(trends)
        self.trend_answers: list[Any] = []

    async def _on_authenticated(self, data: Any) -> None:
        await super()._on_authenticated(data)
        for asked in self.trends:
            await self.client.emit("request_historical", asked, callback=self._on_trend)

    async def _on_trend(self, *answer: Any) -> None:
        async with self._changed:
            self.trend_answers.append(answer[0] if answer else None)
            self._changed.notify_all()

    def refusals(self) -> list[str]:
        """Everything this screen was refused, as counted; but being asked to connect again
        while the instance drains, which is how a restart begins."""
        return [
            kind
            for kind in self.counts
            if kind == "subscribe_refused"
            or (kind.startswith("error") and not kind.endswith(": draining"))
        ]


def week_by_hour(settings: Settings, department: str) -> list[dict[str, Any]]:
    """Two trend charts of the last seven days by hour: 168 hours of history budget each."""
    end = datetime.now(settings.zone).replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(days=7)
    return [
        {
            "metric": series,
            "department": department,
            "from": start.isoformat(),
            "to": end.isoformat(),
        }
        for series in ("admissions", "emergency_arrivals")
    ]


@pytest.fixture
async def service(
    settings: Settings, tmp_path: Path, hospital: dict[str, int], token: Callable[..., str]
) -> AsyncIterator[Instance]:
    """`livedash serve` with the default limits, in its own process (the same port on
    restart)."""
    running = await Instance(settings, tmp_path / "service.log", token()).start()
    yield running
    await running.stop()


@pytest.fixture
async def wall() -> AsyncIterator[list[WallScreen]]:
    screens: list[WallScreen] = []
    yield screens
    await asyncio.gather(*(screen.close() for screen in screens))


def answered_since(screen: WallScreen, era: int) -> bool:
    """A subscription after `era` was answered (or refused), with its trends."""
    later = [ack for number, ack in screen.acks.items() if number > era]
    return bool(later) and (later[-1].get("ok") is not True or len(screen.trend_answers) >= 4)


@pytest.mark.both_backends
async def test_a_wall_on_one_account_comes_back_after_a_restart_and_is_not_refused(
    service: Instance,
    settings: Settings,
    hospital: dict[str, int],
    token: Callable[..., str],
    connect: Connect,
    writer: Write,
    wall: list[WallScreen],
) -> None:
    account = token(Role.VIEWER, ("ED", "CARD"), sub="wall")
    trends = week_by_hour(settings, "ED")
    wall += [WallScreen(service.url, account, trends) for _ in range(WALL)]
    gate = asyncio.Semaphore(20)

    async def open_one(screen: WallScreen) -> None:
        async with gate:
            await screen.open()

    await asyncio.gather(*(open_one(screen) for screen in wall))
    async with httpx.AsyncClient(base_url=service.url) as http:

        async def read_departments() -> int:
            return (await http.get("/api/departments", headers=bearer(account))).status_code

        assert set(await asyncio.gather(*(read_departments() for _ in wall))) == {200}

        # The restart: every screen loses its socket and reconnects by itself, at once.
        eras = [screen.era for screen in wall]
        await service.stop()
        await service.start()
        for screen, era in zip(wall, eras, strict=True):
            await screen.until(lambda s=screen, e=era: answered_since(s, e), within=BACK_SECONDS)  # type: ignore[misc]
        statuses = await asyncio.gather(*(read_departments() for _ in wall))

    for screen, era in zip(wall, eras, strict=True):
        assert screen.refusals() == [], (screen.counts, screen.received("error"))
        ack = screen.acks[max(screen.acks)]
        assert ack["ok"] is True, ack
        assert ack["recovered"] is False, ack  # a new epoch: a snapshot
        assert any(number > era and s["recovered"] is False for number, s in screen.snapshots)
        assert all("points" in answer for answer in screen.trend_answers), screen.trend_answers
        assert len(screen.trend_answers) >= 4  # two charts on each sign-in, two sign-ins
    assert set(statuses) == {200}

    # Live again: a change reaches every screen.
    await register_patient(writer, hospital["ED"], "after the restart")
    for screen in wall:
        await screen.arrives("dashboard_update", update_of("patients_total", "ED", 2), after=0)

    # One socket of the same account floods the service: it alone is refused, per socket.
    abuser = await connect(service, account)
    flood = await asyncio.gather(
        *(abuser.call("request_snapshot", {"metrics": ["beds_free"]}) for _ in range(40))
    )
    refused = [ErrorPayload.model_validate(a) for a in flood if a.get("ok") is False]
    assert len(refused) >= 25, flood
    assert {(r.code, r.details["per"]) for r in refused} == {("rate_limited", "socket")}
    assert all(r.retry_after is not None and 0 < r.retry_after <= 60 for r in refused)
    await register_patient(writer, hospital["ED"], "after the flood")
    for screen in wall:
        await screen.arrives("dashboard_update", update_of("patients_total", "ED", 3), after=0)
        assert screen.refusals() == [], (screen.counts, screen.received("error"))
    answer = await wall[0].call("request_snapshot", {"metrics": ["patients_total"]})
    assert answer["values"], answer


async def test_a_users_budget_grows_with_its_sockets_and_each_socket_keeps_its_own(
    settings: Settings,
) -> None:
    limiter = SocketLimiter(
        settings.model_copy(
            update={
                "rate_limit_socket": "5/minute",
                "rate_limit_user": "2/minute",
                "rate_limit_user_per_socket": "3/minute",
            }
        )
    )
    try:
        # Two sockets of one user: 2 + 2 x 3 events in all, each socket at most 5.
        sent = {"s1": 0, "s2": 0}
        for sid in ["s1"] * 5 + ["s2"] * 3:
            await limiter.event(sid, "wall")
            sent[sid] += 1
        with pytest.raises(RateLimited) as on_socket:
            await limiter.event("s1", "wall")
        assert on_socket.value.details["per"] == "socket"
        with pytest.raises(RateLimited) as on_user:
            await limiter.event("s2", "wall")
        assert on_user.value.details["per"] == "user"
        # A third socket adds its share; gone, it takes it back.
        for _ in range(3):
            await limiter.event("s3", "wall")
        limiter.forget("s3")
        assert limiter.sockets_of("wall") == 2
        with pytest.raises(RateLimited):
            await limiter.event("s2", "wall")
        # Another user is not affected; an anonymous socket counts against itself only.
        await limiter.event("s4", "other")
        await limiter.event("s5", None)
        assert limiter.sockets_of("other") == 1
    finally:
        with contextlib.suppress(Exception):
            await limiter.aclose()
