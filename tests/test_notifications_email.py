"""Alert notices by e-mail, through a real SMTP server (aiosmtpd) on a free port."""

from __future__ import annotations

import dataclasses
import ssl
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from livedash.alerts.messages import AlertMessage
from livedash.notifications.email import EmailSender, message_id
from livedash.notifications.notice import AlertNotice, DeliveryError
from livedash.testing.servers import free_port
from tests.support.smtp import SmtpServer, tls_contexts

TO = "charge.nurse@hospital.example"
SENDER = "Livedash <alerts@hospital.example>"
PASSWORD = "s3cret-relay-password"


def make_notice(**changes: Any) -> AlertNotice:
    """A critical ED occupancy alert; raised 22:30 UTC, which is the next day in Berlin."""
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


@pytest.fixture
async def smtp() -> AsyncIterator[SmtpServer]:
    async with SmtpServer() as server:
        yield server


def plain_sender(server: SmtpServer, **options: Any) -> EmailSender:
    return EmailSender(server.host, server.port, SENDER, tls="none", **options)


def parts(message: EmailMessage) -> tuple[str, str]:
    """The plain-text and the HTML body of a received message."""
    text = message.get_body(("plain",))
    markup = message.get_body(("html",))
    assert text is not None
    assert markup is not None
    return str(text.get_content()), str(markup.get_content())


async def test_the_message_arrives_with_its_subject_parts_and_headers(smtp: SmtpServer) -> None:
    await plain_sender(smtp).send(TO, make_notice(), idempotency_key="alert-42-raised")

    received = await smtp.next_message()
    message = received.message
    assert received.mail_from == "alerts@hospital.example"
    assert received.recipients == [TO]
    assert message["To"] == TO
    assert message["From"] == SENDER
    assert message["Subject"] == "[CRITICAL] ED occupancy above 95% — Emergency"
    assert message["Message-ID"] == "<alert-42-raised@livedash>"
    assert message["X-Livedash-Alert"] == "42"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["Importance"] == "high"
    assert message.get_content_type() == "multipart/alternative"
    text, markup = parts(message)
    for body in (text, markup):
        assert "ED occupancy above 95%" in body
        assert "CRITICAL" in body
        assert "Emergency" in body
        assert "St. Example Hospital" in body
        assert "0.971 (fires at 0.95, clears at 0.9)" in body
        # 22:30 UTC on 1 July is half past midnight on 2 July in Berlin (summer time).
        assert "2024-07-02 00:30 CEST (Europe/Berlin)" in body
        assert "firing, active" in body
        assert "ed_occupancy_high" in body
        assert "Alert 42" in body
    assert "https://dash.hospital.example/alerts/42" in text
    assert '<a href="https://dash.hospital.example/alerts/42"' in markup


async def test_a_hospital_wide_alert_without_a_rule_or_value(smtp: SmtpServer) -> None:
    notice = make_notice(
        rule=None,
        department=None,
        department_name=None,
        severity="low",
        state=None,
        status="resolved",
        value=None,
        threshold=None,
        clear_at=None,
        raised_at=datetime(2024, 1, 15, 8, 5, tzinfo=UTC),
    )
    await plain_sender(smtp).send(TO, notice, idempotency_key="k1")

    message = (await smtp.next_message()).message
    assert message["Subject"] == "[LOW] ED occupancy above 95% — hospital"
    assert message["Importance"] is None
    text, _ = parts(message)
    assert "Department:  hospital" in text
    assert "Value:       —" in text
    assert "Raised:      2024-01-15 09:05 CET (Europe/Berlin)" in text
    assert "Condition:   resolved" in text
    assert "raised by the hospital's application" in text


async def test_a_hostile_title_is_escaped_and_kept_on_one_line(smtp: SmtpServer) -> None:
    hostile = '<script>alert("x")</script> & co\r\nBcc: victim@elsewhere.example'
    link = 'https://dash.hospital.example/alerts/42?a=1&b="><img src=x>'
    notice = make_notice(title=hostile, department_name="<b>Emergency</b>", link=link)
    await plain_sender(smtp).send(TO, notice, idempotency_key="k2")

    received = await smtp.next_message()
    message = received.message
    assert received.recipients == [TO]
    assert message["Bcc"] is None
    assert "\n" not in message["Subject"]
    assert "\r" not in message["Subject"]
    assert message["Subject"].startswith('[CRITICAL] <script>alert("x")</script> & co Bcc:')
    text, markup = parts(message)
    assert "<script>" not in markup
    assert "<b>Emergency</b>" not in markup
    assert "<img" not in markup
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; co" in markup
    assert "&lt;b&gt;Emergency&lt;/b&gt;" in markup
    assert 'href="https://dash.hospital.example/alerts/42?a=1&amp;b=&quot;&gt;&lt;img' in markup
    assert hostile in text  # plain text is shown as text: nothing to escape


async def test_the_message_id_comes_from_the_idempotency_key(smtp: SmtpServer) -> None:
    sender = plain_sender(smtp)
    key = "alert:42:raised:0:anna@ward"
    await sender.send(TO, make_notice(), idempotency_key=key)
    await sender.send(TO, make_notice(), idempotency_key=key)
    first, second = await smtp.next_message(), await smtp.next_message()

    assert first.message["Message-ID"] == second.message["Message-ID"]
    assert first.message["Message-ID"] == "<alert=3A42=3Araised=3A0=3Aanna=40ward@livedash>"


def test_different_keys_never_share_a_message_id() -> None:
    assert message_id("a:b") != message_id("a=3Ab")
    assert message_id("a.b") == "<a=2Eb@livedash>"
    assert message_id("Zimmer-ü_1") == "<Zimmer-=C3=BC_1@livedash>"
    long = message_id("x" * 500)
    assert long.startswith("<sha256-")
    assert long.endswith("@livedash>")
    assert long != message_id("x" * 501)
    with pytest.raises(ValueError, match="empty"):
        message_id("")


@pytest.mark.parametrize(
    ("stage", "reply", "retryable"),
    [
        ("RCPT", "451 4.3.2 Try again later", True),
        ("RCPT", "550 5.1.1 No such user here", False),
        ("DATA", "452 4.3.1 Insufficient system storage", True),
        ("DATA", "554 5.7.1 Message rejected", False),
    ],
)
async def test_a_refusal_is_retryable_only_if_temporary(
    smtp: SmtpServer, stage: Any, reply: str, retryable: bool
) -> None:
    smtp.refuse(reply, at=stage)

    with pytest.raises(DeliveryError) as caught:
        await plain_sender(smtp).send(TO, make_notice(), idempotency_key="k3")

    assert caught.value.retryable is retryable
    assert reply.split()[0] in str(caught.value)
    assert smtp.received == []


async def test_a_relay_that_is_down_is_retryable() -> None:
    sender = EmailSender("127.0.0.1", free_port(), SENDER, tls="none", timeout=5)

    with pytest.raises(DeliveryError, match="cannot reach") as caught:
        await sender.send(TO, make_notice(), idempotency_key="k4")

    assert caught.value.retryable is True


async def test_a_relay_that_does_not_answer_times_out_retryably(smtp: SmtpServer) -> None:
    smtp.stall()

    with pytest.raises(DeliveryError, match="in time") as caught:
        await plain_sender(smtp, timeout=0.5).send(TO, make_notice(), idempotency_key="k5")

    assert caught.value.retryable is True


@pytest.fixture
def contexts(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    return tls_contexts(tmp_path)


@pytest.mark.parametrize("tls", ["starttls", "tls"])
@pytest.mark.filterwarnings("ignore:Session.login_data is deprecated:DeprecationWarning")
async def test_tls_and_login_never_show_the_password(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext], tls: Any
) -> None:
    server_context, client_context = contexts
    async with SmtpServer(
        tls=tls, tls_context=server_context, credentials=("livedash", PASSWORD)
    ) as server:
        sender = EmailSender(
            server.host,
            server.port,
            SENDER,
            username="livedash",
            password=PASSWORD,
            tls=tls,
            tls_context=client_context,
        )
        with capture_logs() as logs:
            await sender.send(TO, make_notice(), idempotency_key="k6")
        received = await server.next_message()

    assert received.login == "livedash"
    assert received.tls is True
    assert [entry["event"] for entry in logs] == ["email_sent"]
    assert PASSWORD not in repr(logs)
    assert PASSWORD not in repr(sender)


async def test_a_wrong_password_is_not_retryable(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server_context, client_context = contexts
    async with SmtpServer(
        tls="starttls", tls_context=server_context, credentials=("livedash", PASSWORD)
    ) as server:
        sender = EmailSender(
            server.host,
            server.port,
            SENDER,
            username="livedash",
            password="wrong",
            tls="starttls",
            tls_context=client_context,
        )
        with pytest.raises(DeliveryError, match="535") as caught:
            await sender.send(TO, make_notice(), idempotency_key="k7")

    assert caught.value.retryable is False
    assert PASSWORD not in str(caught.value)
    assert "wrong" not in str(caught.value)


@pytest.mark.parametrize("tls", ["starttls", "tls"])
async def test_an_untrusted_certificate_is_not_retryable(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext], tls: Any
) -> None:
    server_context, _ = contexts
    async with SmtpServer(tls=tls, tls_context=server_context) as server:
        # The system's CAs: the relay's self-signed certificate is not among them.
        sender = EmailSender(server.host, server.port, SENDER, tls=tls)
        with pytest.raises(DeliveryError, match="not trusted") as caught:
            await sender.send(TO, make_notice(), idempotency_key="k8")

    assert caught.value.retryable is False


async def test_an_unusable_recipient_is_not_retryable(smtp: SmtpServer) -> None:
    for to in ("not an address", "a@b.example\r\nBcc: c@d.example"):
        with pytest.raises(DeliveryError, match="not an e-mail address") as caught:
            await plain_sender(smtp).send(to, make_notice(), idempotency_key="k9")
        assert caught.value.retryable is False
    assert smtp.received == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"tls": "ssl"}, "tls must be one of"),
        ({"tls": "none", "username": "u", "password": "p"}, "only sent over TLS"),
        ({"username": "u"}, "both username and password"),
        ({"timeout": 0}, "timeout"),
        ({"sender": "nobody"}, "not an e-mail address"),
    ],
)
def test_settings_that_cannot_work_are_refused(options: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {"sender": SENDER, **options}
    with pytest.raises(ValueError, match=message):
        EmailSender("127.0.0.1", 25, **arguments)


def test_a_notice_checks_its_time_zone_and_link() -> None:
    with pytest.raises(ValueError, match="aware"):
        make_notice(raised_at=datetime(2024, 7, 1, 22, 30))
    with pytest.raises(ValueError, match="time zone"):
        make_notice(zone="Europe/Atlantis")
    with pytest.raises(ValueError, match="http or https"):
        make_notice(link="javascript:alert(1)")


def test_a_notice_from_an_alert_event() -> None:
    raised = datetime(2024, 7, 1, 22, 30)  # naive: UTC, as the store keeps it
    alert = AlertMessage(
        id=42,
        rule="ed_occupancy_high",
        department="ED",
        severity="critical",
        state="firing",
        status="active",
        title="ED occupancy above 95%",
        value=0.97125,
        threshold=0.95,
        clear_at=0.9,
        raised_at=raised,
        at=raised,
    )
    notice = AlertNotice.from_alert(
        alert,
        department_name="Emergency",
        link="https://dash.hospital.example/alerts/42",
        hospital="St. Example Hospital",
        zone="Europe/Berlin",
    )
    assert notice == make_notice()
    assert dataclasses.replace(notice, value=1234567.5).measurement() == (
        "1,234,567.5 (fires at 0.95, clears at 0.9)"
    )
