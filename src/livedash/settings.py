"""Settings: one pydantic-settings object, built by the entrypoint and passed down.

Every field can be set from the environment as `LIVEDASH_<FIELD>` (or a `.env` file).
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from livedash.errors import ConfigurationError

DEFAULT_DATA_DIR = Path(".livedash")


class Settings(BaseSettings):
    """Everything livedash can be configured with."""

    model_config = SettingsConfigDict(env_prefix="LIVEDASH_", env_file=".env", extra="ignore")

    database_url: str = f"sqlite+aiosqlite:///{DEFAULT_DATA_DIR}/livedash.db"
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    timezone: str = "UTC"
    # How the page writes money and numbers: an ISO 4217 code, and a BCP 47 locale (None: the
    # browser's own language).
    currency: str = Field(default="EUR", pattern=r"^[A-Z]{3}$")
    locale: str | None = Field(default=None, pattern=r"^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*$")

    # Tokens (RFC 8725): one algorithm, its key, required claims, audience and issuer.
    jwt_secret: SecretStr | None = None
    jwt_secret_file: Path = DEFAULT_DATA_DIR / "jwt-secret"
    jwt_algorithm: Literal["HS256", "RS256", "ES256"] = "HS256"
    jwt_private_key_file: Path | None = None  # PEM, to sign with RS256/ES256
    jwt_public_key_file: Path | None = None  # PEM, to verify RS256/ES256
    jwt_jwks_file: Path | None = None  # a JWKS file, to verify RS256/ES256 by `kid`
    jwt_audience: str = "livedash"
    jwt_issuer: str = "livedash"
    jwt_leeway_seconds: int = Field(default=30, ge=0, le=300)
    check_users: bool = True  # the token's user must exist and be active in `users`
    token_minutes: int = Field(default=60 * 12, ge=1)
    access_token_minutes: int = Field(default=15, ge=1)
    refresh_token_days: int = Field(default=7, ge=1)
    idle_timeout_minutes: int = Field(default=30, ge=1)
    auth_timeout_seconds: float = Field(default=10.0, gt=0)
    # How often open sockets are checked against revocations and the users table: the most a
    # revoked, deactivated or demoted user keeps seeing what it no longer may.
    auth_recheck_seconds: float = Field(default=5.0, gt=0)

    # Rate limits, in the `limits` library's notation ("60/minute;10/second").
    rate_limit_socket: str = "60/minute;10/second"
    rate_limit_user: str = "120/minute;20/second"
    rate_limit_rest: str = "100/minute"
    rate_limit_api_key: str = "1000/minute"
    # Generous: a hospital's screens often reach us through one proxy or NAT address, and all
    # reconnect together after a restart.
    rate_limit_connections_per_ip: str = "1000/minute"
    # History is charged by the hours a request spans (a year by day is 8,784), per user.
    rate_limit_history_hours: str = "20000/minute"
    # What each socket a user has open adds to its event, history and REST budgets above, on
    # the instance that holds it: a wall of screens sharing one account all reconnect, sign
    # in, subscribe and read their trends together after a restart. Each socket's own limit
    # (`rate_limit_socket`) still holds.
    rate_limit_user_per_socket: str = "20/minute;10/second"
    rate_limit_history_hours_per_socket: str = "2000/minute"
    rate_limit_rest_per_socket: str = "20/minute"
    history_reads_at_once: int = Field(default=2, ge=1)  # per instance; others wait their turn

    # HTTP and transport.
    cors_origins: list[str] = Field(default_factory=list)  # empty: same origin only
    tls_certfile: Path | None = None
    tls_keyfile: Path | None = None

    max_payload_bytes: int = Field(default=64 * 1024, ge=1024)
    max_list_length: int = Field(default=100, ge=1)
    max_subscriptions: int = Field(default=2000, ge=1)
    shutdown_grace_seconds: int = Field(default=5, ge=0)
    coalesce_window_seconds: float = Field(default=0.025, ge=0, le=1.0)
    max_connections: int = Field(default=10_000, ge=1)  # sockets per instance
    # Off, as in Node's socket.io: compressing small JSON frames saves little, and each
    # socket's deflate state costs tens of KB (measured with bench/idle_sockets.py).
    ws_per_message_deflate: bool = False
    ping_interval_seconds: float = Field(default=25.0, gt=0)
    ping_timeout_seconds: float = Field(default=20.0, gt=0)

    # Production: PostgreSQL's logical decoding slot (wal2json), Redis, several instances.
    feed_slot: str = Field(default="livedash", pattern=r"^[a-z0-9_]{1,63}$")
    feed_heartbeat_seconds: float = Field(default=10.0, gt=0)
    redis_url: str | None = None  # shared cache, fan-out between instances, rate limits
    leader_lock_key: int = 0x6C697665  # the advisory lock that elects the feed's one reader
    leader_poll_seconds: float = Field(default=1.0, gt=0)
    forwarded_allow_ips: str = "127.0.0.1"  # proxies whose X-Forwarded-For is believed

    # Recovery: the updates kept for clients that reconnect (`since`), by count and by age.
    history_size: int = Field(default=10_000, ge=1, le=1_000_000)
    history_max_age_seconds: float = Field(default=300.0, gt=0)

    feed_batch_size: int = Field(default=500, ge=1)
    feed_fallback_poll_seconds: float = Field(default=1.0, gt=0)
    feed_settle_seconds: float = Field(default=0.02, gt=0)
    feed_confirm_interval_seconds: float = Field(default=0.5, gt=0)
    feed_keep_rows: int = Field(default=10_000, ge=0)
    time_refresh_seconds: float = Field(default=5.0, gt=0)
    history_refresh_seconds: float = Field(default=60.0, gt=0)

    # Alerts: the rules (YAML; livedash's defaults when unset), and the feed lag past which
    # data is too old to fire or resolve on.
    alert_rules_file: Path | None = None
    alert_stale_after_seconds: float = Field(default=60.0, gt=0)
    # How many times faster than real time the data moves: the demo's simulator speed. The
    # rules' periods (for, keep_firing_for, escalate_after) are divided by it.
    alert_time_scale: float = Field(default=1.0, gt=0)

    # Notifications: what e-mails and pushes say, and where they go. E-mail needs smtp_host
    # (and smtp_sender); Web Push needs a VAPID key (`livedash vapid-keys` writes one).
    hospital_name: str = "livedash"
    public_url: str = "http://localhost:8000"  # the dashboard as users reach it (for links)
    smtp_host: str | None = None
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_sender: str = "livedash <livedash@localhost>"
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_tls: str = Field(default="starttls", pattern=r"^(none|starttls|tls)$")
    smtp_timeout_seconds: float = Field(default=10.0, gt=0)
    vapid_private_key_file: Path | None = None
    vapid_subject: str = "mailto:livedash@localhost"
    push_allow_http: bool = False  # tests' local push service only (any host then)
    # How long a delivery is held by the worker sending it; after that, a worker whose
    # process died is presumed gone and another sends it. Longer than any one send.
    delivery_lease_seconds: float = Field(default=60.0, gt=0)
    # The push services browsers subscribe through; a subscription elsewhere is refused, so
    # that a user cannot make the server post to any address (a host, or ".suffix").
    push_service_hosts: list[str] = [
        "fcm.googleapis.com",
        "updates.push.services.mozilla.com",
        ".push.apple.com",
        ".notify.windows.com",
    ]

    # Reports: where files go (`files`: under report_dir; `database`: in the reports table),
    # how long each type is kept, and above what size an e-mail carries a link instead.
    report_storage: Literal["files", "database"] = "files"
    report_dir: Path = DEFAULT_DATA_DIR / "reports"
    report_retention_days: dict[str, int] = Field(
        default={"default": 90}, description="Days kept, by report type ('default': the rest)."
    )
    report_attachment_max_bytes: int = Field(default=5_000_000, ge=0)
    report_max_attempts: int = Field(default=4, ge=1, le=20)
    report_retry_seconds: float = Field(default=60.0, gt=0)
    # A scheduled run starts this long after its time, so that what was committed just before
    # (the end of its period) has come through the change feed.
    report_settle_seconds: float = Field(default=30.0, ge=0, le=3600)

    log_level: str = "info"
    log_json: bool = False

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as error:
            raise ValueError(f"unknown time zone {value!r}") from error
        return value

    @property
    def zone(self) -> ZoneInfo:
        """The hospital's time zone; it defines what "today" means."""
        return ZoneInfo(self.timezone)

    def signing_key(self) -> str:
        """The JWT signing key: the setting, else the key file (created on first use)."""
        if self.jwt_secret is not None:
            return self.jwt_secret.get_secret_value()
        path = self.jwt_secret_file
        try:
            if path.exists():
                key = path.read_text().strip()
                if key:
                    return key
            path.parent.mkdir(parents=True, exist_ok=True)
            key = secrets.token_urlsafe(48)
            path.touch(mode=0o600)
            path.write_text(key + "\n")
            return key
        except OSError as error:
            raise ConfigurationError(
                f"cannot read or create the key file {path}: {error}"
            ) from error
