"""Change-to-alert latency: from a database commit to the `alert` event on a socket, to the
in-app `notification` event, and to the e-mail arriving at an SMTP server.

A writer process marks one bed of the watched department occupied, then free again, with plain
sqlite3 as the hospital's own application would, `--alerts` times. The service (`livedash
serve`, its own process, on a fresh SQLite database) runs one HIGH rule with `for: 0`:
`beds_occupied` of that department above 0. So each breach raises a new alert at once, and
each clear resolves it (keep_firing_for 0). One admin of the department, whose preferences are
in_app and email, is signed in on a python-socketio client; the service mails through an
aiosmtpd server in this process. Each arrival is stamped with `time.time()`, the writer's
commit clock.

    .venv/bin/python bench/alerts.py                            # 50 alerts, one every 0.5 s
    .venv/bin/python bench/alerts.py --alerts 200 --interval 0.25 --json /tmp/alerts.json

The issue's targets: the in-app notification within 1 s of the change, e-mail and push leave
within 5 s. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import multiprocessing
import os
import re
import signal
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import Any

import aiohttp
import socketio
from aiosmtpd.smtp import SMTP, Envelope, Session

from livedash.auth.tokens import issue_token
from livedash.store.models import Role
from livedash.testing.hospital import WATCHED, add_users, migrated_hospital
from livedash.testing.service import ServiceProcess, begin_bench, bench_settings
from livedash.testing.stats import percentile
from livedash.testing.usage import LoopLag

DEPARTMENT = WATCHED  # ED: 3 rooms of 4 beds, all free once seeded
RULE = "bench-bed-occupied"
ADMIN = "bench-admin"
ADDRESS = "bench-admin@hospital.example"
THRESHOLD = 0  # beds_occupied above 0: one occupied bed breaches, freeing it clears
MATCH_TOLERANCE_SECONDS = 0.02
"""raised_at may precede the writer's time.time() after the commit by a scheduling hiccup."""
CONNECT_SECONDS = 10.0
STOP_SECONDS = 10.0
ALERT_HEADER = "X-Livedash-Alert"
TARGETS = {"in-app": 1.0, "e-mail": 5.0}  # the issue's, in seconds

RULES_YAML = f"""\
rules:
  - name: {RULE}
    metric: beds_occupied
    scope: {DEPARTMENT}
    condition: above
    threshold: {THRESHOLD}
    severity: high
    for: 0
    keep_firing_for: 0
    summary: A bed is occupied in {DEPARTMENT} (bench)
"""


# -- the writer ------------------------------------------------------------------------------


@dataclass
class Writes:
    """What the writer did; sent back from its process as plain data."""

    breaches: list[float] = field(default_factory=list)
    """time.time() right after each breach's commit (bed occupied)."""
    clears: list[float] = field(default_factory=list)
    commit_seconds: list[float] = field(default_factory=list)
    late: list[float] = field(default_factory=list)
    """How far behind its schedule each write started (seconds)."""
    error: str | None = None


def write_changes(
    path: str,
    bed_id: int,
    alerts: int,
    interval: float,
    ready: EventType,
    go: EventType,
    stop: EventType,
    results: Connection,
) -> None:
    """The writer process: breach at k * interval, clear half an interval later."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's: it sets `stop`
    writes = Writes()
    try:
        connection = sqlite3.connect(path, isolation_level=None, timeout=10)
        try:
            ready.set()
            go.wait()
            started = time.monotonic()
            schedule = [
                (k * interval + half * interval / 2, status)
                for k in range(alerts)
                for half, status in ((0, "occupied"), (1, "free"))
            ]
            for offset, status in schedule:
                due = started + offset
                delay = due - time.monotonic()
                if (delay > 0 and stop.wait(delay)) or stop.is_set():
                    break
                writes.late.append(max(time.monotonic() - due, 0.0))
                before = time.perf_counter()
                # Autocommit: this one statement is its own transaction, committed (with its
                # change_log row) once execute() returns.
                connection.execute("UPDATE beds SET status = ? WHERE id = ?", (status, bed_id))
                committed = time.time()
                writes.commit_seconds.append(time.perf_counter() - before)
                (writes.breaches if status == "occupied" else writes.clears).append(committed)
        finally:
            connection.close()
    except Exception as error:
        writes.error = f"{type(error).__name__}: {error}"
    results.send(asdict(writes))


class WriterProcess:
    def __init__(self, db: Path, bed_id: int, alerts: int, interval: float) -> None:
        context = multiprocessing.get_context("spawn")
        self._ready = context.Event()
        self._go = context.Event()
        self._stop = context.Event()
        self._results, self._sender = context.Pipe(duplex=False)
        self._process = context.Process(
            target=write_changes,
            args=(
                str(db),
                bed_id,
                alerts,
                interval,
                self._ready,
                self._go,
                self._stop,
                self._sender,
            ),
            name="bench-alert-writer",
            daemon=True,
        )

    # Starting and joining a process blocks (an exiting interpreter takes a few hundred ms):
    # in a thread, so that the event loop stamping arrivals is not held up.
    async def __aenter__(self) -> WriterProcess:
        await asyncio.to_thread(self._process.start)
        self._sender.close()  # so that recv() sees EOF if the writer dies
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await asyncio.to_thread(self._end)

    def _end(self) -> None:
        self._stop.set()
        self._go.set()
        self._process.join(STOP_SECONDS)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()

    async def ready(self) -> None:
        """Wait until the process has started (its imports done) and opened the database."""
        started = time.monotonic()
        while not await asyncio.to_thread(self._ready.wait, 0.5):
            if not self._process.is_alive():
                raise RuntimeError("the writer process died while starting")
            if time.monotonic() - started > CONNECT_SECONDS * 3:
                raise RuntimeError("the writer process did not start")

    async def run(self) -> Writes:
        self._go.set()
        try:
            sent = await asyncio.to_thread(self._receive)
        finally:
            self._stop.set()
        writes = Writes(**sent)
        if writes.error is not None:
            raise RuntimeError(f"the writer failed: {writes.error}")
        return writes

    def _receive(self) -> dict[str, Any]:
        try:
            sent: dict[str, Any] = self._results.recv()
        except EOFError:
            raise RuntimeError("the writer process died without a word") from None
        return sent


# -- what arrives ----------------------------------------------------------------------------


@dataclass
class Arrivals:
    """Everything the admin's socket and the SMTP server received, stamped with time.time()."""

    alert: dict[int, float] = field(default_factory=dict)
    """alert id -> first `alert` event with state firing."""
    raised_at: dict[int, float] = field(default_factory=dict)
    """alert id -> its raised_at (the service's clock)."""
    notification: dict[int, float] = field(default_factory=dict)
    """alert id -> first `notification` event `raised`."""
    email: dict[int, float] = field(default_factory=dict)
    """alert id -> first e-mail of its `raised` event."""
    resolved_alerts: dict[int, float] = field(default_factory=dict)
    """alert id -> first `alert` event with status resolved; and so on."""
    resolved_notifications: dict[int, float] = field(default_factory=dict)
    resolved_emails: dict[int, float] = field(default_factory=dict)
    duplicates: dict[str, int] = field(default_factory=dict)
    other: list[str] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def note(self, kind: str, alert_id: int, at: float, into: dict[int, float]) -> None:
        if alert_id in into:
            self.duplicates[kind] = self.duplicates.get(kind, 0) + 1
        else:
            into[alert_id] = at
        self.changed.set()


def _timestamp(stamp: str) -> float:
    moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


_ENCODED = re.compile(r"(?:=[0-9A-F]{2})+")


def idempotency_key(message_id: str) -> str:
    """The key a livedash Message-ID `<key@livedash>` was derived from (`=XX` decoded)."""
    left = message_id.strip().strip("<>").rsplit("@", 1)[0]
    return _ENCODED.sub(lambda m: bytes.fromhex(m.group().replace("=", "")).decode(), left)


class MailHandler:
    """aiosmtpd's DATA hook: stamp the message and file it under its alert and event."""

    def __init__(self, arrivals: Arrivals) -> None:
        self.arrivals = arrivals
        self.messages = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        received = time.time()
        self.messages += 1
        content = envelope.original_content or envelope.content or b""
        raw = content if isinstance(content, bytes) else content.encode()
        message = BytesParser(policy=policy.default).parsebytes(raw, headersonly=True)
        assert isinstance(message, EmailMessage)
        alert, key = message.get(ALERT_HEADER), idempotency_key(str(message.get("Message-ID", "")))
        # alert:{id}:{event}:{level}:{user}:email
        parts = key.split(":")
        if alert is None or len(parts) < 3 or parts[0] != "alert":
            self.arrivals.other.append(f"e-mail without an alert: {message.get('Subject')!r}")
        elif parts[2] == "raised":
            self.arrivals.note("e-mail", int(alert), received, self.arrivals.email)
        elif parts[2] == "resolved":
            self.arrivals.resolved_emails.setdefault(int(alert), received)
            self.arrivals.changed.set()
        else:
            self.arrivals.other.append(f"e-mail of event {parts[2]!r} for alert {alert}")
        return "250 2.0.0 Message accepted"


class MailServer:
    """aiosmtpd on 127.0.0.1 and a free port, in this process's event loop."""

    def __init__(self, handler: MailHandler) -> None:
        self.handler = handler
        self.port = 0
        self._server: asyncio.Server | None = None
        self._protocols: list[SMTP] = []

    async def __aenter__(self) -> MailServer:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._protocol, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def _protocol(self) -> SMTP:
        protocol = SMTP(self.handler, hostname="localhost", loop=asyncio.get_running_loop())
        self._protocols.append(protocol)
        return protocol

    async def __aexit__(self, *exc_info: object) -> None:
        if self._server is None:
            return
        self._server.close()
        for protocol in self._protocols:  # a session the service left open
            if protocol.transport is not None:
                protocol.transport.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._server.wait_closed(), 5)


class AdminSocket:
    """The department admin, signed in on one python-socketio client."""

    def __init__(self, url: str, token: str, arrivals: Arrivals) -> None:
        self.url = url
        self.token = token
        self.arrivals = arrivals
        self.client = socketio.AsyncClient(reconnection=False, handle_sigint=False)
        self.departments: list[str] = []
        self.disconnected: float | None = None

    async def connect(self) -> None:
        signed_in = asyncio.Event()
        refused: list[Any] = []

        def on_alert(data: dict[str, Any]) -> None:
            received = time.time()
            alert_id = int(data["id"])
            if data.get("rule") != RULE:
                self.arrivals.other.append(f"alert of rule {data.get('rule')!r}")
            elif data.get("state") == "firing" and data.get("status") == "active":
                self.arrivals.raised_at.setdefault(alert_id, _timestamp(str(data["raised_at"])))
                self.arrivals.note("alert", alert_id, received, self.arrivals.alert)
            elif data.get("status") == "resolved":
                self.arrivals.resolved_alerts.setdefault(alert_id, received)
                self.arrivals.changed.set()

        def on_notification(data: dict[str, Any]) -> None:
            received = time.time()
            alert_id = data.get("alert_id")
            if alert_id is None:
                self.arrivals.other.append(f"notification without an alert: {data}")
            elif data.get("event") == "raised":
                self.arrivals.note("in-app", int(alert_id), received, self.arrivals.notification)
            elif data.get("event") == "resolved":
                self.arrivals.resolved_notifications.setdefault(int(alert_id), received)
                self.arrivals.changed.set()
            else:
                self.arrivals.other.append(f"notification {data.get('event')!r} of {alert_id}")

        def on_authenticated(data: dict[str, Any]) -> None:
            self.departments = list(data.get("departments") or [])
            signed_in.set()

        def on_auth_error(data: Any) -> None:
            refused.append(data)
            signed_in.set()

        def on_disconnect(*args: Any) -> None:
            self.disconnected = self.disconnected or time.time()

        self.client.on("alert", on_alert)
        self.client.on("notification", on_notification)
        self.client.on("authenticated", on_authenticated)
        self.client.on("auth_error", on_auth_error)
        self.client.on("disconnect", on_disconnect)
        await self.client.connect(
            self.url,
            auth={"token": self.token},
            transports=["websocket"],
            wait_timeout=CONNECT_SECONDS,
        )
        await asyncio.wait_for(signed_in.wait(), CONNECT_SECONDS)
        if refused:
            raise RuntimeError(f"the admin's socket was refused: {refused[0]}")
        if DEPARTMENT not in self.departments:
            raise RuntimeError(f"the admin's socket does not see {DEPARTMENT}: {self.departments}")

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.client.disconnect(), 5)


# -- one run ---------------------------------------------------------------------------------


@dataclass
class Run:
    alerts: int
    interval: float
    warmup: int
    drain_limit: float
    health_seconds: float = 0.0
    drain_seconds: float = 0.0
    window_seconds: float = 0.0
    server_cpu_seconds: float = 0.0
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    lag: list[float] = field(default_factory=list)
    emails_received: int = 0
    disconnected: float | None = None
    log_problems: list[str] = field(default_factory=list)


@dataclass
class Matched:
    """Each breach's alert, and the delay from its commit to each arrival (None: never)."""

    alert_ids: list[int | None]
    alert: list[float | None]
    notification: list[float | None]
    email: list[float | None]
    evaluation: list[float | None]
    """commit -> raised_at (the service's clock: when it judged the breach)."""
    unmatched: list[int]
    """Alerts raised that no breach explains (raised_at before any breach, or a second
    alert for one breach)."""


def match(writes: Writes, arrivals: Arrivals) -> Matched:
    """Each breach's alert. The service judges breaches in commit order, so alerts (in
    raised_at order) belong to breaches in the same order, each to one committed before it
    was raised (to MATCH_TOLERANCE_SECONDS). From the last alert back, each takes the latest
    such breach before the one the next alert took: a breach that raised nothing (read in one
    batch with its clear) is skipped, and an alert raised after the next breach's commit (a
    service more than an interval behind) still gets its own."""
    breaches = writes.breaches
    owner: list[int | None] = [None] * len(breaches)
    unmatched: list[int] = []
    limit = len(breaches)  # the next alert's breach: this one's is before it
    for alert_id in sorted(arrivals.raised_at, key=arrivals.raised_at.__getitem__, reverse=True):
        index = bisect.bisect_right(
            breaches, arrivals.raised_at[alert_id] + MATCH_TOLERANCE_SECONDS, hi=limit
        )
        if index == 0:
            unmatched.append(alert_id)
        else:
            owner[index - 1] = alert_id
            limit = index - 1

    def delays(arrived: dict[int, float]) -> list[float | None]:
        return [
            arrived[alert_id] - commit if alert_id is not None and alert_id in arrived else None
            for alert_id, commit in zip(owner, breaches, strict=True)
        ]

    return Matched(
        alert_ids=owner,
        alert=delays(arrivals.alert),
        notification=delays(arrivals.notification),
        email=delays(arrivals.email),
        evaluation=delays(arrivals.raised_at),
        unmatched=unmatched,
    )


def complete(breaches: int, arrivals: Arrivals) -> bool:
    """Every breach has its alert event, its notification and its e-mail, and each alert its
    resolution by all three (by count; `match` pairs them up afterwards)."""
    ids = set(arrivals.alert)
    return (
        len(ids) >= breaches
        and ids <= arrivals.notification.keys()
        and ids <= arrivals.email.keys()
        and ids <= arrivals.resolved_alerts.keys()
        and ids <= arrivals.resolved_notifications.keys()
        and ids <= arrivals.resolved_emails.keys()
    )


async def put_preferences(url: str, token: str) -> dict[str, Any]:
    """in_app and email for the admin; the hourly cap at its most (1000): each alert writes
    two notifications (raised, resolved), and HIGH e-mails stop at the cap (30 by default)."""
    body = {"channels": ["in_app", "email"], "email": ADDRESS, "max_per_hour": 1000}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
        session.put(
            f"{url}/api/notifications/preferences",
            json=body,
            headers={"Authorization": f"Bearer {token}"},
        ) as response,
    ):
        answer: dict[str, Any] = await response.json()
        if response.status != 200:
            raise RuntimeError(f"PUT /api/notifications/preferences: {response.status} {answer}")
    return answer


async def measure(
    server: ServiceProcess,
    mail: MailServer,
    token: str,
    db: Path,
    bed_id: int,
    run: Run,
    arrivals: Arrivals,
) -> Writes:
    await put_preferences(server.url, token)
    admin = AdminSocket(server.url, token, arrivals)
    try:
        await admin.connect()
        async with WriterProcess(db, bed_id, run.warmup + run.alerts, run.interval) as writer:
            await writer.ready()
            lag = LoopLag()
            lag.start()
            run.load_before = os.getloadavg()
            cpu, wall = server.cpu_seconds(), time.monotonic()
            writes = await writer.run()
            # From the last commit (wall clock, as the arrivals): the writer process's exit
            # is not waited for first.
            last = max(writes.breaches + writes.clears, default=time.time())
            while not complete(len(writes.breaches), arrivals):
                arrivals.changed.clear()
                left = last + run.drain_limit - time.time()
                if left <= 0:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(arrivals.changed.wait(), left)
            run.drain_seconds = max(time.time() - last, 0.0)
        run.window_seconds = time.monotonic() - wall
        run.server_cpu_seconds = server.cpu_seconds() - cpu
        run.load_after = os.getloadavg()
        await lag.stop()
        run.lag = lag.samples
        run.disconnected = admin.disconnected
    finally:
        await admin.close()
    run.emails_received = mail.handler.messages
    return writes


async def measure_all(
    args: argparse.Namespace, workdir: Path, db: Path, secret: str, token: str, bed_id: int
) -> tuple[Run, Writes, Arrivals]:
    arrivals = Arrivals()
    run = Run(args.alerts, args.interval, args.warmup, args.drain)
    async with MailServer(MailHandler(arrivals)) as mail:
        rules = workdir / "rules.yaml"
        rules.write_text(RULES_YAML)
        env = {
            "LIVEDASH_ALERT_RULES_FILE": str(rules),
            "LIVEDASH_SMTP_HOST": "127.0.0.1",
            "LIVEDASH_SMTP_PORT": str(mail.port),
            "LIVEDASH_SMTP_TLS": "none",
        }
        server = ServiceProcess(workdir, secret, db=db, port=args.port, env=env)
        print(f"service:            livedash from {server.package()}", flush=True)
        try:
            with server:
                run.health_seconds = await asyncio.to_thread(server.wait_healthy)
                print(
                    f"server:             pid {server.pid} at {server.url}; SMTP (aiosmtpd, "
                    f"this process) at 127.0.0.1:{mail.port}",
                    flush=True,
                )
                writes = await measure(server, mail, token, db, bed_id, run, arrivals)
        except Exception:
            print(f"server log (last lines):\n{server.log_tail()}", file=sys.stderr)
            raise
        log_text = server.log_path.read_text(errors="replace")
        run.log_problems = log_problems(log_text)
        if args.log is not None:
            args.log.write_text(log_text)
    return run, writes, arrivals


_LOG_EVENT = re.compile(r"\[(warning|error|critical)\s*\]")
_EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit)\b")


def log_problems(text: str) -> list[str]:
    """The service's warning and error events, each followed by the exception that ended
    its traceback, if any (structlog's console lines)."""
    return [line for line in text.splitlines() if _LOG_EVENT.search(line) or _EXCEPTION.match(line)]


# -- figures ---------------------------------------------------------------------------------


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f}"


def figures(values: Sequence[float | None]) -> dict[str, Any]:
    arrived = [v for v in values if v is not None]
    return {
        "count": len(arrived),
        "never": len(values) - len(arrived),
        **{
            name: percentile(arrived, q) if arrived else None
            for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99), ("max", 1.0))
        },
    }


def row(label: str, values: Sequence[float | None], target: float | None = None) -> str:
    found = figures(values)
    arrived = [v for v in values if v is not None]
    if not arrived:
        return f"  {label:34} n {found['count']:3}  (none arrived)  never {found['never']}"
    text = (
        f"  {label:34} n {found['count']:3}  "
        + "  ".join(f"{name} {_ms(found[name])}" for name in ("p50", "p95", "p99", "max"))
        + f"  never {found['never']}"
    )
    if target is not None:
        over = sum(1 for v in arrived if v > target)
        text += f"  ({over} over {target:g} s)"
    return text


def report(run: Run, writes: Writes, arrivals: Arrivals, matched: Matched) -> Iterator[str]:
    measured = slice(run.warmup, None)
    n = len(writes.breaches)
    yield (
        f"writes:             {n} breaches and {len(writes.clears)} clears "
        f"({run.warmup} warm-up breaches not measured); commit "
        f"p50 {_ms(percentile(writes.commit_seconds, 0.5)).strip()} ms, "
        f"max {_ms(max(writes.commit_seconds, default=0.0)).strip()} ms; "
        f"started late by up to {_ms(max(writes.late, default=0.0)).strip()} ms"
    )
    missing = n - sum(1 for alert_id in matched.alert_ids if alert_id is not None)
    yield (
        f"alerts raised:      {len(arrivals.alert)} firing `alert` events for {n} breaches"
        + (f"; {missing} breaches raised none" if missing else "")
        + (f"; {len(matched.unmatched)} alerts matched no breach" if matched.unmatched else "")
        + f"; resolved: {len(arrivals.resolved_alerts)} alert events, "
        f"{len(arrivals.resolved_notifications)} notifications, "
        f"{len(arrivals.resolved_emails)} e-mails"
    )
    yield (
        f"  drain:            waited {run.drain_seconds:.2f} s after the last write "
        f"(limit {run.drain_limit:g} s); {run.emails_received} e-mails in all"
        + (
            ", duplicates: " + ", ".join(f"{k} {v}" for k, v in arrivals.duplicates.items())
            if arrivals.duplicates
            else ""
        )
    )
    if run.disconnected is not None:
        yield "  the admin's socket was DISCONNECTED during the run"
    for other in arrivals.other[:5]:
        yield f"  unexpected:       {other}"
    yield f"latency (ms)        commit of a breach -> arrival, {n - run.warmup} measured breaches"
    yield row("change -> alert event (socket)", matched.alert[measured])
    yield row("change -> in-app notification", matched.notification[measured], TARGETS["in-app"])
    yield row("change -> e-mail received (SMTP)", matched.email[measured], TARGETS["e-mail"])
    yield "  split (ms)"
    yield row("change -> raised_at (server clock)", matched.evaluation[measured])
    after_alert = [
        (notified - alert) if notified is not None and alert is not None else None
        for alert, notified in zip(
            matched.alert[measured], matched.notification[measured], strict=True
        )
    ]
    yield row("alert event -> notification", after_alert)
    after_notification = [
        (mailed - notified) if mailed is not None and notified is not None else None
        for notified, mailed in zip(
            matched.notification[measured], matched.email[measured], strict=True
        )
    ]
    yield row("notification -> e-mail", after_notification)
    if run.warmup:
        yield "  warm-up (ms)      alert / in-app / e-mail of each unmeasured breach"
        for index in range(min(run.warmup, n)):
            parts = [
                "never" if v is None else f"{v * 1000:.1f}"
                for v in (matched.alert[index], matched.notification[index], matched.email[index])
            ]
            yield f"                    breach {index + 1}: " + " / ".join(parts)
    window = run.window_seconds or 1.0
    yield (
        f"CPU (of one core):  server {100 * run.server_cpu_seconds / window:.0f}% "
        f"over {window:.1f} s"
    )
    lag = run.lag
    yield (
        f"bench loop lag (ms) p50 {_ms(percentile(lag, 0.5)).strip()}  "
        f"p99 {_ms(percentile(lag, 0.99)).strip()}  max {_ms(max(lag, default=0.0)).strip()}"
    )
    yield (
        f"load average:       {run.load_before[0]:.2f} before, {run.load_after[0]:.2f} after "
        f"(1 min; this machine has {os.cpu_count()} CPUs)"
    )
    if run.log_problems:
        yield f"server log:         {len(run.log_problems)} warning or error lines, the first:"
        for line in run.log_problems[:5]:
            yield f"                    {line[:200]}"
    else:
        yield "server log:         no warning or error"


def as_json(run: Run, writes: Writes, arrivals: Arrivals, matched: Matched) -> dict[str, Any]:
    measured = slice(run.warmup, None)
    return {
        "command": [sys.executable, *sys.argv],
        "alerts": run.alerts,
        "interval": run.interval,
        "warmup": run.warmup,
        "cpus": os.cpu_count(),
        "load_before": run.load_before,
        "load_after": run.load_after,
        "seconds": {
            "change_to_alert": figures(matched.alert[measured]),
            "change_to_in_app": figures(matched.notification[measured]),
            "change_to_email": figures(matched.email[measured]),
            "change_to_raised_at": figures(matched.evaluation[measured]),
        },
        "breaches": [
            {
                "commit": commit,
                "alert_id": alert_id,
                "alert": alert,
                "in_app": notified,
                "email": mailed,
                "warmup": index < run.warmup,
            }
            for index, (commit, alert_id, alert, notified, mailed) in enumerate(
                zip(
                    writes.breaches,
                    matched.alert_ids,
                    matched.alert,
                    matched.notification,
                    matched.email,
                    strict=True,
                )
            )
        ],
        "clears": writes.clears,
        "unmatched_alerts": matched.unmatched,
        "alerts_by_id": {
            str(alert_id): {
                "raised_at": arrivals.raised_at.get(alert_id),
                "alert": arrivals.alert.get(alert_id),
                "in_app": arrivals.notification.get(alert_id),
                "email": arrivals.email.get(alert_id),
                "resolved_alert": arrivals.resolved_alerts.get(alert_id),
                "resolved_in_app": arrivals.resolved_notifications.get(alert_id),
                "resolved_email": arrivals.resolved_emails.get(alert_id),
            }
            for alert_id in sorted(arrivals.raised_at.keys() | arrivals.resolved_alerts.keys())
        },
        "server_log_problems": run.log_problems,
    }


# -- entry point -----------------------------------------------------------------------------


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Delay from a database change to its alert event, in-app notification "
        "and e-mail."
    )
    parser.add_argument("--alerts", type=int, default=50, help="measured breaches (50)")
    parser.add_argument(
        "--interval",
        type=float,
        default=0.5,
        help="seconds between breaches; each is cleared half-way to the next (0.5)",
    )
    parser.add_argument(
        "--warmup", type=int, default=2, help="breaches before the measured ones, shown apart (2)"
    )
    parser.add_argument(
        "--drain", type=float, default=10.0, help="seconds to wait for late arrivals (10)"
    )
    parser.add_argument("--port", type=int, help="server port (default: a free one)")
    parser.add_argument("--json", type=Path, help="also write the figures here as JSON")
    parser.add_argument("--log", type=Path, help="keep the service's log here")
    args = parser.parse_args(argv)
    if args.alerts < 1 or args.interval <= 0 or args.warmup < 0 or args.drain < 0:
        parser.error("--alerts >= 1, --interval > 0, --warmup >= 0, --drain >= 0")
    if 2 * (args.alerts + args.warmup) > 1000:
        # Each alert writes two notifications; past the hourly cap (at most 1000) HIGH alerts
        # are no longer e-mailed.
        parser.error("--alerts + --warmup <= 500 (the notification cap is 1000 an hour)")
    return args


def ed_bed(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(db)) as connection:
        found = connection.execute(
            "SELECT beds.id FROM beds JOIN rooms ON rooms.id = beds.room_id "
            "JOIN departments ON departments.id = rooms.department_id "
            "WHERE departments.code = ? AND beds.status = 'free' ORDER BY beds.id LIMIT 1",
            (DEPARTMENT,),
        ).fetchone()
    if found is None:
        raise RuntimeError(f"no free bed in {DEPARTMENT}")
    return int(found[0])


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    begin_bench()
    with tempfile.TemporaryDirectory(prefix="livedash-bench-alerts-") as temp:
        workdir = Path(temp)
        db = workdir / "hospital.db"
        url, _ = migrated_hospital(db)
        bed_id = ed_bed(db)
        settings = bench_settings(url, workdir)
        add_users(db, [(ADMIN, Role.ADMIN, [DEPARTMENT])])
        token = issue_token(settings, ADMIN, Role.ADMIN, [DEPARTMENT])
        print(
            f"database:           SQLite (WAL) at {db}; the writer flips bed {bed_id} of "
            f"{DEPARTMENT} occupied/free: a breach every {args.interval:g} s, cleared "
            f"{args.interval / 2:g} s later, {args.warmup} + {args.alerts} times",
            flush=True,
        )
        print(
            f"rule:               {RULE}: beds_occupied of {DEPARTMENT} above {THRESHOLD}, "
            f"high, for 0, keep_firing_for 0; one admin of {DEPARTMENT} ({ADMIN}) with "
            "in_app + email, on one python-socketio client",
            flush=True,
        )
        try:
            run, writes, arrivals = asyncio.run(
                measure_all(args, workdir, db, settings.signing_key(), token, bed_id)
            )
        except KeyboardInterrupt:
            print("interrupted; the server was stopped", file=sys.stderr)
            return 130
    matched = match(writes, arrivals)
    for line in report(run, writes, arrivals, matched):
        print(line)
    if args.json is not None:
        args.json.write_text(json.dumps(as_json(run, writes, arrivals, matched), indent=2) + "\n")
        print(f"json:               {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
