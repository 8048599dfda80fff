"""Alert notices by Web Push: to a browser's push service, encrypted for the browser alone.

A browser that subscribes (the Push API's `PushManager.subscribe`, given our VAPID public key)
hands us a `PushSubscription`: the push service's endpoint and the browser's keys. Each notice
is a small JSON document (`PushPayload`, read by the dashboard's service worker) encrypted
with those keys (RFC 8291, `aes128gcm`: pywebpush's `WebPusher.encode`), signed for with our
VAPID key (RFC 8292, py_vapid) and POSTed to the endpoint (RFC 8030) with a TTL and an
Urgency chosen from the severity, and a Topic naming the alert, so that a newer notice of the
same alert replaces one still waiting for an offline device.

The POST is ours, on one aiohttp session that `PushSender` owns (`async with`): pywebpush's
`webpush()` is blocking (requests), and its `webpush_async` opens a session per call, follows
redirects and decodes the whole reply as text. Encryption and signing stay on the event loop:
an ECDH agreement, an AES-GCM record and an ECDSA signature, well under a millisecond.

Push services answer 201; 404 or 410 mean the subscription is gone (`SubscriptionGone`: delete
it); 429, 5xx and timeouts may pass (`DeliveryError`, retryable, with the service's
`Retry-After`); any other refusal will not. Endpoints are capability URLs: only their host
is ever logged.
"""

from __future__ import annotations

import base64
import binascii
import re
import time
from collections.abc import Mapping
from dataclasses import InitVar, dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import urlsplit

import structlog
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import BaseModel, ConfigDict

from livedash.notifications.notice import AlertNotice, DeliveryError, SubscriptionGone

if TYPE_CHECKING:
    import aiohttp

log = structlog.get_logger(__name__)

URGENCY = {"critical": "high", "high": "high", "medium": "normal", "low": "low"}
"""RFC 8030 Urgency by severity: a phone saving its battery still wakes for `high`."""
TTL_SECONDS = {"critical": 3600, "high": 3600, "medium": 4 * 3600, "low": 12 * 3600}
"""How long the push service keeps a notice for a device that is offline. A critical alert
told hours late misleads (the dashboard is the record by then); a low one still informs."""
DEFAULT_URGENCY, DEFAULT_TTL_SECONDS = "normal", 3600
"""For a severity not listed above."""

MAX_PAYLOAD_BYTES = 3993
"""RFC 8291: a 4096-byte record less the aes128gcm header (86), padding delimiter and tag."""
VAPID_LIFETIME_SECONDS = 12 * 3600
"""The VAPID token's `exp`: RFC 8292 allows at most 24 hours."""
TITLE_LENGTH, BODY_LENGTH = 120, 300
"""Notification systems cut longer texts anyway; cutting them here keeps the payload small."""
ERROR_BODY_BYTES = 512

_BASE64URL = re.compile(r"[A-Za-z0-9_-]+={0,2}\Z")
_AUTH_SECRET_BYTES = 16


@dataclass(frozen=True, slots=True)
class PushSubscription:
    """A browser's subscription: the push service's endpoint and the browser's keys.

    `p256dh` is the browser's P-256 public key and `auth` its 16-byte secret, both base64url
    as `PushSubscription.toJSON()` gives them. The endpoint must be https; `allow_http` admits
    http for a local stand-in of a push service (tests). Invalid values raise `ValueError`.
    """

    endpoint: str
    p256dh: str
    auth: str
    allow_http: InitVar[bool] = False

    def __post_init__(self, allow_http: bool) -> None:
        parts = urlsplit(self.endpoint)
        schemes = ("https", "http") if allow_http else ("https",)
        if parts.scheme not in schemes or not parts.hostname:
            raise ValueError(f"the push endpoint must be an {' or '.join(schemes)} URL")
        public = _base64url(self.p256dh, "p256dh")
        try:
            ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), public)
        except ValueError as exc:
            raise ValueError("p256dh is not an uncompressed P-256 public key") from exc
        if len(public) != 65:  # the compressed form (33 bytes) is not what browsers send
            raise ValueError("p256dh is not an uncompressed P-256 public key")
        if len(_base64url(self.auth, "auth")) != _AUTH_SECRET_BYTES:
            raise ValueError(f"auth must be a {_AUTH_SECRET_BYTES}-byte secret")

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, allow_http: bool = False) -> PushSubscription:
        """A subscription from a browser's `PushSubscription.toJSON()`."""
        keys = data.get("keys")
        endpoint = data.get("endpoint")
        if not isinstance(keys, Mapping) or not isinstance(endpoint, str):
            raise ValueError("a subscription has an endpoint and keys (p256dh, auth)")
        p256dh, auth = keys.get("p256dh"), keys.get("auth")
        if not isinstance(p256dh, str) or not isinstance(auth, str):
            raise ValueError("a subscription's keys are p256dh and auth, both strings")
        return cls(endpoint, p256dh, auth, allow_http)

    @property
    def service(self) -> str:
        """The push service's host (what may be logged of the endpoint)."""
        return urlsplit(self.endpoint).hostname or "?"


@dataclass(frozen=True, slots=True)
class VapidKeys:
    """The server's VAPID key pair: the private key (PEM, for `PushSender`) and the public
    application server key (base64url, for `PushManager.subscribe` in the browser)."""

    private_key_pem: str = field(repr=False)
    public_key: str


def generate_vapid_keys() -> VapidKeys:
    """A new P-256 VAPID key pair."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return VapidKeys(pem.decode("ascii"), _application_server_key(key))


class PushPayload(BaseModel):
    """What the service worker's `push` event receives (decrypted): `title` and `body` ready
    to show, `tag` to replace an earlier notification of the same alert, `link` to open."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    title: str
    body: str
    tag: str
    link: str
    alert_id: int
    severity: str
    status: str
    state: str | None
    department: str | None
    raised_at: datetime


def payload(notice: AlertNotice) -> PushPayload:
    """The push payload of a notice."""
    parts = [notice.where]
    measurement = notice.measurement()
    if measurement is not None:
        parts.append(measurement)
    parts.append(f"raised {notice.raised_text()}")
    parts.append(notice.condition())
    return PushPayload(
        title=_clip(f"[{notice.severity.upper()}] {' '.join(notice.title.split())}", TITLE_LENGTH),
        body=_clip(" · ".join(parts), BODY_LENGTH),
        tag=tag(notice),
        link=notice.link,
        alert_id=notice.alert_id,
        severity=notice.severity,
        status=notice.status,
        state=notice.state,
        department=notice.department,
        raised_at=notice.raised_at,
    )


def tag(notice: AlertNotice) -> str:
    """The notification tag and push Topic of an alert: one per alert, so repeats replace."""
    return f"alert-{notice.alert_id}"


class PushSender:
    """Sends alert notices by Web Push, signed with one VAPID key; open it with `async with`."""

    def __init__(self, private_key_pem: str, subject: str, *, timeout: float = 10.0) -> None:
        if not subject.startswith(("mailto:", "https://")):
            raise ValueError("the VAPID subject is a mailto: or https: URL of the operator")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        # Imported by the one instance that sends pushes, when it starts to: py_vapid and
        # pywebpush (with requests) are memory every other instance need not hold.
        from py_vapid import Vapid02, VapidException  # type: ignore[import-untyped]

        key = _private_key(private_key_pem)
        self.subject = subject
        self.timeout = timeout
        self.application_server_key = _application_server_key(key)
        """The public key browsers subscribe with (base64url)."""
        self._vapid = Vapid02(private_key=key)
        self._session: aiohttp.ClientSession | None = None
        try:  # py_vapid checks the subject's form only when it signs: find out now
            self._authorization("https://push.example")
        except VapidException as exc:
            raise ValueError(f"the VAPID subject {subject!r} is not usable: {exc}") from exc

    def __repr__(self) -> str:
        return f"PushSender(subject={self.subject!r}, key={self.application_server_key[:12]}…)"

    async def __aenter__(self) -> Self:
        # Imported by the instance that sends pushes, when it starts to (realtime/server.py
        # keeps aiohttp out of the other instances).
        import aiohttp

        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            headers={"User-Agent": "livedash"},
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP session (its pooled connections to the push services)."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(
        self,
        subscription: PushSubscription,
        notice: AlertNotice,
        *,
        ttl_seconds: int | None = None,
    ) -> None:
        """Deliver `notice` to one browser; a `DeliveryError` says whether trying again may
        help (`SubscriptionGone`: never). `ttl_seconds` defaults by severity (`TTL_SECONDS`)."""
        if self._session is None:
            raise RuntimeError("PushSender is not open: use `async with PushSender(...)`")
        import aiohttp  # loaded by __aenter__: a lookup

        severity = notice.severity.lower()
        ttl = TTL_SECONDS.get(severity, DEFAULT_TTL_SECONDS) if ttl_seconds is None else ttl_seconds
        if ttl < 0:
            raise ValueError("ttl_seconds must not be negative")
        document = payload(notice).model_dump_json().encode()
        if len(document) > MAX_PAYLOAD_BYTES:
            raise DeliveryError(
                f"the push payload is {len(document)} bytes, over {MAX_PAYLOAD_BYTES}",
                retryable=False,
            )
        headers = {
            **self._authorization(subscription.endpoint),
            "TTL": str(ttl),
            "Urgency": URGENCY.get(severity, DEFAULT_URGENCY),
            "Topic": tag(notice),
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
        }
        body = _encrypt(subscription, document)
        try:
            async with self._session.post(
                subscription.endpoint, data=body, headers=headers, allow_redirects=False
            ) as response:
                if response.status < 300:
                    log.info(
                        "push_sent",
                        alert=notice.alert_id,
                        service=subscription.service,
                        status=response.status,
                    )
                    return
                try:
                    detail = await response.content.read(ERROR_BODY_BYTES)
                except (aiohttp.ClientError, TimeoutError):
                    detail = b""  # the status alone decides
                raise _refusal(
                    subscription.service,
                    response.status,
                    f"{response.reason or ''} {detail.decode('utf-8', 'replace')}".strip(),
                    response.headers.get("Retry-After"),
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DeliveryError(
                f"cannot reach the push service {subscription.service}: {exc!r}", retryable=True
            ) from exc

    def _authorization(self, endpoint: str) -> dict[str, str]:
        """The VAPID `Authorization` header for the push service of `endpoint`."""
        parts = urlsplit(endpoint)
        default = {"https": 443, "http": 80}[parts.scheme]
        port = parts.port
        origin = f"{parts.scheme}://{parts.hostname}"
        if port is not None and port != default:
            origin += f":{port}"
        claims = {
            "aud": origin,
            "sub": self.subject,
            "exp": int(time.time()) + VAPID_LIFETIME_SECONDS,
        }
        signed = self._vapid.sign(claims)
        return {"Authorization": str(signed["Authorization"])}


def _encrypt(subscription: PushSubscription, document: bytes) -> bytes:
    # Keys are handed over padded: pywebpush's own re-padding is off by one for some lengths.
    info = {
        "endpoint": subscription.endpoint,
        "keys": {"p256dh": _padded(subscription.p256dh), "auth": _padded(subscription.auth)},
    }
    from pywebpush import WebPusher  # type: ignore[import-untyped]

    encoded = WebPusher(info).encode(document, "aes128gcm")
    return bytes(encoded["body"])


def _refusal(service: str, status: int, detail: str, retry_after: str | None) -> DeliveryError:
    """The `DeliveryError` for a push service's non-2xx answer."""
    message = f"the push service {service} answered {status}: {detail}".rstrip(": ")
    if status in (404, 410):
        return SubscriptionGone(message)
    if status in (408, 429) or status >= 500:
        return DeliveryError(message, retryable=True, retry_after=_seconds(retry_after))
    return DeliveryError(message, retryable=False)


def _seconds(retry_after: str | None) -> float | None:
    """`Retry-After` (seconds, or an HTTP date) as seconds from now; `None` if absent or bad."""
    if retry_after is None:
        return None
    text = retry_after.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _private_key(pem: str) -> ec.EllipticCurvePrivateKey:
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ValueError("the VAPID private key is not an unencrypted PEM private key") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("the VAPID private key must be a P-256 (prime256v1) EC key")
    return key


def _application_server_key(key: ec.EllipticCurvePrivateKey) -> str:
    point = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return base64.urlsafe_b64encode(point).rstrip(b"=").decode("ascii")


def _base64url(value: str, name: str) -> bytes:
    if not _BASE64URL.match(value):
        raise ValueError(f"{name} is not base64url")
    try:
        return base64.urlsafe_b64decode(_padded(value))
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"{name} is not base64url") from exc


def _padded(value: str) -> str:
    stripped = value.rstrip("=")
    return stripped + "=" * (-len(stripped) % 4)


def _clip(text: str, length: int) -> str:
    return text if len(text) <= length else text[: length - 1] + "…"
