"""Each request's id, and its one access line.

`RequestContext` wraps the whole ASGI app (the REST API, the page and Engine.IO's handshakes
alike). A request's id is the `X-Request-ID` it came with (from a client, or a proxy that
sets one) when that is a sane token, else a new one (uuid4, hex). It is bound as
`request_id` for every event logged while the request is served, and sent back in the
`X-Request-ID` response header. Each HTTP request then ends with one `request` event: method,
path, status, duration and client address; never its query string, which can carry a token.
This replaces uvicorn's access log. A WebSocket is passed on untouched: its socket's events
are logged with the socket's `sid` and user instead, and the Engine.IO handshake's HTTP
requests (long-polling) get ids and access lines like any other.
"""

from __future__ import annotations

import re
import time
import uuid

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = structlog.get_logger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"
MAX_REQUEST_ID_LENGTH = 128
MAX_LOGGED_PATH_LENGTH = 512

_HEADER = REQUEST_ID_HEADER.lower().encode("ascii")
# Printable, no spaces or quotes: nothing that could forge or break a log line.
_SANE_ID = re.compile(rb"[A-Za-z0-9._:/+=@\-]{1,%d}" % MAX_REQUEST_ID_LENGTH)


def request_id_of(scope: Scope) -> str:
    """The id of the request in `scope`: its `X-Request-ID` if sane, else a new one."""
    for name, value in scope.get("headers", ()):
        if name == _HEADER:
            if _SANE_ID.fullmatch(value):
                return str(value.decode("ascii"))
            break
    return uuid.uuid4().hex


def _with_request_id(message: Message, header: tuple[bytes, bytes]) -> Message:
    headers = list(message.get("headers", ()))
    if not any(name.lower() == _HEADER for name, _ in headers):
        headers.append(header)
    return {**message, "headers": headers}


class RequestContext:
    """Pure ASGI middleware: binds each request's id, returns it, logs each HTTP request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            # WebSockets pass untouched: the gateway writes frames straight to the server's
            # WebSocket `send` (realtime/websocket.py, the fan-out's fast path), and a socket's
            # events are logged with its `sid` and user (realtime/guard.py). An id bound for a
            # connection's whole life would cost 1 KB of every idle socket (bench/idle_sockets.py).
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope)
        header = (_HEADER, request_id.encode("ascii"))
        with structlog.contextvars.bound_contextvars(request_id=request_id):
            await self._http(scope, receive, send, header)

    async def _http(
        self, scope: Scope, receive: Receive, send: Send, header: tuple[bytes, bytes]
    ) -> None:
        started = time.perf_counter()
        status: int | None = None  # None: no response was sent (the client went away)

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message = _with_request_id(message, header)
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            if status is None:
                status = 500  # what uvicorn answers for an app that failed before answering
            raise
        finally:
            client = scope.get("client")
            log.info(
                "request",
                method=scope.get("method"),
                path=str(scope.get("path", ""))[:MAX_LOGGED_PATH_LENGTH],
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
                client=client[0] if client else None,
            )
