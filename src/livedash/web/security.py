"""Browser hardening: security headers on every HTTP response, and which origins may call us.

`SecurityHeaders` wraps the whole ASGI app (Socket.IO included), so the Engine.IO polling
responses get the same headers as the page. `OriginPolicy` is the one allow-list behind both
the REST API's CORS answers and the Socket.IO handshake's `Origin` check.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from livedash.errors import ConfigurationError

# A year, for this host only: other hosts under the same name may not serve TLS.
HSTS = "max-age=31536000"

_FIXED_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
)
_TLS_SCHEMES = frozenset({"https", "wss"})
_DEFAULT_PORTS = {"http": 80, "https": 443}
# A Host header we are willing to echo into the policy: a name or IPv4 address, or a bracketed
# IPv6 address, with an optional port. Anything else (say, one smuggling a `;`) gets 'self' only.
_HOST = re.compile(r"(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")


def content_security_policy(host: str | None) -> str:
    """The page's policy: everything from our own origin, sockets to our own host, no framing."""
    connect = "'self'"
    if host is not None and _HOST.fullmatch(host):
        # 'self' covers ws:/wss: to our host only in browsers that follow CSP level 3.
        connect += f" ws://{host} wss://{host}"
    return "; ".join(
        (
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            f"connect-src {connect}",
            "img-src 'self' data:",
            "frame-ancestors 'none'",
            "base-uri 'none'",
            "form-action 'self'",
        )
    )


def _host(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"host":
            host: str = value.decode("latin-1")
            return host
    return None


class SecurityHeaders:
    """Pure ASGI middleware adding the security headers to every HTTP response.

    `Strict-Transport-Security` is sent only on requests that came over TLS (directly, or
    through a trusted proxy that uvicorn's proxy-headers support believed).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        added = [
            *_FIXED_HEADERS,
            (b"content-security-policy", content_security_policy(_host(scope)).encode("latin-1")),
        ]
        if scope.get("scheme") in _TLS_SCHEMES:
            added.append((b"strict-transport-security", HSTS.encode("latin-1")))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {bytes(name).lower() for name, _ in headers}
                headers.extend(header for header in added if header[0] not in present)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def normalise_origin(origin: str) -> str:
    """`origin` as browsers send it (`scheme://host[:port]`); `ConfigurationError` if not one."""
    parts = urlsplit(origin.strip())
    try:
        port = parts.port
    except ValueError as error:
        raise ConfigurationError(f"CORS origin {origin!r} has a bad port") from error
    if (
        parts.scheme not in _DEFAULT_PORTS
        or not parts.hostname
        or parts.username is not None
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
    ):
        raise ConfigurationError(
            f"CORS origin {origin!r} is not an origin such as https://dashboard.hospital.example "
            "(a scheme and a host, an optional port, no path; '*' is not accepted)"
        )
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    if port is not None and port != _DEFAULT_PORTS[parts.scheme]:
        host = f"{host}:{port}"
    return f"{parts.scheme}://{host}"


class OriginPolicy:
    """The browser origins allowed to use the service: our own, and those configured."""

    def __init__(self, origins: Iterable[str]) -> None:
        self.origins = frozenset(normalise_origin(origin) for origin in origins)

    def allows(self, origin: str, *, scheme: str, host: str | None) -> bool:
        """Whether a request from `origin`, made to `host` over `scheme`, is allowed."""
        if origin in self.origins:
            return True
        if host is None:
            return False
        own = "https" if scheme in _TLS_SCHEMES else "http"
        return origin.lower() == f"{own}://{host.lower()}"

    def engineio_check(self, origin: str | None, environ: dict[str, Any]) -> bool:
        """Engine.IO's `cors_allowed_origins` callable.

        Engine.IO's own same-origin default takes the scheme from `X-Forwarded-Proto` only, so
        it would refuse the page's own socket when livedash terminates TLS itself; the ASGI
        scope knows the real scheme.
        """
        if not origin:
            return False
        scope = environ.get("asgi.scope", {})
        return self.allows(
            origin, scheme=scope.get("scheme", "http"), host=environ.get("HTTP_HOST")
        )
