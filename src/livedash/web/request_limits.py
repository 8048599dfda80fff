"""Request size limits: heads, and bodies counted while they arrive, refused past their limit.

`RequestLimits` wraps the whole ASGI app, so the Engine.IO long-polling POSTs are capped like
the REST API (python-engineio and FastAPI both read a whole body before they look at it).
Each path prefix has its own body limit. A refusal is a 413 (body) or 431 (head) as problem
details (`livedash.web.problems`), and the connection is closed after it, so the rest of an
oversized body is never read. uvicorn's h11 parser (see `livedash.service`) bounds what a head
can cost before this sees it; this holds it to `MAX_REQUEST_HEAD_BYTES`.
"""

from __future__ import annotations

from collections.abc import Mapping

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from livedash.settings import Settings
from livedash.web.auth_api import MAX_BODY_BYTES as AUTH_MAX_BODY_BYTES
from livedash.web.problems import PROBLEM_JSON, Problem, problem, problem_body

log = structlog.get_logger(__name__)

MAX_REQUEST_HEAD_BYTES = 16 * 1024
"""The request line and headers together (a browser sends 1 to 2 KiB)."""
DEFAULT_MAX_BODY_BYTES = 16 * 1024
"""Paths without a limit of their own: the page, `/health`, `/api/metrics` take no body."""
SOCKETIO_PREFIX = "/socket.io"  # python-socketio's default `socketio_path`, which app.py keeps

_DISCONNECT: Message = {"type": "http.disconnect"}
_CLOSE = (b"connection", b"close")


def body_limits(settings: Settings) -> dict[str, int]:
    """The body limit of each path prefix that takes more than the default."""
    return {
        "/api/auth": AUTH_MAX_BODY_BYTES,
        "/api/ingest": settings.max_payload_bytes,
        # Engine.IO's own `max_http_buffer_size`, which it checks only against Content-Length.
        SOCKETIO_PREFIX: settings.max_payload_bytes,
    }


class RequestLimits:
    """Pure ASGI middleware refusing an oversized request head (431) or body (413).

    A declared `Content-Length` over the path's limit is refused before the app runs; a chunked
    body as soon as its running total passes the limit. The app then sees the client as gone
    (`http.disconnect`), which every ASGI app handles already, and whatever it answers is
    dropped for the 413.
    """

    def __init__(
        self,
        app: ASGIApp,
        body_limits: Mapping[str, int],
        *,
        default_body: int = DEFAULT_MAX_BODY_BYTES,
        head: int = MAX_REQUEST_HEAD_BYTES,
    ) -> None:
        self.app = app
        self.default_body = default_body
        self.head = head
        # Longest prefix first, so that a nested prefix wins over the one that contains it.
        self.body_limits = sorted(
            ((prefix.rstrip("/"), limit) for prefix, limit in body_limits.items()),
            key=lambda item: len(item[0]),
            reverse=True,
        )

    def body_limit(self, path: str) -> int:
        """The body limit of a request to `path`."""
        for prefix, limit in self.body_limits:
            if path == prefix or path.startswith(prefix + "/"):
                return limit
        return self.default_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if _head_size(scope) > self.head:
            # No `instance`: the path may be what made the head too large.
            error = problem(
                431,
                "headers_too_large",
                f"the request line and headers must be at most {self.head} bytes",
            )
            if scope["type"] == "websocket":
                _log_refusal(scope, 403, error)
                await send({"type": "websocket.close"})  # before the handshake: a 403
            else:
                _log_refusal(scope, 431, error)
                await _refuse(send, 431, error)
            return
        if scope["type"] == "http":
            await self._limit_body(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _limit_body(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self.body_limit(scope["path"])
        too_large = problem(
            413,
            "payload_too_large",
            f"the request body must be at most {limit} bytes",
            instance=_path(scope),
        )
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            _log_refusal(scope, 413, too_large)
            await _refuse(send, 413, too_large)
            return

        received = 0
        # No body at all (a GET, an empty POST) is complete before it is read.
        complete = declared == 0 or (declared is None and not _chunked(scope))
        started = refused = False

        async def capped_receive() -> Message:
            nonlocal received, complete, refused
            if refused:
                return _DISCONNECT
            message = await receive()
            if message["type"] != "http.request":
                return message
            received += len(message.get("body", b""))
            if received > limit:
                refused = True
                if not started:
                    _log_refusal(scope, 413, too_large)
                    await _refuse(send, 413, too_large)
                return _DISCONNECT
            complete = not message.get("more_body", False)
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused and not started:
                return  # the 413 went out instead
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers", ()))
                if not complete and _CLOSE not in headers:
                    # An answer before the body was read (a 401, say): close rather than let
                    # the server read and discard the rest of a body of any size.
                    message = {**message, "headers": [*headers, _CLOSE]}
            await send(message)

        try:
            await self.app(scope, capped_receive, guarded_send)
        except Exception:
            # Told the client was gone, the app may fail on its way out (Starlette raises
            # `ClientDisconnect`); the client has its 413.
            if not refused:
                raise


def _head_size(scope: Scope) -> int:
    """The request head's size as sent, near enough: request line and header lines."""
    line = len(scope.get("raw_path") or b"") + len(scope.get("query_string", b"")) + 32
    return line + sum(len(name) + len(value) + 4 for name, value in scope["headers"])


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            text = bytes(value).strip()
            # The server has refused a malformed length already; a digit string here is all.
            return int(text) if text.isdigit() else None
    return None


def _chunked(scope: Scope) -> bool:
    return any(name == b"transfer-encoding" for name, _ in scope["headers"])


def _path(scope: Scope) -> str:
    raw = scope.get("raw_path")
    return raw.decode("latin-1") if isinstance(raw, bytes) else str(scope["path"])


def _log_refusal(scope: Scope, status: int, error: Problem) -> None:
    client = scope.get("client")
    log.info(
        "api_refused",
        path=scope["path"][:200],
        status=status,
        code=error.code,
        address=client[0] if client else None,
        reason=error.detail,
    )


async def _refuse(send: Send, status: int, error: Problem) -> None:
    body = problem_body(error)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", PROBLEM_JSON.encode()),
                (b"content-length", str(len(body)).encode("latin-1")),
                # The rest of the request is not read: the connection cannot carry another.
                _CLOSE,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
