"""A stand-in for a Web Push service, and the browser's side of a subscription.

`PushService` is an aiohttp server on a free loopback port that records every POST (headers
and body) and answers 201, or whatever status it is told, or nothing at all (stalled).
`Browser` holds what a browser keeps for a subscription (a P-256 key pair and a 16-byte
auth secret) and decrypts what the service received, as the browser would; `vapid_claims`
checks the VAPID token the way a push service does.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import http_ece  # type: ignore[import-untyped]
import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

WAIT_SECONDS = 10.0
"""How long `next_request` waits before failing the test (nothing arrives: a bug)."""


@dataclass(frozen=True)
class PushRequest:
    """One POST the push service received."""

    path: str
    headers: dict[str, str]
    """Header names in lower case."""
    body: bytes


class PushService:
    """A push service on 127.0.0.1 and a free port, for `async with`."""

    def __init__(self) -> None:
        self.port = 0
        self.requests: list[PushRequest] = []
        self._status = 201
        self._headers: dict[str, str] = {}
        self._stalled = False
        self._released = asyncio.Event()
        self._arrived: asyncio.Queue[PushRequest] = asyncio.Queue()
        self._runner: web.AppRunner | None = None

    @property
    def origin(self) -> str:
        """What a VAPID token's `aud` must be for this service."""
        return f"http://127.0.0.1:{self.port}"

    def endpoint(self, device: str = "device-1") -> str:
        """A subscription's endpoint on this service."""
        return f"{self.origin}/push/{device}"

    def answer(self, status: int, headers: Mapping[str, str] | None = None) -> None:
        """Answer every later request with `status` (and `headers`)."""
        self._status = status
        self._headers = dict(headers or {})

    def stall(self) -> None:
        """Never answer (until the service closes): the sender's timeout must act."""
        self._stalled = True

    async def next_request(self) -> PushRequest:
        """The next request received (waits for it)."""
        async with asyncio.timeout(WAIT_SECONDS):
            return await self._arrived.get()

    async def __aenter__(self) -> PushService:
        app = web.Application()
        app.router.add_post("/push/{device}", self._receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind(("127.0.0.1", 0))
        self.port = listener.getsockname()[1]
        await web.SockSite(self._runner, listener).start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._released.set()  # a stalled handler ends, so the runner need not wait for it
        if self._runner is not None:
            await self._runner.cleanup()

    async def _receive(self, request: web.Request) -> web.Response:
        received = PushRequest(
            path=request.path,
            headers={name.lower(): value for name, value in request.headers.items()},
            body=await request.read(),
        )
        self.requests.append(received)
        self._arrived.put_nowait(received)
        if self._stalled:
            await self._released.wait()
        return web.Response(status=self._status, headers=self._headers)


class Browser:
    """A browser's side of one subscription: its key pair and auth secret."""

    def __init__(self) -> None:
        self.private_key = ec.generate_private_key(ec.SECP256R1())
        self.auth_secret = os.urandom(16)

    @property
    def p256dh(self) -> str:
        point = self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return _base64url(point)

    @property
    def auth(self) -> str:
        return _base64url(self.auth_secret)

    def subscription_json(self, endpoint: str) -> dict[str, Any]:
        """What `PushSubscription.toJSON()` gives in the browser."""
        return {"endpoint": endpoint, "keys": {"p256dh": self.p256dh, "auth": self.auth}}

    def decrypt(self, body: bytes) -> bytes:
        """The plaintext of an aes128gcm push message addressed to this browser."""
        plain = http_ece.decrypt(
            body,
            private_key=self.private_key,
            auth_secret=self.auth_secret,
            version="aes128gcm",
        )
        return bytes(plain)


def vapid_claims(authorization: str, audience: str) -> tuple[dict[str, Any], str]:
    """The claims of a `vapid t=<JWT>, k=<key>` header, and its key `k`, after checking the
    JWT's ES256 signature against `k` and its audience, as a push service does."""
    scheme, _, parameters = authorization.partition(" ")
    if scheme.lower() != "vapid":
        raise ValueError(f"not a vapid authorization: {authorization!r}")
    fields = {}
    for part in parameters.split(","):
        name, _, value = part.strip().partition("=")
        fields[name] = value
    raw = base64.urlsafe_b64decode(fields["k"] + "=" * (-len(fields["k"]) % 4))
    public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
    claims: dict[str, Any] = jwt.decode(
        fields["t"], public, algorithms=["ES256"], audience=audience
    )
    return claims, fields["k"]


def _base64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
