"""The Socket.IO gateway: who is connected, what they may see, and what they asked for.

`Gateway` is the façade the composition root builds; each of its jobs lives in a module of
its own, built here over one shared table of sessions:

- `sessions`: one socket's state (`ClientSession`), and the lock that serialises its events,
  its token's expiry and its identity's recheck.
- `guard`: what every incoming event passes through (rate limits, payload shape, sign-in),
  and the one place where a `ClientError` becomes an `error` / `auth_error` event.
- `identities`: signing in, the sign-in timeout, token expiry, the periodic recheck.
- `subscriptions`: rooms per (metric, department), snapshots, recovery from the update
  history, history reads. An update is emitted once to its room (by the outbox), never by
  looping over sockets.
- `resync`: `connection_status`, and fresh snapshots for sockets that may have missed updates.

It serves `explain_metric` itself: a value's last updates and the rows behind them, from the
view, in the same scope as a subscription (`changes`, for REST too).

This module registers the handlers, admits connections (each attempt counts against the
instance's cap and its client address's rate limit) and forgets them, and drains the
instance before it stops. It counts, for Prometheus, the sessions opened and every sign-in's
outcome: `ok`, or `failed` with a reason read from the refusal's code (and, for a refused
token, its `details.reason`: expired, revoked, disabled, unknown_user).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict
from typing import Any

import socketio
import structlog
from pydantic import ValidationError

from livedash.aio import BackgroundTasks
from livedash.auth.scope import visible_departments
from livedash.auth.tokens import Principal
from livedash.auth.users import Authenticator
from livedash.cluster.view import MetricView
from livedash.errors import (
    ClientError,
    Draining,
    InvalidPayload,
    RateLimited,
    TooManyConnections,
)
from livedash.metrics.definitions import Tier
from livedash.observability.status import ServiceStatus
from livedash.realtime.clients import ClientSession, SocketStats, TierCount
from livedash.realtime.fanout import FanOut
from livedash.realtime.frames import FrameStats
from livedash.realtime.guard import EventGuard, Handler, Served
from livedash.realtime.identities import Identities
from livedash.realtime.limiter import SocketLimiter
from livedash.realtime.requests import changes_of, explain_query
from livedash.realtime.resync import Resync
from livedash.realtime.schemas import (
    UPDATE_MODES,
    HistoricalData,
    MetricChanges,
    StreamPosition,
)
from livedash.realtime.server import REFUSAL, GatewayServer, PacketStats
from livedash.realtime.stream import Position, UpdateHistory
from livedash.realtime.subscriptions import Subscriptions
from livedash.realtime.websocket import shed_request
from livedash.settings import Settings

log = structlog.get_logger(__name__)

_FULL_RETRY_AFTER = 5.0  # seconds: the hint given with too_many_connections

INCOMING_EVENTS = (
    "authenticate",
    "subscribe_metrics",
    "unsubscribe_metrics",
    "request_snapshot",
    "request_historical",
    "explain_metric",
)

RESYNC_RETRY_SECONDS = 1.0
"""The pause before a failed resync pass is tried again; read at each retry."""

AUTH_FAILURES = (
    "expired",
    "invalid",
    "revoked",
    "disabled",
    "unknown_user",
    "rate_limited",
    "timeout",
    "unavailable",
    "error",
)
"""Why a sign-in failed, as `livedash_socket_authentications_total` says."""
_REFUSAL_REASONS = {
    "invalid_token": "invalid",
    "invalid_payload": "invalid",
    "rate_limited": "rate_limited",
    "unavailable": "unavailable",
}


class Gateway:
    """Serves the realtime API on a python-socketio server."""

    def __init__(
        self,
        settings: Settings,
        server: GatewayServer,
        fanout: FanOut,
        *,
        view: MetricView,
        authenticator: Authenticator,
        status: ServiceStatus,
        history: UpdateHistory | None = None,
        limiter: SocketLimiter | None = None,
    ) -> None:
        """Serve values from `view`; tokens are checked by `authenticator` (signature,
        claims, and the users table); clients are told of `status` and recover missed
        updates from `history`. Handlers are registered on `server` at once; background work
        runs while the gateway is entered (`async with`)."""
        self._settings = settings
        self._server = server
        self._status = status
        self._view = view
        self._limiter = limiter or SocketLimiter(settings)
        self._sessions: dict[str, ClientSession] = {}
        self._background = BackgroundTasks()
        self._draining = False  # set by drain(): from then on, every connect is refused
        self.opened = 0  # Socket.IO sessions accepted by this process, ever
        self._workers: Callable[[], Iterable[dict[str, Any]]] = tuple
        self._authentications: Counter[tuple[str, str]] = Counter(
            {("ok", ""): 0, **{("failed", reason): 0 for reason in AUTH_FAILURES}}
        )
        self._guard = EventGuard(self._sessions, self._limiter, fanout, known=INCOMING_EVENTS)
        self._subscriptions = Subscriptions(
            settings, fanout, view=view, limiter=self._limiter, history=history
        )
        self._identities = Identities(
            settings,
            self._sessions,
            fanout,
            authenticator=authenticator,
            subscriptions=self._subscriptions,
            guard=self._guard,
            server=server,
            background=self._background,
        )
        self._resync = Resync(
            settings,
            self._sessions,
            fanout,
            view=view,
            status=status,
            subscriptions=self._subscriptions,
            background=self._background,
            retry_seconds=lambda: RESYNC_RETRY_SECONDS,
        )
        handlers: dict[str, Handler] = {
            "authenticate": self._identities.authenticate,
            "subscribe_metrics": self._subscriptions.subscribe,
            "unsubscribe_metrics": self._subscriptions.unsubscribe,
            "request_snapshot": self._subscriptions.snapshot,
            "request_historical": self._subscriptions.historical,
            "explain_metric": self._explain,
        }
        served = {
            event: self._guard.serve(event, handler, public=event == "authenticate")
            for event, handler in handlers.items()
        }
        served["authenticate"] = self._counted(served["authenticate"])
        self._authenticate = served["authenticate"]
        server.on("connect", self._on_connect)
        server.on("disconnect", self._on_disconnect)
        for event, serve in served.items():
            server.on(event, serve)
        server.on("*", self._guard.refuse_unknown)
        server.admit_with(self._admit)

    # -- lifetime ------------------------------------------------------------------------

    async def __aenter__(self) -> Gateway:
        self._background.spawn(self._identities.recheck_periodically(), name="identity-recheck")
        self._status.on_change(self._resync.status_changed)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Cancel timers and background work."""
        for session in self._sessions.values():
            session.cancel_timer()
        await self._background.close()
        await self._limiter.aclose()

    def resync(self, reason: str) -> None:
        """Send every subscribed socket of this instance a fresh snapshot: it may have missed
        updates (Redis lost messages between instances). Requests during a pass start another
        pass afterwards, so no request is answered by values read before it."""
        self._resync.request(reason)

    def count_workers(self, reports: Callable[[], Iterable[dict[str, Any]]]) -> None:
        """Add the figures of this instance's socket workers (their latest `report()`) to
        its own, in every figure below."""
        self._workers = reports

    def report(self) -> dict[str, Any]:
        """This process's own figures, JSON-ready: what a socket worker tells the main one."""
        by_tier = self._subscriptions.subscribers.by_tier().items()
        signed_in = self._own_authentications().items()
        return {
            "connections": len(self._sessions),
            "authenticated": self._own_authenticated(),
            "transports": int(self._server.transports),
            "tiers": {tier.value: [c.subscribers, c.subscriptions] for tier, c in by_tier},
            "opened": self.opened,
            "authentications": [[result, why, n] for (result, why), n in signed_in],
            "rejections": self._limiter.rejections(),
            "frames": asdict(self._server.frames.stats),
            "packets": asdict(self._server.packets),
        }

    def _worker_sum(self, field: str) -> int:
        return sum(int(report.get(field, 0)) for report in self._workers())

    def _with_workers(self, own: dict[str, int], field: str) -> dict[str, int]:
        """`own` counts plus the workers' of the same names (zeros kept)."""
        total = dict(own)
        for report in self._workers():
            for name, count in dict(report.get(field, {})).items():
                total[str(name)] = total.get(str(name), 0) + int(count)
        return total

    @property
    def connected(self) -> int:
        """Sockets connected to this instance."""
        return len(self._sessions) + self._worker_sum("connections")

    @property
    def transports(self) -> int:
        """Engine.IO connections open on this instance, Socket.IO sessions or not."""
        return int(self._server.transports) + self._worker_sum("transports")

    @property
    def total_opened(self) -> int:
        """Socket.IO sessions accepted by this instance, ever."""
        return self.opened + self._worker_sum("opened")

    def subscribers(self) -> dict[Tier, TierCount]:
        """Sockets and subscriptions of every tier on this instance, now (kept as they
        change, read in O(tiers) per process)."""
        tiers = self._subscriptions.subscribers.by_tier()
        for report in self._workers():
            for tier_name, (subscribers, subscriptions) in report.get("tiers", {}).items():
                tier = Tier(tier_name)
                held = tiers.get(tier, TierCount(0, 0))
                tiers[tier] = TierCount(
                    held.subscribers + subscribers, held.subscriptions + subscriptions
                )
        return tiers

    def _own_authentications(self) -> dict[tuple[str, str], int]:
        counts = dict(self._authentications)
        counts["failed", "timeout"] += self._identities.timed_out
        return counts

    def authentications(self) -> dict[tuple[str, str], int]:
        """Sign-ins by (result, reason): ("ok", ""), or ("failed", one of AUTH_FAILURES)."""
        counts = self._own_authentications()
        for report in self._workers():
            for result, reason, count in report.get("authentications", []):
                key = (str(result), str(reason))
                counts[key] = counts.get(key, 0) + int(count)
        return counts

    def rate_limit_rejections(self) -> dict[str, int]:
        """Events, connection attempts and history reads refused, by limit."""
        return self._with_workers(self._limiter.rejections(), "rejections")

    def _own_authenticated(self) -> int:
        return sum(session.principal is not None for session in self._sessions.values())

    def stats(self) -> SocketStats:
        """Connections and subscriptions by tier on this instance, now."""
        return SocketStats(
            connections=self.connected,
            authenticated=self._own_authenticated() + self._worker_sum("authenticated"),
            transports=self.transports,
            tiers=self.subscribers(),
        )

    async def history(self, principal: Principal, data: Any) -> HistoricalData:
        """A `request_historical` for `principal` made elsewhere (REST): the sockets' checks,
        history budget and limit on reads at once."""
        return await self._subscriptions.history(principal, data)

    async def changes(self, principal: Principal, data: Any) -> MetricChanges:
        """An `explain_metric` for `principal`, from a socket or REST: the value's last
        updates and the rows behind them, in the scope a subscription would have."""
        visible = visible_departments(principal, await self._view.departments())
        request = explain_query(data, visible)
        return changes_of(request, await self._view.causes(request.metric, request.department))

    def _counted(self, authenticate: Served) -> Served:
        """`authenticate`, guarded, counting each attempt's outcome from its reply."""

        async def counted(sid: str, *args: Any) -> dict[str, Any] | None:
            reply = await authenticate(sid, *args)
            if reply is not None:
                code = reply.get("code")
                if code is None:
                    self._authentications["ok", ""] += 1
                else:
                    self._authentications["failed", _failure(code, reply.get("details"))] += 1
            return reply

        return counted

    async def _explain(self, session: ClientSession, data: Any) -> MetricChanges:
        assert session.principal is not None  # the guard lets only authenticated sockets here
        return await self.changes(session.principal, data)

    def sockets_of(self, user: str) -> int:
        """The sockets `user` has open on this instance: each adds to its budgets (REST's too)."""
        return self._limiter.sockets_of(user)

    async def stream_top(self) -> Position | None:
        """The update stream's last position (None while it is out of reach)."""
        return await self._subscriptions.stream_top()

    @property
    def packets(self) -> PacketStats:
        """Packets refused below the event handlers, in this process (counting on)."""
        return self._server.packets

    def all_packets(self) -> PacketStats:
        """`packets` of this process and its socket workers, now."""
        return PacketStats(**self._with_workers(asdict(self._server.packets), "packets"))

    @property
    def server(self) -> GatewayServer:
        """The Socket.IO server whose events this gateway handles."""
        return self._server

    @property
    def frames(self) -> FrameStats:
        """How room events left for each socket of this process (counting on)."""
        return self._server.frames.stats

    def all_frames(self) -> FrameStats:
        """`frames` of this process and its socket workers, now."""
        return FrameStats(**self._with_workers(asdict(self._server.frames.stats), "frames"))

    # -- connection lifecycle ------------------------------------------------------------

    async def _on_connect(
        self, sid: str, environ: Any = None, auth: Any = None, *extra: Any
    ) -> dict[str, Any] | None:
        if sid in self._sessions:
            # python-socketio dispatches a client's *event* named "connect" here too.
            return await self._guard.refuse_unknown("connect", sid, environ)
        # Registered before the first await, so that a forged "connect" racing this one (the
        # client may send events as soon as it is connected) is refused as above.
        session = ClientSession(sid)
        self._sessions[sid] = session
        refusal = environ.get(REFUSAL) if isinstance(environ, dict) else None
        if isinstance(environ, dict):
            shed_request(environ)  # a long-polling client's handshake, kept by python-socketio
        if refusal is None and self._draining:
            refusal = Draining("this instance is shutting down: connect again to reach another")
        if refusal is None:
            refusal = _update_mode_refusal(auth)
        if refusal is not None:
            # The server runs with always_connect, so the socket is open at this point and the
            # `error` event reaches the client; the refusal then disconnects it (or, without
            # always_connect, turns into a `connect_error` carrying the same payload). Either
            # way python-socketio calls no disconnect handler: forget the session here.
            del self._sessions[sid]
            payload = await self._guard.send_error(sid, "connect", refusal)
            raise socketio.exceptions.ConnectionRefusedError(refusal.message, payload)
        self.opened += 1
        session.batched = isinstance(auth, dict) and auth.get("updates") == "batched"
        self._identities.await_sign_in(session)
        await self._resync.send_status(session)
        if isinstance(auth, dict) and isinstance(auth.get("since"), dict):
            # A reconnecting client's last position: used by its first subscription.
            with contextlib.suppress(ValidationError):
                session.since = StreamPosition.model_validate(auth["since"])
        if isinstance(auth, dict) and "token" in auth:
            await self._authenticate(sid, {"token": auth["token"]})
        return None

    async def _admit(self, environ: dict[str, Any]) -> ClientError | None:
        """Whether a new Engine.IO connection may be served; asked before it can send
        anything, so that connections that never open a session are counted too."""
        if self._draining:
            return Draining("this instance is shutting down: connect again to reach another")
        # The new connection is already among the transports, before the first await: those
        # connecting together cannot all pass (or all fail) the cap.
        limit = self._settings.max_connections
        if self._server.transports > limit:
            return TooManyConnections(
                f"this instance serves at most {limit} sockets: try again shortly, another "
                "instance may have room",
                retry_after=_FULL_RETRY_AFTER,
                limit=limit,
            )
        try:
            await self._limiter.connection(_client_address(environ))
        except RateLimited as refusal:
            return refusal
        return None

    async def _on_disconnect(self, sid: str, *args: Any) -> dict[str, Any] | None:
        if self._server.manager.is_connected(sid, "/"):
            # A client's event named "disconnect": a real disconnect is no longer "connected"
            # when its handler runs. Obeying it would forget the session (and its token's
            # expiry) while the socket stays in its rooms.
            return await self._guard.refuse_unknown("disconnect", sid, *args[:1])
        self._limiter.forget(sid)
        session = self._sessions.pop(sid, None)
        if session is not None:
            session.cancel_timer()
            self._subscriptions.subscribers.forget(session)
        return None

    # -- shutdown ------------------------------------------------------------------------

    @property
    def draining(self) -> bool:
        """Whether this instance is handing its clients over before it stops."""
        return self._draining

    async def drain(self) -> None:
        """Hand this instance's clients over before it stops (SIGTERM), within the grace.

        From now on a connect is refused (`error` `draining`). Every connected socket gets
        `connection_status` "draining", then its transport is closed: a Socket.IO client
        reconnects on its own after that (not after a namespace disconnect, "io server
        disconnect"), and the load balancer sends it to another instance.
        """
        self._draining = True
        sessions = list(self._sessions.values())
        if not sessions:
            return
        log.info("gateway_draining", sockets=len(sessions))

        async def hand_over(session: ClientSession) -> None:
            session.cancel_timer()
            await self._resync.send_draining(session)
            await self._server.hand_over(session.sid)

        try:
            async with asyncio.timeout(self._settings.shutdown_grace_seconds):
                results = await asyncio.gather(
                    *(hand_over(session) for session in sessions), return_exceptions=True
                )
        except TimeoutError:
            log.warning("gateway_drain_timed_out", sockets=len(self._sessions))
            return
        for result in results:
            if isinstance(result, Exception):
                log.warning("gateway_drain_failed", error=repr(result))


def _failure(code: str, details: Any) -> str:
    """Why a sign-in was refused, from its refusal: a refused token says why in
    `details.reason` (expired, revoked, disabled, unknown_user); otherwise by its code."""
    reason = details.get("reason") if isinstance(details, dict) else None
    if code == "invalid_token" and reason in AUTH_FAILURES:
        return str(reason)
    return _REFUSAL_REASONS.get(code, "error")


def _update_mode_refusal(auth: Any) -> ClientError | None:
    """Why a handshake's `auth.updates` cannot be served, or None (absent, or one we send)."""
    if not isinstance(auth, dict) or "updates" not in auth or auth["updates"] in UPDATE_MODES:
        return None
    return InvalidPayload(
        f"auth.updates must be one of {', '.join(map(repr, UPDATE_MODES))}",
        valid=list(UPDATE_MODES),
    )


def _client_address(environ: Any) -> str:
    """The client's IP address; under ASGI python-socketio passes the scope along."""
    if not isinstance(environ, dict):
        return "unknown"
    scope = environ.get("asgi.scope")
    client = scope.get("client") if isinstance(scope, dict) else None
    if client:
        return str(client[0])
    return str(environ.get("REMOTE_ADDR", "unknown"))
