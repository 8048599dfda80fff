"""Alert notices by e-mail, through the hospital's SMTP relay (aiosmtplib).

Each send opens its own SMTP connection and closes it: alerts are rare, relays drop idle
connections, and a connection per message leaves no half-dead session to recover. The
message is plain text with an HTML alternative, both rendered from `templates/` with
`string.Template` (every value HTML-escaped in the HTML part). Its Message-ID is derived from
the caller's idempotency key, so a message sent twice (a retry after a lost reply) is the
same message to the recipient's mail system and to anyone reading the relay's logs.

Failures become `DeliveryError`: what may pass (no connection, a timeout, an SMTP 4xx reply)
is `retryable`; what will not (a 5xx reply such as an unknown recipient, bad credentials,
a relay that cannot do the TLS or AUTH the settings ask for) is not.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import html
import ssl
import string
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from importlib import resources
from typing import Literal, get_args

import aiosmtplib
import structlog

from livedash.notifications.notice import AlertNotice, DeliveryError

log = structlog.get_logger(__name__)

TlsMode = Literal["none", "starttls", "tls"]
"""`none`: plain SMTP (never upgraded); `starttls`: upgrade with STARTTLS (port 587);
`tls`: TLS from the first byte (SMTPS, port 465)."""

MESSAGE_ID_DOMAIN = "livedash"
ALERT_HEADER = "X-Livedash-Alert"

_KEY_CHARACTERS = frozenset(string.ascii_letters + string.digits + "-_")
_MAX_KEY_LENGTH = 200
_COLOURS = {"critical": "#b00020", "high": "#c2410c", "medium": "#a16207", "low": "#2e7d32"}
_IMPORTANT = frozenset({"critical", "high"})


class EmailSender:
    """Sends alert notices through one SMTP relay."""

    def __init__(
        self,
        host: str,
        port: int,
        sender: str,
        *,
        username: str | None = None,
        password: str | None = None,
        tls: TlsMode = "starttls",
        timeout: float = 30.0,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        if tls not in get_args(TlsMode):
            raise ValueError(f"tls must be one of {', '.join(get_args(TlsMode))}, not {tls!r}")
        if (username is None) != (password is None):
            raise ValueError("give both username and password, or neither")
        if password is not None and tls == "none":
            raise ValueError("a password is only sent over TLS: set tls to starttls or tls")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        envelope_sender = parseaddr(sender)[1]
        if "@" not in envelope_sender or any(c in sender for c in "\r\n"):
            raise ValueError(f"not an e-mail address: {sender!r}")
        self.host = host
        self.port = port
        self.sender = sender
        self.tls: TlsMode = tls
        self.timeout = timeout
        self._envelope_sender = envelope_sender
        self._username = username
        self._password = password
        self._tls_context = tls_context

    def __repr__(self) -> str:
        # Written out so that the password can never reach a log line or a traceback.
        user = f", username={self._username!r}" if self._username else ""
        return f"EmailSender({self.host}:{self.port}, tls={self.tls}, sender={self.sender!r}{user})"

    def compose(self, to: str, notice: AlertNotice, *, idempotency_key: str) -> EmailMessage:
        """The message `send` would send (plain text with an HTML alternative)."""
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = to
        message["Subject"] = subject(notice)
        message["Date"] = format_datetime(datetime.now(UTC))
        message["Message-ID"] = message_id(idempotency_key)
        message[ALERT_HEADER] = str(notice.alert_id)
        # RFC 3834: out-of-office replies and other robots must not answer an alert.
        message["Auto-Submitted"] = "auto-generated"
        if notice.severity.lower() in _IMPORTANT:
            message["Importance"] = "high"
        text, markup = render(notice)
        message.set_content(text)
        message.add_alternative(markup, subtype="html")
        return message

    async def send(self, to: str, notice: AlertNotice, *, idempotency_key: str) -> None:
        """Deliver `notice` to `to`; a `DeliveryError` says whether trying again may help."""
        _address(to)
        message = self.compose(to, notice, idempotency_key=idempotency_key)
        await self.deliver(to, message)
        log.info(
            "email_sent",
            alert=notice.alert_id,
            to=to,
            message_id=message["Message-ID"],
            relay=f"{self.host}:{self.port}",
        )

    async def deliver(self, to: str, message: EmailMessage) -> None:
        """Send a composed `message` to `to` through the relay; a `DeliveryError` says
        whether trying again may help."""
        recipient = _address(to)
        client = aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            username=self._username,
            password=self._password,
            use_tls=self.tls == "tls",
            # False, not None: aiosmtplib would otherwise upgrade whenever the relay offers it.
            start_tls=self.tls == "starttls",
            timeout=self.timeout,
            tls_context=self._tls_context,
        )
        try:
            # aiosmtplib's timeout bounds each command; this bounds the whole exchange.
            async with asyncio.timeout(self.timeout):
                await client.connect()
                await client.send_message(
                    message, sender=self._envelope_sender, recipients=[recipient]
                )
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise _delivery_error(exc, self.host, self.port) from exc
        else:
            await self._quit(client)
        finally:
            client.close()

    async def _quit(self, client: aiosmtplib.SMTP) -> None:
        # The relay has accepted the message: a slow or failed QUIT must not become an error,
        # or the caller would send it again.
        with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
            async with asyncio.timeout(self.timeout):
                await client.quit()


def _address(to: str) -> str:
    recipient = parseaddr(to)[1]
    if "@" not in recipient or any(c in to for c in "\r\n"):
        raise DeliveryError(f"not an e-mail address: {to!r}", retryable=False)
    return recipient


def subject(notice: AlertNotice) -> str:
    """The subject, on one line: [CRITICAL] <title> — <department name, or hospital>."""
    return f"[{notice.severity.upper()}] {_one_line(notice.title)} — {_one_line(notice.where)}"


def message_id(idempotency_key: str) -> str:
    """The Message-ID of every message sent with `idempotency_key`: `<key@livedash>`.

    Characters a Message-ID cannot hold (and `.` and `=`) are written `=XX` (their UTF-8
    bytes), so that two keys never share an id; a key too long for that is replaced by its
    SHA-256.
    """
    if not idempotency_key:
        raise ValueError("the idempotency key is empty")
    left = "".join(
        char if char in _KEY_CHARACTERS else "".join(f"={byte:02X}" for byte in char.encode())
        for char in idempotency_key
    )
    if len(left) > _MAX_KEY_LENGTH:
        left = "sha256-" + hashlib.sha256(idempotency_key.encode()).hexdigest()
    return f"<{left}@{MESSAGE_ID_DOMAIN}>"


def render(notice: AlertNotice) -> tuple[str, str]:
    """The plain-text and the HTML body of a notice."""
    fields = {
        "alert_id": str(notice.alert_id),
        "severity": notice.severity.upper(),
        "title": notice.title,
        "where": notice.where,
        "hospital": notice.hospital,
        "measurement": notice.measurement() or "—",
        "raised": notice.raised_text(),
        "zone": notice.zone,
        "condition": notice.condition(),
        "rule": notice.rule or "— (raised by the hospital's application)",
        "link": notice.link,
        "subject": subject(notice),
    }
    text = _template("alert.txt").substitute(fields)
    escaped = {name: html.escape(value, quote=True) for name, value in fields.items()}
    escaped["colour"] = _COLOURS.get(notice.severity.lower(), "#444444")
    return text, _template("alert.html").substitute(escaped)


@functools.cache
def _template(name: str) -> string.Template:
    source = resources.files("livedash.notifications").joinpath("templates").joinpath(name)
    return string.Template(source.read_text(encoding="utf-8"))


def _one_line(text: str) -> str:
    # A header cannot hold a line break; a title may (it can come from the hospital's app).
    return " ".join(text.split())


def _delivery_error(
    exc: aiosmtplib.SMTPException | OSError | TimeoutError, host: str, port: int
) -> DeliveryError:
    """The `DeliveryError` for what aiosmtplib (or the network) raised."""
    relay = f"{host}:{port}"
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [refusal.code for refusal in exc.recipients]
        replies = "; ".join(f"{r.code} {r.message}" for r in exc.recipients)
        return DeliveryError(
            f"{relay} refused the recipient: {replies}",
            retryable=all(_temporary(code) for code in codes),
        )
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return DeliveryError(
            f"{relay} answered {exc.code} {exc.message}", retryable=_temporary(exc.code)
        )
    if _certificate_refused(exc):
        return DeliveryError(f"{relay}: its TLS certificate is not trusted: {exc}", retryable=False)
    if isinstance(exc, TimeoutError):  # aiosmtplib's SMTPTimeoutError among them
        return DeliveryError(f"{relay} did not answer in time", retryable=True)
    if isinstance(exc, OSError):  # SMTPConnectError and SMTPServerDisconnected among them
        return DeliveryError(f"cannot reach {relay}: {exc}", retryable=True)
    # What is left: the relay lacks STARTTLS or AUTH that the settings require.
    return DeliveryError(f"{relay}: {exc}", retryable=False)


def _temporary(code: int) -> bool:
    # SMTP: 4xx is a transient failure, 5xx a permanent one. Anything else (aiosmtplib's -1
    # for a garbled reply) is treated as transient.
    return not 500 <= code < 600


def _certificate_refused(exc: BaseException) -> bool:
    # aiosmtplib wraps the ssl module's error in SMTPConnectError (implicit TLS) or lets it
    # through (STARTTLS); retrying cannot help until someone changes the relay or settings.
    chain: list[BaseException] = []
    link: BaseException | None = exc
    while link is not None and link not in chain:
        chain.append(link)
        link = link.__cause__ or link.__context__
    return any(isinstance(error, ssl.SSLCertVerificationError) for error in chain)
