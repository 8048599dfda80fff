"""Telling sockets of the service's state, and resending values they may have missed.

Every socket is sent `connection_status` when it connects and whenever the service's state
changes (a dependency's breaker opens or closes), and "draining" when the instance hands it
over. While a dependency is down, updates may not have reached this instance's sockets (Redis
carries the fan-out between instances): a resync sends every subscribed socket a fresh
snapshot of its subscriptions, read once per distinct set of them. Resyncs are asked for when
the service is healthy again and when Redis says it lost messages; one pass answers every
request made before it began, and a failed pass is tried again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import structlog

from livedash.aio import BackgroundTasks
from livedash.cluster.view import MetricView
from livedash.metrics.engine import MetricValue
from livedash.observability.status import ServiceStatus
from livedash.realtime.clients import ClientSession
from livedash.realtime.fanout import FanOut
from livedash.realtime.schemas import ConnectionStatus
from livedash.realtime.subscriptions import Subscriptions, on_the_wire
from livedash.settings import Settings

log = structlog.get_logger(__name__)


class Resync:
    """Sends `connection_status`, and resyncs this instance's subscribed sockets."""

    def __init__(
        self,
        settings: Settings,
        sessions: Mapping[str, ClientSession],
        fanout: FanOut,
        *,
        view: MetricView,
        status: ServiceStatus,
        subscriptions: Subscriptions,
        background: BackgroundTasks,
        retry_seconds: Callable[[], float],
    ) -> None:
        """Resend values read from `view`, on behalf of `sessions`; passes run in
        `background`, and a failed one is tried again after `retry_seconds()`."""
        self._settings = settings
        self._sessions = sessions
        self._fanout = fanout
        self._view = view
        self._status = status
        self._subscriptions = subscriptions
        self._background = background
        self._retry_seconds = retry_seconds
        self._task: asyncio.Future[None] | None = None
        self._reasons: list[str] = []

    # -- connection_status -----------------------------------------------------------------

    async def send_status(self, session: ClientSession) -> None:
        """Tell the socket the service's state."""
        service = self._status.for_clients()
        state = service.pop("service", "ok")
        await self._send_status(session, "connected" if state == "ok" else state, **service)

    async def send_draining(self, session: ClientSession) -> None:
        """Tell the socket that this instance is shutting down."""
        await self._send_status(session, "draining")

    def status_changed(self, _status: ServiceStatus) -> None:
        """Tell every socket of the service's new state (a `ServiceStatus` listener)."""
        self._background.spawn(self._status_changed())

    async def _send_status(self, session: ClientSession, state: str, **service: Any) -> None:
        status = ConnectionStatus(
            status=state,
            authenticated=session.principal is not None,
            auth_timeout_seconds=self._settings.auth_timeout_seconds,
            server_time=datetime.now(UTC),
            **service,
        )
        await self._fanout.to_socket(
            session.sid, "connection_status", status.model_dump(mode="json")
        )

    async def _status_changed(self) -> None:
        for session in list(self._sessions.values()):
            with contextlib.suppress(Exception):
                await self.send_status(session)
        if self._status.summary()[0] == "ok":
            # Updates sent while a dependency was down (Redis carries the fan-out between
            # instances) may not have reached these sockets.
            self.request("service healthy again")

    # -- resync ----------------------------------------------------------------------------

    def request(self, reason: str) -> None:
        """Send every subscribed socket a fresh snapshot. Requests during a pass start another
        pass afterwards, so no request is answered by values read before it."""
        self._reasons.append(reason)
        if self._task is None or self._task.done():
            self._task = self._background.spawn(self._passes())

    async def _passes(self) -> None:
        while self._reasons:
            reasons, self._reasons = self._reasons, []
            if self._status.summary()[0] != "ok":
                # Reading now would serve stale or uncounted values; the dependency's return
                # changes the status, which starts a pass.
                log.info("resync_postponed", reasons=reasons)
                continue
            try:
                sent = await self._resync_all()
            except Exception as error:
                # Unless a breaker opens (and its closing starts a pass), try again shortly.
                log.warning("resync_failed", reasons=reasons, error=str(error))
                self._reasons.append("retry after a failed pass")
                await asyncio.sleep(self._retry_seconds())
            else:
                log.info("resync", reasons=reasons, sockets=sent)

    async def _resync_all(self) -> int:
        sessions = [
            session
            for session in list(self._sessions.values())
            if session.principal is not None and session.subscriptions
        ]
        if not sessions:
            return 0
        # Read before the values: everything up to it is in what is sent.
        position = on_the_wire(await self._subscriptions.stream_top())
        read: dict[tuple[frozenset[str], frozenset[str | None]], list[MetricValue]] = {}
        sent = 0
        for session in sessions:
            metrics = frozenset(metric for metric, _ in session.subscriptions)
            departments = frozenset(department for _, department in session.subscriptions)
            if (metrics, departments) not in read:
                read[metrics, departments] = await self._view.snapshot(
                    sorted(metrics), set(departments), fresh=True
                )
            with contextlib.suppress(Exception):  # a socket gone meanwhile
                await self._subscriptions.send_values(
                    session, read[metrics, departments], position=position, recovered=False
                )
                sent += 1
        return sent
