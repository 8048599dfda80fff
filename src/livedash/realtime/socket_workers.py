"""The main process's socket workers (`LIVEDASH_SOCKET_WORKERS`): started, fed, restarted.

Each worker is `python -m livedash.worker`, a process that serves WebSocket clients on the
service's port: the main process accepts their connections and hands them over
(`livedash.realtime.handoff`). Its link to the main process (`livedash.cluster.local_bus`)
carries, in order:

- to the worker: the settings, then everything it serves from (`sync`: every value and cause,
  the departments, the update history), then each batch of values, each history entry and
  each of python-socketio's messages to rooms, as the main process publishes them;
- from the worker: `ready` once it serves, python-socketio's messages (relayed to the other
  workers), rate-limit storage calls (`livedash.realtime.shared_limits`), and a report of its
  sockets every second, which the main process adds to its own figures.

A worker that dies is started again after a pause; its clients reconnect meanwhile, and are
served by the other workers or the main process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
from pydantic import SecretStr

from livedash.aio import BackgroundTasks
from livedash.cluster.local_bus import BusHub, BusLink, Message
from livedash.observability.logging import log_file
from livedash.realtime.bus_manager import SOCKETIO, BusManager
from livedash.realtime.handoff import HandOff
from livedash.realtime.shared_limits import LIMIT, LimitCalls
from livedash.settings import Settings

log = structlog.get_logger(__name__)

SETTINGS = "settings"
SYNCED = "synced"
READY = "ready"
REPORT = "report"
START_TIMEOUT_SECONDS = 60.0
RESTART_SECONDS = (1.0, 2.0, 5.0, 10.0)
STOP_SECONDS = 10.0


def settings_message(settings: Settings) -> Message:
    """The settings as a worker receives them (every field, secrets in the clear), and where
    this process logs."""
    fields = {
        name: value.get_secret_value() if isinstance(value, SecretStr) else value
        for name, value in settings.model_dump().items()
    }
    file = log_file()
    return {
        "t": SETTINGS,
        "settings": json.loads(json.dumps(fields, default=str)),
        "log_file": str(file) if file is not None else None,
    }


def settings_from(message: Message) -> tuple[Settings, Path | None]:
    """The settings and log file of a `settings_message`."""
    if message.get("t") != SETTINGS:
        raise ValueError(f"expected the settings first, got {message.get('t')!r}")
    file = message.get("log_file")
    return Settings(**message["settings"]), Path(file) if file else None


class SocketWorkers:
    """Starts `settings.socket_workers` workers and keeps them running while entered."""

    def __init__(
        self,
        settings: Settings,
        hand_off: HandOff,
        *,
        hub: BusHub,
        sync: Callable[[], list[Message]],
        manager: BusManager,
        limits: LimitCalls,
    ) -> None:
        self._settings = settings
        self._hand_off = hand_off
        self._hub = hub
        self._sync = sync
        self._manager = manager
        self._limits = limits
        self._processes: dict[str, asyncio.subprocess.Process] = {}
        self._channels: dict[str, socket.socket] = {}
        self._restarts: dict[str, int] = {}
        self._ready: dict[str, asyncio.Event] = {}
        self._tasks = BackgroundTasks()
        self._closing = False
        self.restarts = 0
        self.reports: dict[str, Message] = {}
        """Each ready worker's latest report of its sockets (`Gateway` figures, as JSON)."""
        hub.on_message(self._heard)

    def figures(self) -> dict[str, Any]:
        """For the instance's report (`livedash status`, GET /api/realtime/stats)."""
        return {
            "configured": self._settings.socket_workers,
            "ready": sorted(self.ready),
            "handed_over": self._hand_off.given,
            "served_by_main": self._hand_off.kept,
            "restarts": self.restarts,
        }

    @property
    def ready(self) -> list[str]:
        """The workers that take connections now."""
        return [name for name, event in self._ready.items() if event.is_set()]

    async def __aenter__(self) -> SocketWorkers:
        names = [f"worker-{index}" for index in range(1, self._settings.socket_workers + 1)]
        try:
            for name in names:
                await self._start(name)
            started = [self._ready[name] for name in names]
            async with asyncio.timeout(START_TIMEOUT_SECONDS):
                for event in started:
                    await event.wait()
        except TimeoutError:
            log.warning("socket_workers_slow_to_start", ready=self.ready)
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._closing = True
        await self._tasks.close()
        for name in list(self._processes):
            self._let_go(name)
        await asyncio.gather(*(self._stop(p) for p in self._processes.values()))
        self._processes.clear()
        await self._hub.aclose()

    async def _start(self, name: str) -> None:
        bus, bus_there = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        channel, channel_there = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "livedash.worker",
                name,
                str(bus_there.fileno()),
                str(channel_there.fileno()),
                pass_fds=(bus_there.fileno(), channel_there.fileno()),
            )
        except OSError:
            bus.close()
            channel.close()
            raise
        finally:
            bus_there.close()
            channel_there.close()
        self._processes[name] = process
        self._channels[name] = channel
        self._ready[name] = asyncio.Event()
        link = await BusLink.open(bus)
        link.send(settings_message(self._settings))
        # In one go with attaching: every later broadcast follows the sync on this link.
        for message in self._sync():
            link.send(message)
        link.send({"t": SYNCED})
        self._hub.attach(name, link, self._gone)
        log.info("socket_worker_started", worker=name, pid=process.pid)

    async def _heard(self, name: str, message: Message) -> None:
        kind = message.get("t")
        if kind == SOCKETIO:
            self._hub.broadcast(message, skip=name)
            self._manager.deliver(message["m"])
        elif kind == LIMIT:
            self._hub.send(name, await self._limits.answer(message))
        elif kind == REPORT:
            self.reports[name] = message
        elif kind == READY:
            self._restarts.pop(name, None)
            channel = self._channels.get(name)
            if channel is not None:
                self._hand_off.add(name, channel)
            self._ready[name].set()
            log.info("socket_worker_ready", worker=name)

    def _let_go(self, name: str) -> None:
        """No more connections to `name`; its end of the hand-off closed, ready or not (a
        worker that died starting would otherwise leave a descriptor behind per restart)."""
        self._hand_off.remove(name)
        channel = self._channels.pop(name, None)
        if channel is not None:
            channel.close()

    def _gone(self, name: str) -> None:
        self._let_go(name)
        self.reports.pop(name, None)
        ready = self._ready.pop(name, None)
        process = self._processes.pop(name, None)
        if self._closing:
            return
        log.warning("socket_worker_gone", worker=name, was_ready=bool(ready and ready.is_set()))
        self._tasks.spawn(self._restart(name, process), name=f"livedash-restart-{name}")

    async def _restart(self, name: str, process: asyncio.subprocess.Process | None) -> None:
        if process is not None:
            await self._stop(process)
        attempt = self._restarts.get(name, 0)
        self._restarts[name] = attempt + 1
        self.restarts += 1
        await asyncio.sleep(RESTART_SECONDS[min(attempt, len(RESTART_SECONDS) - 1)])
        try:
            await self._start(name)
        except OSError as error:
            log.error("socket_worker_not_started", worker=name, error=str(error))
            if not self._closing:
                self._tasks.spawn(self._restart(name, None))

    async def _stop(self, process: asyncio.subprocess.Process) -> None:
        """SIGTERM (the worker drains its clients), then SIGKILL past the grace."""
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
        try:
            async with asyncio.timeout(self._settings.shutdown_grace_seconds + STOP_SECONDS):
                await process.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()


def report_message(figures: dict[str, Any]) -> Message:
    return {"t": REPORT, "at": time.time(), **figures}
