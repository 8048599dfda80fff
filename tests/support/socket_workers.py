"""What the socket-worker tests share: the instance's realtime stats awaited, its worker
processes found under it in /proc, and socket.io clients over either transport."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import socketio

from livedash.testing.recorder import Recorder
from tests.support.instances import Instance
from tests.support.polling import WAIT_SECONDS, read_until
from tests.support.writers import Users

POLL_SECONDS = 0.1  # the workers report every second: no need to ask more often

Stats = dict[str, Any]


async def realtime_stats(instance: Instance) -> Stats:
    """This instance's figures from `GET /api/realtime/stats`, as its super_admin reads them."""
    async with httpx.AsyncClient(base_url=instance.url) as http:
        response = await http.get(
            "/api/realtime/stats", headers={"Authorization": f"Bearer {instance.token}"}
        )
    assert response.status_code == 200, response.text
    stats: Stats = response.json()["instance"]
    return stats


async def stats_until(
    instance: Instance, condition: Callable[[Stats], bool], *, within: float = WAIT_SECONDS
) -> Stats:
    """Read the stats until `condition` holds (the workers' figures arrive with their next
    report, announced nowhere); the last read is in the failure's message."""
    return await read_until(
        lambda: realtime_stats(instance),
        condition,
        what="the realtime stats",
        every=POLL_SECONDS,
        within=within,
    )


def workers(stats: Stats) -> Stats:
    """The `socket_workers` figures of the stats (failing, naming what is there, without)."""
    assert "socket_workers" in stats, f"no socket_workers in the realtime stats: {stats}"
    figures: Stats = stats["socket_workers"]
    return figures


def worker_pids(instance: Instance) -> dict[str, int]:
    """The instance's socket worker processes now, by worker name (their parent is it)."""
    assert instance.process is not None
    found: dict[str, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            parent = int(stat.rpartition(")")[2].split()[1])
            arguments = (entry / "cmdline").read_bytes().split(b"\0")
            if parent == instance.process.pid and b"livedash.worker" in arguments:
                name = arguments[arguments.index(b"livedash.worker") + 1].decode()
                found[name] = int(entry.name)
    return found


def running(pid: int) -> bool:
    """Whether process `pid` exists and has not exited (a zombie has)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


class Clients:
    """Opens recorded socket.io clients on an instance; every one is disconnected at the end."""

    def __init__(self, users: Users) -> None:
        self._users = users
        self._opened: list[socketio.AsyncClient] = []
        self._sessions: list[aiohttp.ClientSession] = []

    async def open(
        self,
        instance: Instance,
        token: str,
        *,
        transport: str = "websocket",
        since: dict[str, Any] | None = None,
        reconnect: bool = False,
        wait_auth: bool = True,
        batched: bool = False,
    ) -> Recorder:
        """A client signed in with `token` (and the last position it saw, `since`) over
        `transport`; with `reconnect`, it reconnects on its own at once, as a browser does;
        `batched`, it takes its updates as `dashboard_updates`."""
        await self._users.settled()  # the token's user is in the database before it signs in
        # The client's own HTTP session, closed here: python-socketio leaves the one it makes
        # open when reconnecting is stopped.
        session = aiohttp.ClientSession()
        self._sessions.append(session)
        client = socketio.AsyncClient(
            reconnection=reconnect,
            reconnection_delay=0.1,
            randomization_factor=0,
            http_session=session,
        )
        recorder = Recorder(client)
        self._opened.append(client)
        auth: dict[str, Any] = {"token": token}
        if since is not None:
            auth["since"] = since
        if batched:
            auth["updates"] = "batched"
        await client.connect(instance.url, auth=auth, transports=[transport], wait_timeout=10)
        if wait_auth:
            await recorder.next("authenticated")
        return recorder

    async def close(self) -> None:
        """Disconnect every client (and stop those reconnecting), all at once: a long-polling
        one waits for its pending poll to be answered."""
        await asyncio.gather(
            *(client.shutdown() for client in self._opened), return_exceptions=True
        )
        for session in self._sessions:
            await session.close()


@contextlib.asynccontextmanager
async def clients(users: Users) -> AsyncIterator[Clients]:
    """`Clients` whose tokens' users are in `users`, each disconnected on the way out."""
    opened = Clients(users)
    try:
        yield opened
    finally:
        await opened.close()
