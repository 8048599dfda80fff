"""The Socket.IO gateway: who is connected, what they may see, and what they asked for.

Each subscription is a room per (metric, department); an update is emitted once to its room
(by the outbox) and never by looping over sockets here. Client errors are turned into `error`
/ `auth_error` events here and nowhere else.

Every incoming event, known or not, counts against its socket's and its user's rate limits
before anything else is looked at; connection attempts count against the client's address.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import socketio
import structlog
from pydantic import BaseModel, ValidationError

from livedash.aio import BackgroundTasks
from livedash.auth.scope import visible_departments
from livedash.auth.tokens import Principal, verify_token
from livedash.auth.users import Authenticator
from livedash.cluster.view import MetricView
from livedash.errors import (
    AuthError,
    ClientError,
    Draining,
    Internal,
    InvalidPayload,
    InvalidToken,
    NotAuthenticated,
    RateLimited,
    StoreError,
    TooManyConnections,
    Unavailable,
    UnknownEvent,
)
from livedash.metrics.definitions import METRIC_NAMES, money
from livedash.metrics.engine import MetricValue
from livedash.observability.status import ServiceStatus
from livedash.realtime.fanout import FanOut
from livedash.realtime.limiter import SocketLimiter
from livedash.realtime.outbox import room_name, to_update
from livedash.realtime.requests import history_query, ordered, parse, select
from livedash.realtime.schemas import (
    Authenticated,
    AuthenticateRequest,
    ConnectionStatus,
    ErrorPayload,
    HistoricalData,
    HistoricalPoint,
    MetricSelection,
    MetricsSnapshot,
    StreamPosition,
    SubscriptionAck,
)
from livedash.realtime.server import REFUSAL, GatewayServer, PacketStats
from livedash.realtime.stream import Position, UpdateHistory
from livedash.settings import Settings

log = structlog.get_logger(__name__)

Scope = tuple[str, str | None]
Handler = Callable[["ClientSession", Any], Awaitable[BaseModel | None]]

_AUTH_TIMEOUT = "authentication timed out"
_FULL_RETRY_AFTER = 5.0  # seconds: the hint given with too_many_connections

INCOMING_EVENTS = (
    "authenticate",
    "subscribe_metrics",
    "unsubscribe_metrics",
    "request_snapshot",
    "request_historical",
)


@dataclass
class ClientSession:
    """One connected socket's state.

    `lock` serialises what changes who the socket is and what it is subscribed to (events,
    token expiry, the periodic recheck): a subscription that awaits while the identity
    changes would otherwise join rooms of the identity it started with.
    """

    sid: str
    principal: Principal | None = None
    claims: Principal | None = None  # the token's own claims, before the users table narrows
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    subscriptions: set[Scope] = field(default_factory=set)
    timer: asyncio.TimerHandle | None = None
    since: StreamPosition | None = None  # from the handshake, for the first subscription

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


RESYNC_RETRY_SECONDS = 1.0


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
        self._fanout = fanout
        self._limiter = limiter or SocketLimiter(settings)
        self._sessions: dict[str, ClientSession] = {}
        self._view = view
        self._history = history
        self._status = status
        self._authenticator = authenticator
        self._background = BackgroundTasks()
        self._resync_task: asyncio.Future[None] | None = None
        self._resync_reasons: list[str] = []
        # History reads are the one request whose cost the client chooses: a few at a time,
        # so that they cannot fill the event loop that every screen's updates go through.
        self._history_reads = asyncio.Semaphore(settings.history_reads_at_once)
        handlers: dict[str, Handler] = {
            "authenticate": self._authenticate,
            "subscribe_metrics": self._subscribe,
            "unsubscribe_metrics": self._unsubscribe,
            "request_snapshot": self._request_snapshot,
            "request_historical": self._request_historical,
        }
        server.on("connect", self._on_connect)
        server.on("disconnect", self._on_disconnect)
        for event, handler in handlers.items():
            server.on(event, self._guard(event, handler, public=event == "authenticate"))
        server.on("*", self._on_unknown_event)
        server.admit_with(self._admit)

    # -- lifetime ------------------------------------------------------------------------

    async def __aenter__(self) -> Gateway:
        self._background.spawn(self._recheck_periodically(), name="identity-recheck")

        def changed(_status: ServiceStatus) -> None:
            self._background.spawn(self._status_changed())

        self._status.on_change(changed)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Cancel timers and background work."""
        for session in self._sessions.values():
            session.cancel_timer()
        await self._background.close()
        await self._limiter.aclose()

    async def _status_changed(self) -> None:
        for session in list(self._sessions.values()):
            with contextlib.suppress(Exception):
                await self._send_status(session)
        if self._status.summary()[0] == "ok":
            # Updates sent while a dependency was down (Redis carries the fan-out between
            # instances) may not have reached these sockets.
            self.resync("service healthy again")

    def resync(self, reason: str) -> None:
        """Send every subscribed socket of this instance a fresh snapshot: it may have missed
        updates (Redis lost messages between instances). Requests during a pass start another
        pass afterwards, so no request is answered by values read before it."""
        self._resync_reasons.append(reason)
        if self._resync_task is None or self._resync_task.done():
            self._resync_task = self._background.spawn(self._resync_passes())

    async def _resync_passes(self) -> None:
        while self._resync_reasons:
            reasons, self._resync_reasons = self._resync_reasons, []
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
                self._resync_reasons.append("retry after a failed pass")
                await asyncio.sleep(RESYNC_RETRY_SECONDS)
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
        top = await self._stream_top()
        position = _on_the_wire(top)
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
                await self._send_values(
                    session, read[metrics, departments], position=position, recovered=False
                )
                sent += 1
        return sent

    async def _send_status(self, session: ClientSession) -> None:
        service = self._status.for_clients()
        state = service.pop("service", "ok")
        status = ConnectionStatus(
            status="connected" if state == "ok" else state,
            authenticated=session.principal is not None,
            auth_timeout_seconds=self._settings.auth_timeout_seconds,
            server_time=datetime.now(UTC),
            **service,
        )
        await self._fanout.to_socket(
            session.sid, "connection_status", status.model_dump(mode="json")
        )

    @property
    def connected(self) -> int:
        """Sockets connected to this instance."""
        return len(self._sessions)

    @property
    def transports(self) -> int:
        """Engine.IO connections open on this instance, Socket.IO sessions or not."""
        return int(self._server.transports)

    @property
    def packets(self) -> PacketStats:
        """Packets refused below the event handlers."""
        return self._server.packets

    # -- connection lifecycle ------------------------------------------------------------

    async def _on_connect(
        self, sid: str, environ: Any = None, auth: Any = None, *extra: Any
    ) -> dict[str, Any] | None:
        if sid in self._sessions:
            # python-socketio dispatches a client's *event* named "connect" here too.
            return await self._on_unknown_event("connect", sid, environ)
        # Registered before the first await, so that a forged "connect" racing this one (the
        # client may send events as soon as it is connected) is refused as above.
        session = ClientSession(sid)
        self._sessions[sid] = session
        refusal = environ.get(REFUSAL) if isinstance(environ, dict) else None
        if refusal is None and self._draining:
            refusal = Draining("this instance is shutting down: connect again to reach another")
        if refusal is not None:
            # The server runs with always_connect, so the socket is open at this point and the
            # `error` event reaches the client; the refusal then disconnects it (or, without
            # always_connect, turns into a `connect_error` carrying the same payload). Either
            # way python-socketio calls no disconnect handler: forget the session here.
            del self._sessions[sid]
            payload = await self._send_error(sid, "connect", refusal)
            raise socketio.exceptions.ConnectionRefusedError(refusal.message, payload)
        self._arm_timer(session, self._settings.auth_timeout_seconds, _AUTH_TIMEOUT)
        await self._send_status(session)
        if isinstance(auth, dict) and isinstance(auth.get("since"), dict):
            # A reconnecting client's last position: used by its first subscription.
            with contextlib.suppress(ValidationError):
                session.since = StreamPosition.model_validate(auth["since"])
        if isinstance(auth, dict) and "token" in auth:
            authenticate = self._guard("authenticate", self._authenticate, public=True)
            await authenticate(sid, {"token": auth["token"]})
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
            return await self._on_unknown_event("disconnect", sid, *args[:1])
        session = self._sessions.pop(sid, None)
        if session is not None:
            session.cancel_timer()
        return None

    def _arm_timer(self, session: ClientSession, delay: float, reason: str) -> None:
        session.cancel_timer()
        loop = asyncio.get_running_loop()
        session.timer = loop.call_later(max(delay, 0.0), self._expire, session.sid, reason)

    def _expire(self, sid: str, reason: str) -> None:
        session = self._sessions.get(sid)
        if session is None:
            return
        session.timer = None
        self._background.spawn(self._end_authentication(session, reason, session.claims))

    async def _end_authentication(
        self, session: ClientSession, reason: str, claims: Principal | None
    ) -> None:
        async with session.lock:
            if session.claims is not claims:
                return  # authenticated again while this waited: its own timer runs now
            if session.principal is not None:
                # The token ran out while connected: no more data until a new token arrives.
                await self._drop_identity(session, AuthError(reason))
                return
            await self._send_error(session.sid, None, AuthError(reason))
            log.info("socket_auth_timeout", sid=session.sid)
            await self._server.close_transport(session.sid)

    async def _drop_identity(self, session: ClientSession, reason: ClientError) -> None:
        """`_forget_identity`, and tell the socket why."""
        await self._forget_identity(session)
        await self._send_error(session.sid, None, reason)

    async def _forget_identity(self, session: ClientSession) -> None:
        """Forget who the socket was, and every subscription of that identity. It may
        authenticate again within the sign-in timeout."""
        await self._drop_subscriptions(session, set(session.subscriptions))
        session.principal = session.claims = None
        self._arm_timer(session, self._settings.auth_timeout_seconds, _AUTH_TIMEOUT)

    # -- identities of open sockets --------------------------------------------------------

    async def _recheck_periodically(self) -> None:
        while True:
            await asyncio.sleep(self._settings.auth_recheck_seconds)
            try:
                await self.recheck_identities()
            except StoreError as error:
                # The database cannot say now: the sockets keep what it last said.
                log.warning("identity_recheck_unavailable", error=str(error))
            except Exception:
                log.exception("identity_recheck_failed")

    async def recheck_identities(self) -> int:
        """Check every authenticated socket's token against the users table and the revoked
        tokens again; returns how many sockets lost some or all of what they could see.

        A revoked token, or a user deactivated or signed out, loses its identity and its
        subscriptions (`auth_error`); a user whose role or departments shrank keeps only the
        subscriptions still in scope and is sent `authenticated` with its new scope.
        """
        sessions = [session for session in self._sessions.values() if session.claims]
        claims = [session.claims for session in sessions if session.claims is not None]
        if not claims:
            return 0
        decisions = await self._authenticator.recheck(claims)
        changed = 0
        for session, checked, decision in zip(sessions, claims, decisions, strict=True):
            async with session.lock:
                if session.claims is not checked or session.principal is None:
                    continue  # authenticated again (or signed out) meanwhile
                if isinstance(decision, InvalidToken):
                    log.info("socket_identity_revoked", sid=session.sid, reason=decision.message)
                    await self._drop_identity(session, decision)
                    changed += 1
                elif _identity(decision) != _identity(session.principal) and await self._narrow(
                    session, decision
                ):
                    changed += 1
        return changed

    async def _narrow(self, session: ClientSession, principal: Principal) -> bool:
        """Give the socket `principal`'s scope; True if it lost a subscription or a
        department it could see."""
        before = await self._visible(session)
        session.principal = principal
        visible = await self._visible(session)
        gone = {scope for scope in session.subscriptions if scope[1] not in visible}
        await self._drop_subscriptions(session, gone)
        log.info(
            "socket_scope_changed",
            sid=session.sid,
            role=principal.role.value,
            dropped=len(gone),
        )
        await self._send_authenticated(session, principal)
        return bool(gone) or not before <= visible

    # -- events --------------------------------------------------------------------------

    def _guard(
        self, event: str, handler: Handler, *, public: bool = False
    ) -> Callable[..., Awaitable[dict[str, Any] | None]]:
        async def serve(sid: str, *args: Any) -> dict[str, Any] | None:
            session = self._sessions.get(sid)
            if session is None:
                return None
            user = session.principal.subject if session.principal else None
            with structlog.contextvars.bound_contextvars(sid=sid, user=user, event=event):
                try:
                    await self._limiter.event(sid, user)
                    if len(args) > 1:
                        raise InvalidPayload(f"{event} takes a single payload argument")
                    if not public and session.principal is None:
                        raise NotAuthenticated(f"authenticate before sending {event}")
                    async with session.lock:
                        result = await handler(session, args[0] if args else None)
                except ClientError as error:
                    return await self._send_error(sid, event, error)
                except StoreError as error:
                    # The database is down (the status says `stale`): expected, not a bug.
                    log.warning("event_unavailable", error=str(error))
                    return await self._send_error(sid, event, Unavailable())
                except Exception:
                    log.exception("event_failed")
                    return await self._send_error(sid, event, Internal("internal error"))
            return result.model_dump(mode="json", by_alias=True) if result is not None else None

        return serve

    async def _on_unknown_event(self, event: Any, sid: str, *args: Any) -> dict[str, Any] | None:
        # A raw packet can name its event with any hashable JSON value, not only a string.
        name = event[:64] if isinstance(event, str) else repr(event)[:64]

        async def refuse(session: ClientSession, data: Any) -> BaseModel | None:
            raise UnknownEvent(f"unknown event {name!r}", known=list(INCOMING_EVENTS))

        return await self._guard(name, refuse, public=True)(sid, *args[:1])

    async def _send_error(self, sid: str, event: str | None, error: ClientError) -> dict[str, Any]:
        payload = ErrorPayload(
            code=error.code,
            message=error.message,
            event=event,
            details=error.details,
            retry_after=error.retry_after,
        ).model_dump(mode="json")
        name = "auth_error" if isinstance(error, AuthError) else "error"
        log.info("client_refused", sid=sid, code=error.code, reason=error.message)
        await self._fanout.to_socket(sid, name, payload)
        return payload

    async def _authenticate(self, session: ClientSession, data: Any) -> BaseModel:
        request = parse(AuthenticateRequest, data)
        try:
            claims = verify_token(self._settings, request.token)
            principal = await self._authenticator.admit(claims)
        except AuthError:
            if session.principal is not None:
                # A refused token must not leave the socket as whoever it was before.
                await self._forget_identity(session)
            raise
        if session.principal is not None and _identity(session.principal) != _identity(principal):
            # A different identity keeps nothing of the previous one's subscriptions.
            await self._drop_subscriptions(session, set(session.subscriptions))
        session.principal, session.claims = principal, claims
        remaining = (principal.expires_at - datetime.now(UTC)).total_seconds()
        self._arm_timer(session, remaining, "the token has expired")
        log.info("socket_authenticated", sid=session.sid, user=principal.subject)
        return await self._send_authenticated(session, principal)

    async def _send_authenticated(
        self, session: ClientSession, principal: Principal
    ) -> Authenticated:
        reply = Authenticated(
            sub=principal.subject,
            role=principal.role.value,
            departments=ordered(await self._visible(session)),
            metrics=list(METRIC_NAMES),
            expires_at=principal.expires_at,
        )
        await self._fanout.to_socket(session.sid, "authenticated", reply.model_dump(mode="json"))
        return reply

    async def _subscribe(self, session: ClientSession, data: Any) -> BaseModel:
        metrics, departments = await self._select(session, data)
        wanted = {(metric, department) for metric in metrics for department in departments}
        new = wanted - session.subscriptions
        limit = self._settings.max_subscriptions
        if len(session.subscriptions) + len(new) > limit:
            raise InvalidPayload(
                f"at most {limit} subscriptions per socket: {len(session.subscriptions)} held, "
                f"{len(new)} more asked for",
                limit=limit,
                held=len(session.subscriptions),
                asked=len(new),
            )
        since = parse(MetricSelection, data).since if isinstance(data, dict) else None
        if since is None:
            since, session.since = session.since, None
        for metric, department in sorted(new, key=_scope_order):
            await self._fanout.join(session.sid, room_name(metric, department))
            session.subscriptions.add((metric, department))
        # Joined before reading the stream's top: every update after it reaches this socket
        # through its rooms, and everything up to it is in what is sent here.
        top = await self._stream_top()
        position = _on_the_wire(top)
        if since is not None and top is not None:
            missed = await self._replay(session, since, top, wanted)
            if missed is not None:
                return SubscriptionAck(
                    metrics=metrics,
                    departments=ordered(departments),
                    position=position,
                    recovered=True,
                )
        await self._send_snapshot(
            session,
            metrics,
            departments,
            position=position,
            recovered=False if since is not None else None,
            fresh=True,
        )
        return SubscriptionAck(
            metrics=metrics,
            departments=ordered(departments),
            position=position,
            recovered=False if since is not None else None,
        )

    async def _stream_top(self) -> Position | None:
        if self._history is None:
            return None
        try:
            return await self._history.top()
        except Exception as error:
            log.warning("update_history_unavailable", error=str(error))
            return None

    async def _replay(
        self, session: ClientSession, since: StreamPosition, top: Position, scopes: set[Scope]
    ) -> int | None:
        """Send the updates of `scopes` after `since` up to `top`, in order; None if the history
        no longer holds all of them."""
        assert self._history is not None
        try:
            entries = await self._history.since(Position(since.epoch, since.offset))
        except Exception as error:
            log.warning("update_history_unavailable", error=str(error))
            return None
        if entries is None:
            return None
        sent = 0
        for entry in entries:
            if entry.offset > top.offset:
                break  # after the top: it reaches the socket through its rooms
            payload = entry.payload
            if (payload.get("metric"), payload.get("department")) not in scopes:
                continue
            replayed = {**payload, "position": {"epoch": top.epoch, "offset": entry.offset}}
            await self._fanout.to_socket(session.sid, "dashboard_update", replayed)
            sent += 1
        log.info("socket_recovered", sid=session.sid, since=since.offset, replayed=sent)
        return sent

    async def _unsubscribe(self, session: ClientSession, data: Any) -> BaseModel:
        metrics, departments = await self._select(session, data)
        gone = {(metric, department) for metric in metrics for department in departments}
        await self._drop_subscriptions(session, gone & session.subscriptions)
        return SubscriptionAck(metrics=metrics, departments=ordered(departments))

    async def _request_snapshot(self, session: ClientSession, data: Any) -> BaseModel:
        metrics, departments = await self._select(session, data)
        return await self._send_snapshot(session, metrics, departments)

    async def _request_historical(self, session: ClientSession, data: Any) -> BaseModel:
        query = history_query(data, await self._visible(session))
        request, start, end = query.request, query.start, query.end
        assert session.principal is not None  # the guard lets only authenticated sockets here
        await self._limiter.history(session.principal.subject, query.hours)
        async with self._history_reads:
            points = await self._view.history(
                request.metric, request.department, start, end, request.granularity
            )
        reply = HistoricalData(
            metric=request.metric,
            department=request.department,
            granularity=request.granularity,
            start=start,
            end=end,
            points=[
                HistoricalPoint(
                    start=point.start,
                    value=money(point.value) if request.metric == "revenue" else point.value,
                    peak=point.peak,
                )
                for point in points
            ],
        )
        payload = reply.model_dump(mode="json", by_alias=True)
        await self._fanout.to_socket(session.sid, "historical_data", payload)
        return reply

    # -- helpers -------------------------------------------------------------------------

    async def _visible(self, session: ClientSession) -> set[str | None]:
        if session.principal is None:
            return set()
        codes = set(await self._view.departments())
        return visible_departments(session.principal, codes)

    async def _select(self, session: ClientSession, data: Any) -> tuple[list[str], set[str | None]]:
        return select(data, await self._visible(session), self._settings.max_list_length)

    async def _send_snapshot(
        self,
        session: ClientSession,
        metrics: Iterable[str],
        departments: set[str | None],
        *,
        position: StreamPosition | None = None,
        recovered: bool | None = None,
        fresh: bool = False,
    ) -> MetricsSnapshot:
        values = await self._view.snapshot(metrics, departments, fresh=fresh)
        return await self._send_values(session, values, position=position, recovered=recovered)

    async def _send_values(
        self,
        session: ClientSession,
        values: Iterable[MetricValue],
        *,
        position: StreamPosition | None,
        recovered: bool | None,
    ) -> MetricsSnapshot:
        snapshot = MetricsSnapshot(
            values=[to_update(value) for value in values],
            server_time=datetime.now(UTC),
            position=position,
            recovered=recovered,
        )
        payload = snapshot.model_dump(mode="json", exclude={"values": {"__all__": {"position"}}})
        await self._fanout.to_socket(session.sid, "metrics_snapshot", payload)
        return snapshot

    async def _drop_subscriptions(self, session: ClientSession, scopes: set[Scope]) -> None:
        for metric, department in scopes:
            with contextlib.suppress(KeyError, ValueError):
                await self._fanout.leave(session.sid, room_name(metric, department))
            session.subscriptions.discard((metric, department))

    # -- shutdown ------------------------------------------------------------------------

    _draining = False  # set by drain(): from then on, every connect is refused

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
            eio_sid = self._server.manager.eio_sid_from_sid(session.sid, "/")
            transport = self._server.eio.sockets.get(eio_sid) if eio_sid else None
            status = ConnectionStatus(
                status="draining",
                authenticated=session.principal is not None,
                auth_timeout_seconds=self._settings.auth_timeout_seconds,
                server_time=datetime.now(UTC),
            )
            await self._fanout.to_socket(
                session.sid, "connection_status", status.model_dump(mode="json")
            )
            if transport is None:
                await self._server.disconnect(session.sid)
                return
            # Engine.IO's writer sends what is queued up to this None, then closes the
            # WebSocket; the queue is joined once all of it went out. No CLOSE packet: after
            # one, the Python client does not reconnect.
            transport.queue.put_nowait(None)
            await transport.queue.join()
            # Calls the disconnect handler; a polling client fails its next request.
            await transport.close(wait=False, abort=True)

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


def _on_the_wire(position: Position | None) -> StreamPosition | None:
    return StreamPosition(epoch=position.epoch, offset=position.offset) if position else None


def _client_address(environ: Any) -> str:
    """The client's IP address; under ASGI python-socketio passes the scope along."""
    if not isinstance(environ, dict):
        return "unknown"
    scope = environ.get("asgi.scope")
    client = scope.get("client") if isinstance(scope, dict) else None
    if client:
        return str(client[0])
    return str(environ.get("REMOTE_ADDR", "unknown"))


def _identity(principal: Principal) -> tuple[str, str, frozenset[str]]:
    """What a socket may see: a refreshed token for the same identity keeps subscriptions."""
    return principal.subject, principal.role.value, principal.departments


def _scope_order(scope: Scope) -> tuple[str, bool, str]:
    metric, department = scope
    return (metric, department is not None, department or "")
