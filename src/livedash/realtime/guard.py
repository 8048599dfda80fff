"""The event guard: what every incoming event passes through before its handler runs.

Every event, known or not, counts against its socket's and its user's rate limits before
anything else is looked at. Then it must carry at most one payload and, unless it is public
(`authenticate`), come from an authenticated socket; its handler runs under the socket's
lock. What a handler raises ends here: a `ClientError` is sent to the client as it is, a
database outage as `unavailable`, anything else as `internal` (and logged in full).

`EventGuard.send_error` is the one place where a `ClientError` becomes a client-facing
`error` or `auth_error` event; the rest of the gateway raises, or calls it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import structlog
from pydantic import BaseModel

from livedash.errors import (
    AuthError,
    ClientError,
    Internal,
    InvalidPayload,
    NotAuthenticated,
    StoreError,
    Unavailable,
    UnknownEvent,
)
from livedash.realtime.clients import ClientSession
from livedash.realtime.fanout import FanOut
from livedash.realtime.limiter import SocketLimiter
from livedash.realtime.schemas import ErrorPayload

log = structlog.get_logger(__name__)

Handler = Callable[[ClientSession, Any], Awaitable[BaseModel | None]]
"""Serves one event of a session, given its payload; returns the acknowledgement, if any."""

Served = Callable[..., Awaitable[dict[str, Any] | None]]
"""A handler as python-socketio calls it: with the sid and the event's arguments."""


class EventGuard:
    """Wraps event handlers in the checks every event goes through, and reports refusals."""

    def __init__(
        self,
        sessions: Mapping[str, ClientSession],
        limiter: SocketLimiter,
        fanout: FanOut,
        *,
        known: Iterable[str],
    ) -> None:
        """Guard the events of `sessions`; `known` are the event names served, which a
        client that sends another one is told."""
        self._sessions = sessions
        self._limiter = limiter
        self._fanout = fanout
        self._known = tuple(known)

    def serve(self, event: str, handler: Handler, *, public: bool = False) -> Served:
        """`handler` for `event`, guarded; `public` lets sockets that have not
        authenticated send it."""

        async def serve(sid: str, *args: Any) -> dict[str, Any] | None:
            session = self._sessions.get(sid)
            if session is None:
                return None
            user = session.principal.subject if session.principal else None
            # `socket_event`: a bound `event` would lose to the name of each event logged.
            with structlog.contextvars.bound_contextvars(sid=sid, user=user, socket_event=event):
                try:
                    await self._limiter.event(sid, user)
                    if len(args) > 1:
                        raise InvalidPayload(f"{event} takes a single payload argument")
                    if not public and session.principal is None:
                        raise NotAuthenticated(f"authenticate before sending {event}")
                    async with session.lock:
                        result = await handler(session, args[0] if args else None)
                except ClientError as error:
                    return await self.send_error(sid, event, error)
                except StoreError as error:
                    # The database is down (the status says `stale`): expected, not a bug.
                    log.warning("event_unavailable", error=str(error))
                    return await self.send_error(sid, event, Unavailable())
                except Exception:
                    log.exception("event_failed")
                    return await self.send_error(sid, event, Internal("internal error"))
            return result.model_dump(mode="json", by_alias=True) if result is not None else None

        return serve

    async def refuse_unknown(self, event: Any, sid: str, *args: Any) -> dict[str, Any] | None:
        """Answer an event no handler serves (python-socketio's catch-all): limited like any
        other, then refused."""
        # A raw packet can name its event with any hashable JSON value, not only a string.
        name = event[:64] if isinstance(event, str) else repr(event)[:64]

        async def refuse(session: ClientSession, data: Any) -> BaseModel | None:
            raise UnknownEvent(f"unknown event {name!r}", known=list(self._known))

        return await self.serve(name, refuse, public=True)(sid, *args[:1])

    async def send_error(self, sid: str, event: str | None, error: ClientError) -> dict[str, Any]:
        """Tell socket `sid` that `event` (None: no event of its own) was refused; returns
        the payload sent, which is also the event's acknowledgement."""
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
