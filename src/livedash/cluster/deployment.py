"""`livedash status`: every running instance of this deployment, for whoever runs it.

With Redis configured (a deployment of several instances), the instance board
(`livedash.cluster.instances`) holds every live instance's report, rewritten every 2 s: it is
read directly, with the service's own settings, and needs no token. Without Redis (the
embedded default, one instance) there is no board: the instance on this machine is asked
for its `/health/ready` over HTTP; a super_admin token adds its role, sockets and lag.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from redis.asyncio import Redis
from redis.exceptions import RedisError
from rich.table import Table
from rich.text import Text

from livedash.cluster.instances import REPORT_TTL_SECONDS, read_reports
from livedash.settings import Settings

TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class InstanceRow:
    """One instance, as it last reported itself; None: not known (an older release, or no
    token)."""

    instance: str
    ready: bool | None
    failing: list[str] = field(default_factory=list)
    role: str | None = None
    connections: int | None = None
    feed_lag_seconds: float | None = None
    version: str | None = None
    started_at: datetime | None = None
    reported_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class DeploymentStatus:
    """What `livedash status` found, and where it looked."""

    source: str
    instances: list[InstanceRow]
    problem: str | None = None

    @property
    def healthy(self) -> bool:
        """Instances were found, and every one is ready."""
        return self.problem is None and all(row.ready for row in self.instances)


async def run_status(
    settings: Settings, *, url: str | None = None, token: str | None = None
) -> DeploymentStatus:
    """The deployment's instances: from Redis's board when Redis is configured (and no `url`
    is given), else from the `/health/ready` of the instance at `url` (default: this
    machine's, on the configured port)."""
    if settings.redis_url is not None and url is None:
        return await _from_board(settings.redis_url)
    verify = True
    if url is None:
        url, verify = _local_url(settings), False  # loopback: the request stays on this host
    return await _from_instance(url.rstrip("/"), token, verify=verify)


async def _from_board(redis_url: str) -> DeploymentStatus:
    source = f"Redis at {_without_password(redis_url)}"
    client = Redis.from_url(
        redis_url, socket_timeout=TIMEOUT_SECONDS, socket_connect_timeout=TIMEOUT_SECONDS
    )
    try:
        reports = await read_reports(client)
    except (RedisError, OSError) as error:
        return DeploymentStatus(source, [], f"cannot read Redis: {error}")
    finally:
        await client.aclose()
    rows = sorted((_row(report) for report in reports), key=lambda row: row.instance)
    if not rows:
        problem = f"no instance has reported in the last {REPORT_TTL_SECONDS} s: none is running"
        return DeploymentStatus(source, [], problem)
    return DeploymentStatus(source, rows)


def _row(report: Mapping[str, Any]) -> InstanceRow:
    def number(key: str) -> float | None:
        value = report.get(key)
        return float(value) if isinstance(value, int | float) else None

    connections = number("connections")
    failing = report.get("failing")
    ready = report.get("ready")
    return InstanceRow(
        instance=str(report.get("instance", "?")),
        ready=ready if isinstance(ready, bool) else None,
        failing=[str(name) for name in failing] if isinstance(failing, list) else [],
        role=_text(report.get("role")),
        connections=int(connections) if connections is not None else None,
        feed_lag_seconds=number("feed_lag_seconds"),
        version=_text(report.get("version")),
        started_at=_moment(report.get("started_at")),
        reported_at=_moment(report.get("reported_at")),
    )


async def _from_instance(url: str, token: str | None, *, verify: bool) -> DeploymentStatus:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        async with httpx.AsyncClient(timeout=TIMEOUT_SECONDS, verify=verify) as http:
            response = await http.get(f"{url}/health/ready", headers=headers)
    except httpx.HTTPError as error:
        problem = f"no livedash answers at {url}: {error or type(error).__name__}"
        return DeploymentStatus(url, [], problem)
    if response.status_code in (401, 403):
        problem = f"the token was refused ({response.status_code}): {_detail(response)}"
        return DeploymentStatus(url, [], problem)
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or "status" not in body:
        return DeploymentStatus(
            url, [], f"{url} does not look like livedash (HTTP {response.status_code})"
        )
    failing = [str(name) for name in body.get("failing", [])]
    identity = body.get("instance")
    if not isinstance(identity, dict):
        return DeploymentStatus(url, [InstanceRow(url, body["status"] == "ready", failing)])
    checks = body.get("checks", {})
    feed = checks.get("feed", {})
    return DeploymentStatus(
        url,
        [
            _row(
                {
                    **identity,
                    "ready": body["status"] == "ready",
                    "failing": failing,
                    "connections": checks.get("connections", {}).get("connections"),
                    "feed_lag_seconds": feed.get("lag_seconds"),
                    "reported_at": datetime.now(UTC).isoformat(),
                }
            )
        ],
    )


def status_table(status: DeploymentStatus) -> Table:
    """The instances as a table, one row each, for a terminal (`lag`: the feed's, on the
    leader; `seen`: how long ago the instance last reported)."""
    table = Table(title=f"livedash instances ({status.source})", title_justify="left")
    table.add_column("instance", no_wrap=True)
    table.add_column("role", no_wrap=True)
    table.add_column("ready", min_width=9)
    for column in ("sockets", "lag", "version", "up", "seen"):
        table.add_column(column, justify="right", no_wrap=True)
    now = datetime.now(UTC)
    for row in status.instances:
        if row.ready is None:
            ready = Text("?")
        elif row.ready:
            ready = Text("ready", style="green")
        else:
            ready = Text("not ready: " + ", ".join(row.failing), style="bold red")
        table.add_row(
            row.instance,
            Text(row.role or "?", style="bold" if row.role == "leader" else ""),
            ready,
            _or_unknown(row.connections),
            f"{row.feed_lag_seconds:g} s" if row.feed_lag_seconds is not None else "-",
            row.version or "?",
            _duration((now - row.started_at).total_seconds()) if row.started_at else "?",
            f"{(now - row.reported_at).total_seconds():.0f} s" if row.reported_at else "?",
        )
    return table


def _local_url(settings: Settings) -> str:
    host = settings.host
    try:
        if ipaddress.ip_address(host).is_unspecified:
            host = "127.0.0.1" if ":" not in host else "::1"
    except ValueError:
        pass  # a host name
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if settings.tls_certfile is not None else "http"
    return f"{scheme}://{host}:{settings.port}"


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + netloc))


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail", response.text))
    except (ValueError, AttributeError):
        return response.text[:200]


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _moment(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _or_unknown(value: int | None) -> str:
    return "?" if value is None else str(value)


def _duration(seconds: float) -> str:
    minutes, _ = divmod(int(max(seconds, 0)), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m" if minutes else f"{int(seconds)}s"
