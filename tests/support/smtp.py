"""A throwaway SMTP server (aiosmtpd) on a free loopback port, in the test's own event loop.

It keeps every message it accepts, parsed (`Received`), and can be told to refuse
recipients or messages with a given reply (a 4xx or a 5xx), or to never answer the message
(a stalled relay). With `tls_contexts` it speaks STARTTLS or TLS from the first byte, and
with `credentials` it requires AUTH.
"""

from __future__ import annotations

import asyncio
import ssl
import warnings
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from tests.support.tls import write_self_signed

WAIT_SECONDS = 10.0
"""How long `next_message` waits before failing the test (nothing arrives: a bug)."""

Stage = Literal["RCPT", "DATA"]


@dataclass(frozen=True)
class Received:
    """One accepted message: its envelope and the message as a mail client parses it."""

    mail_from: str
    recipients: list[str]
    message: EmailMessage
    login: str | None
    tls: bool


class SmtpServer:
    """An SMTP server on 127.0.0.1 and a free port, for `async with`."""

    def __init__(
        self,
        *,
        tls: Literal["none", "starttls", "tls"] = "none",
        tls_context: ssl.SSLContext | None = None,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        if tls != "none" and tls_context is None:
            raise ValueError("a TLS server needs its tls_context (see `tls_contexts`)")
        self.host = "127.0.0.1"
        self.port = 0
        self.received: list[Received] = []
        self._tls = tls
        self._tls_context = tls_context
        self._credentials = credentials
        self._arrived: asyncio.Queue[Received] = asyncio.Queue()
        self._refusals: dict[Stage, str] = {}
        self._stalled = False
        self._released = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._protocols: list[SMTP] = []

    def refuse(self, reply: str, at: Stage = "RCPT") -> None:
        """Answer every RCPT (or DATA) with `reply`, e.g. "451 4.3.2 Try again later"."""
        self._refusals[at] = reply

    def stall(self) -> None:
        """Never answer DATA (until the server closes): the client's timeout must act."""
        self._stalled = True

    def resume(self) -> None:
        """Accept messages again; a DATA stalled meanwhile is refused (421), as by a server
        that restarted."""
        self._stalled = False
        self._released.set()

    async def next_message(self) -> Received:
        """The next message accepted (waits for it)."""
        async with asyncio.timeout(WAIT_SECONDS):
            return await self._arrived.get()

    async def __aenter__(self) -> SmtpServer:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._protocol,
            self.host,
            0,
            ssl=self._tls_context if self._tls == "tls" else None,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._released.set()
        if self._server is not None:
            self._server.close()
        tasks = []
        for protocol in self._protocols:
            # After STARTTLS (even a failed handshake) the socket's own transport lies under
            # the TLS one: close both, or the server waits for it forever.
            for transport in (protocol.transport, protocol._original_transport):
                if transport is not None:
                    transport.close()
            # aiosmtpd runs each session in a task of its own (and exposes it only under this
            # private name); one stuck in a failed TLS handshake is never told the connection
            # went: end each, so that no task outlives the test.
            if protocol._handler_coroutine is not None:
                protocol._handler_coroutine.cancel()
                tasks.append(protocol._handler_coroutine)
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def _protocol(self) -> SMTP:
        with warnings.catch_warnings():
            # aiosmtpd warns of AUTH without STARTTLS; over implicit TLS it is encrypted.
            warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS")
            protocol = self._new_protocol()
        self._protocols.append(protocol)
        return protocol

    def _new_protocol(self) -> SMTP:
        return SMTP(
            _Handler(self),
            hostname="localhost",
            tls_context=self._tls_context if self._tls == "starttls" else None,
            require_starttls=self._tls == "starttls",
            authenticator=self._authenticate if self._credentials else None,
            auth_required=self._credentials is not None,
            # Over implicit TLS aiosmtpd does not know that the session is encrypted.
            auth_require_tls=self._tls == "starttls",
            loop=asyncio.get_running_loop(),
        )

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if not isinstance(data, LoginPassword) or self._credentials is None:
            return AuthResult(success=False, handled=False)
        user, password = self._credentials
        accepted = data.login == user.encode() and data.password == password.encode()
        return AuthResult(success=accepted, handled=False, auth_data=data)


class _Handler:
    """aiosmtpd's handler hooks: refuse or stall as told, otherwise keep the message."""

    def __init__(self, owner: SmtpServer) -> None:
        self.owner = owner

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        refusal = self.owner._refusals.get("RCPT")
        if refusal is not None:
            return refusal
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.owner._stalled:
            await self.owner._released.wait()
            return "421 4.3.0 Shutting down"
        refusal = self.owner._refusals.get("DATA")
        if refusal is not None:
            return refusal
        content = envelope.original_content or envelope.content or b""
        raw = content if isinstance(content, bytes) else content.encode()
        message = BytesParser(policy=policy.default).parsebytes(raw)
        assert isinstance(message, EmailMessage)
        auth = session.auth_data
        received = Received(
            mail_from=str(envelope.mail_from),
            recipients=list(envelope.rcpt_tos),
            message=message,
            login=auth.login.decode() if isinstance(auth, LoginPassword) else None,
            tls=session.ssl is not None or self.owner._tls == "tls",
        )
        self.owner.received.append(received)
        self.owner._arrived.put_nowait(received)
        return "250 2.0.0 Message accepted"


def tls_contexts(directory: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a fresh self-signed certificate for 127.0.0.1 and localhost,
    and a client context that trusts exactly that certificate."""
    certificate, key = write_self_signed(directory, "smtp")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(certificate, key)
    client = ssl.create_default_context(cafile=certificate)
    return server, client
