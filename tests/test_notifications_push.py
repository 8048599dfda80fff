"""Alert notices by Web Push, to a local stand-in for the push service; the test plays the
browser: it decrypts what arrived and checks the VAPID token as a push service would."""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import http_ece  # type: ignore[import-untyped]
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from structlog.testing import capture_logs

from livedash.notifications.notice import AlertNotice, DeliveryError, SubscriptionGone
from livedash.notifications.push import (
    PushPayload,
    PushSender,
    PushSubscription,
    VapidKeys,
    generate_vapid_keys,
    payload,
)
from livedash.testing.servers import free_port
from tests.support.push_service import Browser, PushService, vapid_claims

SUBJECT = "mailto:it-operations@hospital.example"


def make_notice(**changes: Any) -> AlertNotice:
    fields: dict[str, Any] = {
        "alert_id": 42,
        "rule": "ed_occupancy_high",
        "department": "ED",
        "department_name": "Emergency",
        "severity": "critical",
        "state": "firing",
        "status": "active",
        "title": "ED occupancy above 95%",
        "value": 0.97125,
        "threshold": 0.95,
        "clear_at": 0.9,
        "raised_at": datetime(2024, 7, 1, 22, 30, tzinfo=UTC),
        "link": "https://dash.hospital.example/alerts/42",
        "hospital": "St. Example Hospital",
        "zone": "Europe/Berlin",
    }
    return AlertNotice(**{**fields, **changes})


@pytest.fixture(scope="module")
def keys() -> VapidKeys:
    return generate_vapid_keys()


@pytest.fixture
async def service() -> AsyncIterator[PushService]:
    async with PushService() as running:
        yield running


@pytest.fixture
async def sender(keys: VapidKeys) -> AsyncIterator[PushSender]:
    async with PushSender(keys.private_key_pem, SUBJECT, timeout=5) as opened:
        yield opened


@pytest.fixture
def browser() -> Browser:
    return Browser()


def subscribe(browser: Browser, service: PushService) -> PushSubscription:
    return PushSubscription.from_json(
        browser.subscription_json(service.endpoint()), allow_http=True
    )


async def test_the_browser_decrypts_the_notice(
    sender: PushSender, service: PushService, browser: Browser
) -> None:
    notice = make_notice()
    with capture_logs() as logs:
        await sender.send(subscribe(browser, service), notice)

    request = await service.next_request()
    assert request.path == "/push/device-1"
    assert request.headers["content-encoding"] == "aes128gcm"
    assert request.headers["content-type"] == "application/octet-stream"
    delivered = PushPayload.model_validate_json(browser.decrypt(request.body))
    assert delivered == payload(notice)
    assert delivered.title == "[CRITICAL] ED occupancy above 95%"
    assert delivered.body == (
        "Emergency · 0.971 (fires at 0.95, clears at 0.9) · raised 2024-07-02 00:30 CEST"
        " · firing, active"
    )
    assert delivered.tag == "alert-42"
    assert delivered.link == notice.link
    assert delivered.alert_id == 42
    assert delivered.severity == "critical"
    assert delivered.raised_at == notice.raised_at
    # The endpoint is a capability URL: only its host is logged.
    assert logs == [
        {
            "event": "push_sent",
            "alert": 42,
            "service": "127.0.0.1",
            "status": 201,
            "log_level": "info",
        }
    ]


async def test_another_browser_cannot_read_it(
    sender: PushSender, service: PushService, browser: Browser
) -> None:
    await sender.send(subscribe(browser, service), make_notice())

    request = await service.next_request()
    with pytest.raises(http_ece.ECEException):
        Browser().decrypt(request.body)


async def test_the_vapid_token_is_signed_with_our_key(
    sender: PushSender, service: PushService, browser: Browser, keys: VapidKeys
) -> None:
    await sender.send(subscribe(browser, service), make_notice())

    request = await service.next_request()
    claims, public_key = vapid_claims(request.headers["authorization"], service.origin)
    assert public_key == keys.public_key == sender.application_server_key
    assert claims["aud"] == service.origin
    assert claims["sub"] == SUBJECT
    assert time.time() < claims["exp"] <= time.time() + 24 * 3600


async def test_a_token_signed_by_another_key_is_told_apart(
    service: PushService, browser: Browser, keys: VapidKeys
) -> None:
    async with PushSender(generate_vapid_keys().private_key_pem, SUBJECT) as impostor:
        await impostor.send(subscribe(browser, service), make_notice())

    request = await service.next_request()
    _, public_key = vapid_claims(request.headers["authorization"], service.origin)
    assert public_key != keys.public_key


@pytest.mark.parametrize(
    ("severity", "urgency", "ttl"),
    [
        ("critical", "high", "3600"),
        ("high", "high", "3600"),
        ("medium", "normal", "14400"),
        ("low", "low", "43200"),
        ("unheard-of", "normal", "3600"),
    ],
)
async def test_ttl_and_urgency_follow_the_severity(
    sender: PushSender,
    service: PushService,
    browser: Browser,
    severity: str,
    urgency: str,
    ttl: str,
) -> None:
    await sender.send(subscribe(browser, service), make_notice(severity=severity))

    request = await service.next_request()
    assert request.headers["urgency"] == urgency
    assert request.headers["ttl"] == ttl
    assert request.headers["topic"] == "alert-42"


async def test_an_explicit_ttl_wins(
    sender: PushSender, service: PushService, browser: Browser
) -> None:
    await sender.send(subscribe(browser, service), make_notice(), ttl_seconds=60)

    assert (await service.next_request()).headers["ttl"] == "60"


@pytest.mark.parametrize("status", [404, 410])
async def test_a_forgotten_subscription_is_gone(
    sender: PushSender, service: PushService, browser: Browser, status: int
) -> None:
    service.answer(status)

    with pytest.raises(SubscriptionGone, match=str(status)) as caught:
        await sender.send(subscribe(browser, service), make_notice())

    assert caught.value.retryable is False
    assert isinstance(caught.value, DeliveryError)


@pytest.mark.parametrize(
    ("status", "headers", "retry_after"),
    [
        (500, {}, None),
        (503, {"Retry-After": "120"}, 120.0),
        (429, {"Retry-After": "30"}, 30.0),
    ],
)
async def test_overload_and_server_errors_are_retryable(
    sender: PushSender,
    service: PushService,
    browser: Browser,
    status: int,
    headers: dict[str, str],
    retry_after: float | None,
) -> None:
    service.answer(status, headers)

    with pytest.raises(DeliveryError, match=str(status)) as caught:
        await sender.send(subscribe(browser, service), make_notice())

    assert not isinstance(caught.value, SubscriptionGone)
    assert caught.value.retryable is True
    assert caught.value.retry_after == retry_after


async def test_a_retry_after_date_becomes_seconds(
    sender: PushSender, service: PushService, browser: Browser
) -> None:
    service.answer(503, {"Retry-After": format_datetime(datetime.now(UTC) + timedelta(minutes=2))})

    with pytest.raises(DeliveryError) as caught:
        await sender.send(subscribe(browser, service), make_notice())

    assert caught.value.retry_after is not None
    assert 0 < caught.value.retry_after <= 120


@pytest.mark.parametrize("status", [400, 403, 413])
async def test_other_refusals_are_not_retryable(
    sender: PushSender, service: PushService, browser: Browser, status: int
) -> None:
    service.answer(status)

    with pytest.raises(DeliveryError, match=str(status)) as caught:
        await sender.send(subscribe(browser, service), make_notice())

    assert not isinstance(caught.value, SubscriptionGone)
    assert caught.value.retryable is False


async def test_a_service_that_does_not_answer_times_out_retryably(
    keys: VapidKeys, service: PushService, browser: Browser
) -> None:
    service.stall()

    async with PushSender(keys.private_key_pem, SUBJECT, timeout=0.5) as impatient:
        with pytest.raises(DeliveryError, match="cannot reach") as caught:
            await impatient.send(subscribe(browser, service), make_notice())

    assert caught.value.retryable is True


async def test_a_service_that_is_down_is_retryable(sender: PushSender, browser: Browser) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}/push/device-1"
    subscription = PushSubscription(endpoint, browser.p256dh, browser.auth, allow_http=True)

    with pytest.raises(DeliveryError, match="cannot reach") as caught:
        await sender.send(subscription, make_notice())

    assert caught.value.retryable is True


async def test_a_payload_too_large_is_not_sent(
    sender: PushSender, service: PushService, browser: Browser
) -> None:
    notice = make_notice(link="https://dash.hospital.example/alerts/42?" + "x" * 4000)

    with pytest.raises(DeliveryError, match="over 3993") as caught:
        await sender.send(subscribe(browser, service), notice)

    assert caught.value.retryable is False
    assert service.requests == []


async def test_long_texts_are_cut(
    sender: PushSender, service: PushService, browser: Browser
) -> None:
    await sender.send(subscribe(browser, service), make_notice(title="Ü" * 1000))

    delivered = PushPayload.model_validate_json(
        browser.decrypt((await service.next_request()).body)
    )
    assert len(delivered.title) == 120
    assert delivered.title.endswith("…")


async def test_sending_needs_an_open_sender(keys: VapidKeys, browser: Browser) -> None:
    closed = PushSender(keys.private_key_pem, SUBJECT)
    subscription = PushSubscription("https://push.example/x", browser.p256dh, browser.auth)

    with pytest.raises(RuntimeError, match="async with"):
        await closed.send(subscription, make_notice())


def test_generated_vapid_keys_make_a_pair(keys: VapidKeys) -> None:
    private = serialization.load_pem_private_key(keys.private_key_pem.encode(), password=None)
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    assert isinstance(private.curve, ec.SECP256R1)
    point = base64.urlsafe_b64decode(keys.public_key + "=" * (-len(keys.public_key) % 4))
    assert len(point) == 65
    assert "=" not in keys.public_key
    public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    assert public.public_numbers() == private.public_key().public_numbers()
    assert PushSender(keys.private_key_pem, SUBJECT).application_server_key == keys.public_key
    assert generate_vapid_keys() != keys
    assert "PRIVATE" not in repr(keys)


def test_a_vapid_key_that_cannot_sign_is_refused() -> None:
    rsa_pem = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    with pytest.raises(ValueError, match="P-256"):
        PushSender(rsa_pem, SUBJECT)
    with pytest.raises(ValueError, match="PEM"):
        PushSender("not a key", SUBJECT)
    with pytest.raises(ValueError, match="mailto"):
        PushSender(generate_vapid_keys().private_key_pem, "it-operations@hospital.example")
    with pytest.raises(ValueError, match="not usable"):
        PushSender(generate_vapid_keys().private_key_pem, "mailto:nobody")


def test_a_subscription_from_the_browser_json(browser: Browser) -> None:
    data = browser.subscription_json("https://fcm.googleapis.com/fcm/send/abc")
    subscription = PushSubscription.from_json(data)
    assert subscription.endpoint == "https://fcm.googleapis.com/fcm/send/abc"
    assert subscription.p256dh == browser.p256dh
    assert subscription.auth == browser.auth
    assert subscription.service == "fcm.googleapis.com"
    padded = PushSubscription(subscription.endpoint, browser.p256dh + "=", browser.auth + "==")
    assert padded.auth.endswith("==")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"endpoint": "http://push.example/x"}, "must be an https URL"),
        ({"endpoint": "ftp://push.example/x"}, "must be an https URL"),
        ({"endpoint": "https:///no-host"}, "must be an https URL"),
        ({"p256dh": "not base64!"}, "p256dh is not base64url"),
        ({"p256dh": "abcde"}, "p256dh is not base64url"),
        ({"p256dh": _b64(b"\x04" + bytes(64))}, "not an uncompressed P-256"),
        ({"p256dh": _b64(b"\x04" + bytes(31))}, "not an uncompressed P-256"),
        ({"auth": _b64(bytes(15))}, "16-byte secret"),
        ({"auth": "a+b/"}, "auth is not base64url"),
    ],
)
def test_an_invalid_subscription_is_refused(
    browser: Browser, change: dict[str, str], message: str
) -> None:
    fields = {"endpoint": "https://push.example/x", "p256dh": browser.p256dh, "auth": browser.auth}
    fields.update(change)
    with pytest.raises(ValueError, match=message):
        PushSubscription(fields["endpoint"], fields["p256dh"], fields["auth"])


def test_a_compressed_browser_key_is_refused(browser: Browser) -> None:
    compressed = browser.private_key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
    )
    with pytest.raises(ValueError, match="uncompressed"):
        PushSubscription("https://push.example/x", _b64(compressed), browser.auth)


@pytest.mark.parametrize(
    "data",
    [
        {"endpoint": "https://push.example/x"},
        {"endpoint": "https://push.example/x", "keys": {"p256dh": "x"}},
        {"keys": {"p256dh": "x", "auth": "y"}},
    ],
)
def test_incomplete_browser_json_is_refused(data: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="subscription"):
        PushSubscription.from_json(data)
