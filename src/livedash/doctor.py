"""`livedash doctor`, whole: can this configuration run the service, and if not, what to do.

Beyond the database and Redis (`changefeed/doctor.py`), it checks what a start would trip on
or a deployment would get wrong quietly:

- **configuration**: the settings parse (else the one failed check names the variable), and
  the token signing key is usable. On a deployment (PostgreSQL or Redis: several instances)
  the key must be set, not left to each instance to create, and links must not point at
  localhost.
- **port**: `LIVEDASH_HOST:LIVEDASH_PORT` is free, or answers `/health` as livedash does
  (the doctor run beside a running instance).
- **smtp** (when `LIVEDASH_SMTP_HOST` is set): the relay answers EHLO within the timeout,
  offering STARTTLS and AUTH when the settings need them.
- **web push** (when `LIVEDASH_VAPID_PRIVATE_KEY_FILE` is set): the key file reads as a P-256
  key, and the subject is usable.

Nothing is changed: no key file is created, no mail is sent, no port stays bound.
"""

from __future__ import annotations

import asyncio
import errno
import json
import socket
import urllib.error
import urllib.request
from pathlib import Path

import aiosmtplib

from livedash.auth.keys import token_keys
from livedash.changefeed.doctor import TIMEOUT_SECONDS, Check, Report
from livedash.changefeed.doctor import run_doctor as database_doctor
from livedash.errors import ConfigurationError
from livedash.notifications.email import EmailSender, TlsMode
from livedash.notifications.push import PushSender
from livedash.settings import Settings
from livedash.store.engine import is_sqlite

CONFIGURATION = "configuration"
SECRET_REMEDY = (
    "set LIVEDASH_JWT_SECRET to the same random value on every instance, e.g. "
    "`openssl rand -base64 48`; or LIVEDASH_JWT_SECRET_FILE to one file they all read"
)


async def run_doctor(settings: Settings, *, connect_seconds: float = TIMEOUT_SECONDS) -> Report:
    """Every check of `settings`; never raises for what it finds."""
    report = await database_doctor(settings, connect_seconds=connect_seconds)
    checks = [configuration_check(settings), await asyncio.to_thread(port_check, settings)]
    report.checks[:0] = checks
    if settings.smtp_host is not None:
        report.checks.append(await smtp_check(settings, connect_seconds=connect_seconds))
    if settings.vapid_private_key_file is not None:
        report.checks.append(vapid_check(settings))
    return report


def unusable_settings(message: str) -> Report:
    """The report of settings that do not even parse: one failed check, saying which."""
    return Report(
        "unknown",
        "the settings (LIVEDASH_ variables and .env)",
        [Check(CONFIGURATION, False, message, "correct the variable named above")],
    )


def deployment(settings: Settings) -> bool:
    """Whether `settings` describe a deployment of several instances (PostgreSQL or Redis)."""
    return not is_sqlite(settings.database_url) or settings.redis_url is not None


# -- configuration -------------------------------------------------------------------------


def configuration_check(settings: Settings) -> Check:
    """The settings parsed; is the signing key usable, and set where a deployment needs it?"""
    several = deployment(settings)
    kind = "a deployment (PostgreSQL or Redis)" if several else "a single instance on SQLite"
    problems: list[tuple[str, str]] = []
    key = _signing_key_problem(settings, several=several)
    if key is not None:
        problems.append(key)
    if several and "localhost" in settings.public_url:
        problems.append(
            (
                f"LIVEDASH_PUBLIC_URL is {settings.public_url}: links in e-mails and pushes "
                "would point at the reader's own machine",
                "set LIVEDASH_PUBLIC_URL to the address users open, e.g. https://livedash.example",
            )
        )
    if problems:
        detail = "; ".join(problem for problem, _ in problems)
        return Check(CONFIGURATION, False, detail, "\n".join(fix for _, fix in problems))
    return Check(CONFIGURATION, True, f"settings parse; {kind}; {_key_source(settings)}")


def _key_source(settings: Settings) -> str:
    if settings.jwt_algorithm != "HS256":
        return f"{settings.jwt_algorithm} key {settings.jwt_private_key_file}"
    if settings.jwt_secret is not None:
        return "signing key from LIVEDASH_JWT_SECRET"
    if settings.jwt_secret_file.exists():
        return f"signing key from {settings.jwt_secret_file}"
    return f"signing key to be created in {settings.jwt_secret_file} at the first start"


def _signing_key_problem(settings: Settings, *, several: bool) -> tuple[str, str] | None:
    """What is wrong with the token signing key, and the fix; None if nothing."""
    if settings.jwt_algorithm == "HS256" and settings.jwt_secret is None:
        path = settings.jwt_secret_file
        if not path.exists():
            if not several:
                return None  # the one instance creates it at its first start
            return (
                f"no token signing key: neither LIVEDASH_JWT_SECRET nor the file {path}; each "
                "instance would create its own, and refuse the others' tokens",
                SECRET_REMEDY,
            )
    try:
        # Only reads here: an HS256 key file that is missing was dealt with above.
        token_keys(settings).signer()
    except ConfigurationError as error:
        return str(error), "correct the LIVEDASH_JWT_ settings named (docs/settings.md)"
    return None


# -- port ----------------------------------------------------------------------------------


def port_in_use(host: str, port: int) -> str | None:
    """Why `host:port` cannot be listened on now, or None when it can."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        return f"LIVEDASH_HOST {host!r} does not resolve ({error.strerror})"
    family, kind, proto, _name, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(address)
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                return "the port is in use"
            if error.errno == errno.EACCES:
                return "ports below 1024 need root or CAP_NET_BIND_SERVICE"
            if error.errno == errno.EADDRNOTAVAIL:
                return f"{host} is not an address of this machine"
            return f"cannot listen there: {error.strerror}"
    return None


def _answers_health(host: str, port: int, timeout: float) -> str | None:
    """The `/health` status a livedash at `host:port` reports, or None if it is not one."""
    shown = f"[{host}]" if ":" in host else host
    if host in ("0.0.0.0", "::"):
        shown = "127.0.0.1" if host == "0.0.0.0" else "[::1]"
    for scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(
                f"{scheme}://{shown}:{port}/health", timeout=timeout
            ) as answer:
                body = json.loads(answer.read(4096))
        except urllib.error.HTTPError as error:  # 503: a livedash that is not ready
            try:
                body = json.loads(error.read(4096))
            except ValueError:
                continue
        except (OSError, ValueError):
            continue
        if isinstance(body, dict) and isinstance(body.get("status"), str):
            return str(body["status"])
    return None


def port_check(settings: Settings, *, timeout: float = 2.0) -> Check:
    """The configured port is free, or a livedash answers on it."""
    where = f"{settings.host}:{settings.port}"
    busy = port_in_use(settings.host, settings.port)
    if busy is None:
        return Check("port", True, f"{where} is free")
    if busy == "the port is in use":
        status = _answers_health(settings.host, settings.port, timeout)
        if status is not None:
            return Check("port", True, f"{where} is served by a running livedash ({status})")
        return Check(
            "port",
            False,
            f"{where} is in use by another program",
            f"stop it (`ss -ltnp 'sport = :{settings.port}'` shows which), "
            "or set LIVEDASH_PORT to a free port",
        )
    return Check("port", False, f"{where}: {busy}", "set LIVEDASH_HOST and LIVEDASH_PORT")


# -- e-mail and Web Push -------------------------------------------------------------------


async def smtp_check(settings: Settings, *, connect_seconds: float = TIMEOUT_SECONDS) -> Check:
    """Connect to the SMTP relay and say EHLO; nothing is sent."""
    host = settings.smtp_host or ""
    where = f"{host}:{settings.smtp_port}"
    password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
    tls: TlsMode = "tls" if settings.smtp_tls == "tls" else "none"
    if settings.smtp_tls == "starttls":
        tls = "starttls"
    try:
        EmailSender(
            host,
            settings.smtp_port,
            settings.smtp_sender,
            username=settings.smtp_username,
            password=password,
            tls=tls,
            timeout=settings.smtp_timeout_seconds,
        )
    except ValueError as error:
        return Check("smtp", False, f"the settings cannot work: {error}", "correct LIVEDASH_SMTP_*")
    timeout = min(settings.smtp_timeout_seconds, connect_seconds)
    client = aiosmtplib.SMTP(
        hostname=host,
        port=settings.smtp_port,
        use_tls=tls == "tls",
        start_tls=False,
        timeout=timeout,
    )
    offered: list[str] = []
    try:
        async with asyncio.timeout(timeout * 3):
            await client.connect()
            await client.ehlo()
            if tls == "starttls":
                if not client.supports_extension("starttls"):
                    return Check(
                        "smtp",
                        False,
                        f"{where} answers but does not offer STARTTLS",
                        "set LIVEDASH_SMTP_TLS=tls (and port 465) if the relay speaks TLS from "
                        "the start, or LIVEDASH_SMTP_TLS=none for a relay on this network",
                    )
                await client.starttls()
                await client.ehlo()  # again, over TLS: what the relay offers may change
                offered.append("STARTTLS")
            if settings.smtp_username is not None and not client.supports_extension("auth"):
                return Check(
                    "smtp",
                    False,
                    f"{where} does not offer AUTH, but LIVEDASH_SMTP_USERNAME is set",
                    "unset LIVEDASH_SMTP_USERNAME and LIVEDASH_SMTP_PASSWORD, or use the "
                    "relay's submission port",
                )
            if client.supports_extension("auth"):
                offered.append("AUTH")
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as error:
        reason = str(error).strip() or type(error).__name__
        return Check(
            "smtp",
            False,
            f"cannot talk to {where}: {reason}",
            "check LIVEDASH_SMTP_HOST, LIVEDASH_SMTP_PORT and LIVEDASH_SMTP_TLS, and that this "
            "machine may reach the relay (firewall)",
        )
    finally:
        if client.is_connected:
            try:
                async with asyncio.timeout(timeout):
                    await client.quit()
            except (aiosmtplib.SMTPException, OSError, TimeoutError):
                client.close()
    extras = f", offers {' and '.join(offered)}" if offered else ""
    return Check("smtp", True, f"{where} answers EHLO{extras} (no mail sent)")


def vapid_check(settings: Settings) -> Check:
    """The Web Push key file reads as a P-256 private key, with a usable subject."""
    path: Path = settings.vapid_private_key_file or Path()
    remedy = f"`livedash vapid-keys --out {path}` writes a new key (then restart livedash)"
    try:
        pem = path.read_text()
    except OSError as error:
        return Check("web push", False, f"cannot read {path}: {error.strerror}", remedy)
    try:
        sender = PushSender(pem, settings.vapid_subject)
    except ValueError as error:
        fix = "set LIVEDASH_VAPID_SUBJECT to mailto:you@hospital or an https: URL"
        return Check(
            "web push", False, f"{path}: {error}", fix if "subject" in str(error) else remedy
        )
    return Check(
        "web push",
        True,
        f"P-256 key in {path}; public key {sender.application_server_key[:16]}...; "
        f"subject {settings.vapid_subject}",
    )
