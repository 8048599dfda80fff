"""Many reference screens (`livedash.testing.screen.Screen`), spread over worker processes.

Each screen is persistent (it keeps trying as a page left open would), records nothing but
what its figures need, and connects through nginx from its own loopback address. The bench
drives them with orders: send one `away` for a while, bring every absent one back, ask how
many are subscribed, and at the end collect each one's `summary`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import aiohttp

from livedash.testing.processes import WorkerProcesses
from livedash.testing.screen import BROWSER, Rules, Screen
from livedash.testing.servers import loopback_address

CONNECT_CONCURRENCY = 10
ANSWERS_SECONDS = 60.0
"""How long every screen of a process has, after connecting, for its first answer."""
STOP_SECONDS = 15.0
CLIENT_ADDRESSES = 200

Faults = list[tuple[float, float | None]]
"""(fault at, service healthy again at), as `Screen.recovery` takes them."""


def summary(screen: Screen, index: int, faults: Faults) -> dict[str, Any]:
    """What a screen has to say at the end, as plain data."""
    allowed, wrong = screen.duplicates()
    received = screen.received_at
    return {
        "index": index,
        "shown": dict(screen.shown),
        "counts": dict(screen.counts),
        "statuses": dict(screen.status_counts),
        "connections": screen.connections,
        "duplicates_allowed": allowed,
        "duplicates_wrong": len(wrong),
        "duplicate_samples": [
            (r.epoch, r.offset, r.first_era, r.era) for r in screen.repeats if not screen.allowed(r)
        ][:5],
        "gaps": screen.gaps(),
        "recovery": screen.recovery(faults),
        "absences": [absence for absence in screen.absences if absence[2]],
        "position": screen.position,
        "state": screen.state(),
        "last_received": received[-1] if received else 0.0,
    }


def write_traces(directory: Path, screens: dict[int, Screen]) -> None:
    """Every screen's trace as JSON lines, `client-N.jsonl`."""
    directory.mkdir(parents=True, exist_ok=True)
    for index, screen in screens.items():
        with (directory / f"client-{index}.jsonl").open("w") as out:
            for event in screen.trace or []:
                out.write(json.dumps(event, default=str) + "\n")


async def _serve_screens(
    url: str,
    slots: list[tuple[int, str, str]],
    options: dict[str, Any],
    pipe: Connection,
) -> None:
    watched = set(options["watched"])
    trace: str | None = options["trace"]
    sessions: dict[str, aiohttp.ClientSession] = {}
    for _, _, address in slots:
        if address not in sessions:
            connector = aiohttp.TCPConnector(local_addr=(address, 0), limit=0)
            sessions[address] = aiohttp.ClientSession(connector=connector)
    screens = {
        index: Screen(
            url,
            token,
            session=sessions[address],
            metrics=options["metrics"],
            backoff=BROWSER,
            persistent=True,
            record=False,
            trace=trace is not None,
            rules=options["rules"],
        )
        for index, token, address in slots
    }
    tasks: set[asyncio.Task[None]] = set()
    try:
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def start(screen: Screen) -> None:
            async with gate:
                await screen.open(wait=False)

        await asyncio.gather(*(start(screen) for screen in screens.values()))
        await asyncio.wait_for(
            asyncio.gather(*(screen.answered.wait() for screen in screens.values())),
            ANSWERS_SECONDS,
        )
        pipe.send(("connected",))
        while True:
            try:
                message: tuple[Any, ...] = await asyncio.to_thread(pipe.recv)
            except EOFError:
                break
            order = message[0]
            if order == "away":
                task = asyncio.create_task(screens[message[1]].away(message[2]))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            elif order == "return_all":
                for screen in screens.values():
                    screen.return_now()
            elif order == "status":
                last = [
                    max(
                        (at for metric, at in s.last_update.items() if metric in watched), default=0
                    )
                    for s in screens.values()
                ]
                status = {
                    "subscribed": sum(screen.subscribed_now for screen in screens.values()),
                    "last_update": max(last, default=0.0),
                    "updates": sum(screen.counts["updates"] for screen in screens.values()),
                }
                pipe.send(("status", status))
            elif order == "finish":
                if trace is not None:
                    await asyncio.to_thread(write_traces, Path(trace), screens)
                results = [summary(screen, index, message[1]) for index, screen in screens.items()]
                pipe.send(("finished", results))
            elif order == "close":
                break
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*(screen.close() for screen in screens.values()))
        for session in sessions.values():
            await session.close()


def screen_process(
    url: str, slots: list[tuple[int, str, str]], options: dict[str, Any], pipe: Connection
) -> None:
    """A worker process: open `slots` (index, token, source address), then follow orders."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        asyncio.run(_serve_screens(url, slots, options, pipe))
    except Exception as error:
        with contextlib.suppress(OSError):
            pipe.send(("error", f"{type(error).__name__}: {error}"))


class ScreenProcesses:
    """The screens, screen i in process i % processes.

    `watched`: the metrics whose last update `status()` reports (to tell when the service is
    quiet); `metrics`: what each screen subscribes to (None: everything); `trace`: a directory
    for every screen's events as JSON lines."""

    def __init__(
        self,
        url: str,
        tokens: list[str],
        processes: int,
        *,
        watched: Sequence[str],
        metrics: Sequence[str] | None = None,
        rules: Rules = "docs",
        trace: Path | None = None,
    ) -> None:
        addresses = min(len(tokens), CLIENT_ADDRESSES)
        self.address_of = [loopback_address(index, addresses) for index in range(len(tokens))]
        self.processes = processes
        slots = list(zip(range(len(tokens)), tokens, self.address_of, strict=True))
        options = {
            "watched": list(watched),
            "metrics": list(metrics) if metrics is not None else None,
            "rules": rules,
            "trace": str(trace) if trace is not None else None,
        }
        self._workers = WorkerProcesses(
            screen_process,
            [(url, slots[n::processes], options) for n in range(processes)],
            "bench-screens",
            STOP_SECONDS,
            label="client process",
        )
        self._lock = asyncio.Lock()

    def __enter__(self) -> ScreenProcesses:
        self._workers.__enter__()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._workers.__exit__(*exc_info)

    async def connected(self) -> None:
        """Wait until every screen has had its first subscription answered."""
        await self._workers.receive_all("connected")

    def away(self, index: int, seconds: float) -> None:
        """Screen `index` goes offline now and comes back after `seconds`."""
        self._workers.send(index % self.processes, ("away", index, seconds))

    def return_all(self) -> None:
        """Every screen away comes back now."""
        self._workers.send_all(("return_all",))

    async def status(self) -> dict[str, float]:
        """Screens subscribed now, the last update of a watched metric, updates received."""
        async with self._lock:
            self._workers.send_all(("status",))
            answers = await self._workers.receive_all("status")
        return {
            "subscribed": sum(a[1]["subscribed"] for a in answers),
            "last_update": max(a[1]["last_update"] for a in answers),
            "updates": sum(a[1]["updates"] for a in answers),
        }

    async def finish(self, faults: Faults) -> list[dict[str, Any]]:
        """Every screen's `summary`, in index order."""
        async with self._lock:
            self._workers.send_all(("finish", faults))
            answers = await self._workers.receive_all("finished")
        results = [result for answer in answers for result in answer[1]]
        return sorted(results, key=lambda result: result["index"])
