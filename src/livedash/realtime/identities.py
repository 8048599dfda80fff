"""Who each socket is: signing in, the sign-in timeout, token expiry and the recheck.

A socket has `auth_timeout_seconds` from connecting to authenticate (in the handshake or with
`authenticate`); one that has not by then is told so (`auth_error`) and closed. An
authenticated socket's timer is its token's expiry: then it loses its identity and its
subscriptions, and has the sign-in timeout again to send a new token.

Every `auth_recheck_seconds` each authenticated socket's token is checked again against the
users table and the revoked tokens: a revoked token, or a user deactivated or signed out,
loses its identity as on expiry; a user whose role or departments shrank keeps only the
subscriptions still in scope. All of this runs under the socket's lock, as its events do.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import structlog
from pydantic import BaseModel

from livedash.aio import BackgroundTasks
from livedash.auth.tokens import Principal, verify_token
from livedash.auth.users import Authenticator
from livedash.errors import AuthError, ClientError, InvalidToken, StoreError
from livedash.metrics.definitions import METRIC_NAMES
from livedash.realtime.clients import ClientSession
from livedash.realtime.fanout import FanOut
from livedash.realtime.guard import EventGuard
from livedash.realtime.requests import ordered, parse
from livedash.realtime.rooms import alert_room, user_room
from livedash.realtime.schemas import Authenticated, AuthenticateRequest
from livedash.realtime.server import GatewayServer
from livedash.realtime.subscriptions import Subscriptions
from livedash.settings import Settings

log = structlog.get_logger(__name__)

_AUTH_TIMEOUT = "authentication timed out"


class Identities:
    """Serves `authenticate`, and ends identities that expire or are revoked."""

    def __init__(
        self,
        settings: Settings,
        sessions: Mapping[str, ClientSession],
        fanout: FanOut,
        *,
        authenticator: Authenticator,
        subscriptions: Subscriptions,
        guard: EventGuard,
        server: GatewayServer,
        background: BackgroundTasks,
    ) -> None:
        """Check tokens with `authenticator`; refusals are sent through `guard`, and a socket
        that never authenticates is closed on `server`."""
        self._settings = settings
        self._sessions = sessions
        self._fanout = fanout
        self._authenticator = authenticator
        self._subscriptions = subscriptions
        self._guard = guard
        self._server = server
        self._background = background
        self.timed_out = 0  # sockets closed for not signing in within the timeout

    def await_sign_in(self, session: ClientSession) -> None:
        """Give a socket without an identity the sign-in timeout to authenticate."""
        self._arm_timer(session, self._settings.auth_timeout_seconds, _AUTH_TIMEOUT)

    async def authenticate(self, session: ClientSession, data: Any) -> BaseModel:
        """`authenticate`: take the identity of the token sent, until it expires."""
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
            await self._subscriptions.drop(session, set(session.subscriptions))
        session.principal, session.claims = principal, claims
        remaining = (principal.expires_at - datetime.now(UTC)).total_seconds()
        self._arm_timer(session, remaining, "the token has expired")
        log.info("socket_authenticated", sid=session.sid, user=principal.subject)
        return await self._send_authenticated(session, principal)

    async def _send_authenticated(
        self, session: ClientSession, principal: Principal
    ) -> Authenticated:
        visible = await self._subscriptions.visible(session)
        await self._follow_alerts(session, visible, principal.subject)
        reply = Authenticated(
            sub=principal.subject,
            role=principal.role.value,
            departments=ordered(visible),
            metrics=list(METRIC_NAMES),
            expires_at=principal.expires_at,
            timezone=self._settings.timezone,
            currency=self._settings.currency,
            locale=self._settings.locale,
        )
        await self._fanout.to_socket(session.sid, "authenticated", reply.model_dump(mode="json"))
        return reply

    async def _follow_alerts(
        self, session: ClientSession, visible: set[str | None], user: str | None
    ) -> None:
        """Be in the alert rooms of exactly the departments the identity may see, and in the
        room of its user's own notifications."""
        for department in session.alert_scopes - visible:
            await self._fanout.leave(session.sid, alert_room(department))
        for department in visible - session.alert_scopes:
            await self._fanout.join(session.sid, alert_room(department))
        session.alert_scopes = set(visible)
        if session.user_room is not None and session.user_room != user:
            await self._fanout.leave(session.sid, user_room(session.user_room))
            session.user_room = None
        if user is not None and session.user_room is None:
            await self._fanout.join(session.sid, user_room(user))
            session.user_room = user

    # -- the recheck -----------------------------------------------------------------------

    async def recheck_periodically(self) -> None:
        """Recheck every `auth_recheck_seconds`, for as long as it runs."""
        while True:
            await asyncio.sleep(self._settings.auth_recheck_seconds)
            try:
                await self.recheck()
            except StoreError as error:
                # The database cannot say now: the sockets keep what it last said.
                log.warning("identity_recheck_unavailable", error=str(error))
            except Exception:
                log.exception("identity_recheck_failed")

    async def recheck(self) -> int:
        """Check every authenticated socket's token again; returns how many sockets lost some
        or all of what they could see (see the module's docstring)."""
        signed_in = [
            (session, session.claims)
            for session in self._sessions.values()
            if session.claims is not None
        ]
        if not signed_in:
            return 0
        decisions = await self._authenticator.recheck([claims for _, claims in signed_in])
        changed = 0
        for (session, checked), decision in zip(signed_in, decisions, strict=True):
            async with session.lock:
                if session.claims is not checked or session.principal is None:
                    continue  # authenticated again (or signed out) meanwhile
                if isinstance(decision, InvalidToken):
                    log.info("socket_identity_revoked", sid=session.sid, reason=decision.message)
                    await self._drop_identity(session, decision)
                    changed += 1
                elif _identity(decision) != _identity(session.principal):
                    changed += await self._narrow(session, decision)
        return changed

    async def _narrow(self, session: ClientSession, principal: Principal) -> bool:
        """Give the socket `principal`'s scope; True if it lost a subscription or a
        department it could see."""
        before = await self._subscriptions.visible(session)
        session.principal = principal
        visible = await self._subscriptions.visible(session)
        gone = {scope for scope in session.subscriptions if scope[1] not in visible}
        await self._subscriptions.drop(session, gone)
        log.info(
            "socket_scope_changed",
            sid=session.sid,
            role=principal.role.value,
            dropped=len(gone),
        )
        await self._send_authenticated(session, principal)
        return bool(gone) or not before <= visible

    # -- timers and losing an identity -----------------------------------------------------

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
            await self._guard.send_error(session.sid, None, AuthError(reason))
            self.timed_out += 1
            log.info("socket_auth_timeout", sid=session.sid)
            await self._server.close_transport(session.sid)

    async def _drop_identity(self, session: ClientSession, reason: ClientError) -> None:
        """`_forget_identity`, and tell the socket why."""
        await self._forget_identity(session)
        await self._guard.send_error(session.sid, None, reason)

    async def _forget_identity(self, session: ClientSession) -> None:
        """Forget who the socket was, and every subscription of that identity. It may
        authenticate again within the sign-in timeout."""
        await self._subscriptions.drop(session, set(session.subscriptions))
        await self._follow_alerts(session, set(), None)
        session.principal = session.claims = None
        self.await_sign_in(session)


def _identity(principal: Principal) -> tuple[str, str, frozenset[str]]:
    """What a socket may see: a refreshed token for the same identity keeps subscriptions."""
    return principal.subject, principal.role.value, principal.departments
