"""Settings: one pydantic-settings object, built by the entrypoint and passed down.

Every field can be set from the environment as `LIVEDASH_<FIELD>` (or a `.env` file).
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from livedash.errors import ConfigurationError
from livedash.observability.logging import LEVELS as LOG_LEVELS

DEFAULT_DATA_DIR = Path(".livedash")


class Settings(BaseSettings):
    """Everything livedash can be configured with."""

    model_config = SettingsConfigDict(
        env_prefix="LIVEDASH_", env_file=".env", extra="ignore", use_attribute_docstrings=True
    )

    database_url: str = f"sqlite+aiosqlite:///{DEFAULT_DATA_DIR}/livedash.db"
    """The database: `sqlite+aiosqlite:///path/to/file.db` (embedded, one instance) or
    `postgresql+asyncpg://user:password@host/db` (several instances; needs wal_level=logical and
    wal2json, see `livedash doctor`)."""
    host: str = "127.0.0.1"
    """The address the service listens on (0.0.0.0: every interface)."""
    port: int = Field(default=8000, ge=1, le=65535)
    """The TCP port the service listens on."""
    timezone: str = "UTC"
    """The hospital's time zone (IANA name, e.g. Europe/Berlin): it defines what "today" means for
    daily figures, reports and mute timings."""
    currency: str = Field(default="EUR", pattern=r"^[A-Z]{3}$")
    """The ISO 4217 code the page writes money in."""
    locale: str | None = Field(default=None, pattern=r"^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*$")
    """The BCP 47 locale the page writes numbers and dates in (unset: each browser's own language).
    """

    # Tokens (RFC 8725): one algorithm, its key, required claims, audience and issuer.
    jwt_secret: SecretStr | None = None
    """The HS256 signing key of access tokens; unset: the key in `jwt_secret_file`. Every instance
    must have the same key."""
    jwt_secret_file: Path = DEFAULT_DATA_DIR / "jwt-secret"
    """Where the HS256 signing key is kept when `jwt_secret` is unset; created (mode 0600) on first
    use."""
    jwt_algorithm: Literal["HS256", "RS256", "ES256"] = "HS256"
    """The one algorithm tokens are signed and verified with (RFC 8725: no other is accepted)."""
    jwt_private_key_file: Path | None = None
    """PEM private key to sign tokens with, for RS256 or ES256."""
    jwt_public_key_file: Path | None = None
    """PEM public key to verify tokens with, for RS256 or ES256."""
    jwt_jwks_file: Path | None = None
    """A JWKS file of public keys to verify RS256/ES256 tokens by their `kid` (for key rotation)."""
    jwt_audience: str = "livedash"
    """The `aud` claim tokens are issued with and must carry."""
    jwt_issuer: str = "livedash"
    """The `iss` claim tokens are issued with and must carry."""
    jwt_leeway_seconds: int = Field(default=30, ge=0, le=300)
    """Clock difference allowed when checking a token's times (exp, nbf, iat)."""
    check_users: bool = True
    """Whether a token's user must exist and be active in the users table (a token then never
    grants more than the user's row)."""
    token_minutes: int = Field(default=60 * 12, ge=1)
    """Lifetime of tokens made by `livedash token` and the demo."""
    access_token_minutes: int = Field(default=15, ge=1)
    """Lifetime of the access tokens handed out at sign-in and refresh."""
    refresh_token_days: int = Field(default=7, ge=1)
    """How long a sign-in session lasts at most, refreshed or not."""
    idle_timeout_minutes: int = Field(default=30, ge=1)
    """A sign-in session not refreshed for this long ends."""
    auth_timeout_seconds: float = Field(default=10.0, gt=0)
    """A socket that has not authenticated this long after connecting is closed."""
    auth_recheck_seconds: float = Field(default=5.0, gt=0)
    """How often open sockets are checked against revocations and the users table: the longest a
    revoked, disabled or demoted user keeps seeing what it no longer may."""

    # Rate limits, in the `limits` library's notation ("60/minute;10/second").
    rate_limit_socket: str = "60/minute;10/second"
    """Events one socket may send."""
    rate_limit_user: str = "120/minute;20/second"
    """Events one user may send, over all its sockets."""
    rate_limit_rest: str = "100/minute"
    """REST requests one user may make."""
    rate_limit_api_key: str = "1000/minute"
    """Requests one API key (a machine writer) may make."""
    rate_limit_connections_per_ip: str = "1000/minute"
    """New connections from one address; generous because a hospital's screens often come through
    one proxy or NAT address and reconnect together after a restart."""
    rate_limit_history_hours: str = "20000/minute"
    """History one user may read, counted in hours spanned (a year by day is 8,784)."""
    rate_limit_user_per_socket: str = "20/minute;10/second"
    """What each socket a user has open adds to its event budget, on the instance that holds it: a
    wall of screens sharing one account all reconnect, sign in and subscribe together after a
    restart. Each socket's own limit (`rate_limit_socket`) still holds."""
    rate_limit_history_hours_per_socket: str = "2000/minute"
    """What each socket a user has open adds to its history budget (as
    `rate_limit_user_per_socket`)."""
    rate_limit_rest_per_socket: str = "20/minute"
    """What each socket a user has open adds to its REST budget (as `rate_limit_user_per_socket`).
    """
    history_reads_at_once: int = Field(default=2, ge=1)
    """History reads run at once per instance; others wait their turn."""

    # HTTP and transport.
    cors_origins: list[str] = Field(default_factory=list)
    """Other browser origins allowed to use the service (JSON list, e.g. ["https://ops.example"]);
    empty: the page's own origin only."""
    tls_certfile: Path | None = None
    """PEM certificate to serve HTTPS with (with `tls_keyfile`); unset: plain HTTP, e.g. behind a
    TLS proxy."""
    tls_keyfile: Path | None = None
    """The unencrypted PEM key of `tls_certfile`."""

    max_payload_bytes: int = Field(default=64 * 1024, ge=1024)
    """Largest socket.io message or ingest body accepted."""
    max_list_length: int = Field(default=100, ge=1)
    """Most metrics or departments one request may name."""
    max_subscriptions: int = Field(default=2000, ge=1)
    """Most (metric, department) subscriptions one socket may hold."""
    shutdown_grace_seconds: int = Field(default=5, ge=0)
    """How long a stopping instance lets open requests and sockets finish."""
    coalesce_window_seconds: float = Field(default=0.025, ge=0, le=1.0)
    """During a burst, updates go out at most once per this window, each time the latest value of
    every metric (0: each at once); an update after a quiet spell leaves at once."""
    max_connections: int = Field(default=10_000, ge=1)
    """Most sockets one process holds (the main one, and each socket worker); more are refused."""
    # Off, as in Node's socket.io: compressing small JSON frames saves little, and each
    # socket's deflate state costs tens of KB (measured with bench/idle_sockets.py).
    ws_per_message_deflate: bool = False
    """Compress WebSocket messages (permessage-deflate)."""
    socket_workers: int = Field(default=0, ge=0, le=64)
    """Processes besides the main one that serve WebSocket clients, on the same port, so that
    a reconnect storm uses more than one core (the embedded default, without TLS; a deployment
    runs more instances instead). 0: the main process serves every socket."""
    ping_interval_seconds: float = Field(default=25.0, gt=0)
    """How often the server pings each socket."""
    ping_timeout_seconds: float = Field(default=20.0, gt=0)
    """A socket that does not answer a ping within this is closed."""

    # Production: PostgreSQL's logical decoding slot (wal2json), Redis, several instances.
    feed_slot: str = Field(default="livedash", pattern=r"^[a-z0-9_]{1,63}$")
    """PostgreSQL: the name of the logical replication slot the change feed reads."""
    feed_heartbeat_seconds: float = Field(default=10.0, gt=0)
    """PostgreSQL: how often the feed reports its position to the server, so the slot does not hold
    WAL while nothing watched changes."""
    redis_url: str | None = None
    """Redis (`redis://host:6379/0`): the shared cache, fan-out between instances and rate limits;
    unset: one instance, in memory."""
    leader_lock_key: int = 0x6C697665
    """The PostgreSQL advisory lock that elects the one instance reading the change feed; instances
    of one deployment share it."""
    leader_poll_seconds: float = Field(default=1.0, gt=0)
    """How often an instance that does not lead tries to take the lead."""
    forwarded_allow_ips: str = "127.0.0.1"
    """Proxies whose X-Forwarded-For and X-Forwarded-Proto are believed (comma-separated addresses,
    or *)."""

    # Recovery: the updates kept for clients that reconnect (`since`), by count and by age.
    history_size: int = Field(default=10_000, ge=1, le=1_000_000)
    """Updates kept for clients that reconnect and ask for what they missed (`since`)."""
    history_max_age_seconds: float = Field(default=300.0, gt=0)
    """How long those updates are kept; a client away longer gets a fresh snapshot."""

    feed_batch_size: int = Field(default=500, ge=1)
    """Most changes the feed reads in one go."""
    feed_fallback_poll_seconds: float = Field(default=1.0, gt=0)
    """SQLite: a safety-net read of the change log this often (commits are normally noticed at
    once)."""
    feed_settle_seconds: float = Field(default=0.02, gt=0)
    """SQLite: after a write is noticed, one more read this much later, for a commit not yet
    visible."""
    feed_confirm_interval_seconds: float = Field(default=0.5, gt=0)
    """How often the feed stores how far it has read (a write that competes with the hospital's
    own)."""
    feed_keep_rows: int = Field(default=10_000, ge=0)
    """SQLite: rows of the change log kept once read; older ones are pruned."""
    time_refresh_seconds: float = Field(default=5.0, gt=0)
    """How often the day-scoped figures check whether the hospital's day has turned."""
    history_refresh_seconds: float = Field(default=60.0, gt=0)
    """How often growth and trend figures are recomputed from the roll-ups."""

    # Alerts: the rules (YAML; livedash's defaults when unset), and the feed lag past which
    # data is too old to fire or resolve on.
    alert_rules_file: Path | None = None
    """The alert rules (YAML); unset: livedash's default rules (docs/alerts.md)."""
    alert_stale_after_seconds: float = Field(default=60.0, gt=0)
    """Past this feed lag, data is too old to raise or resolve alerts on."""
    alert_time_scale: float = Field(default=1.0, gt=0)
    """How many times faster than real time the data moves (the demo's simulator speed); the rules'
    periods are divided by it."""

    # Notifications: what e-mails and pushes say, and where they go. E-mail needs smtp_host
    # (and smtp_sender); Web Push needs a VAPID key (`livedash vapid-keys` writes one).
    hospital_name: str = "livedash"
    """The hospital's name, in e-mails, pushes and reports."""
    public_url: str = "http://localhost:8000"
    """The dashboard as users reach it, for links in e-mails and pushes."""
    smtp_host: str | None = None
    """The SMTP relay e-mails go through; unset: no e-mail."""
    smtp_port: int = Field(default=587, ge=1, le=65535)
    """The SMTP relay's port (587 with STARTTLS, 465 with TLS)."""
    smtp_sender: str = "livedash <livedash@localhost>"
    """The From address of e-mails."""
    smtp_username: str | None = None
    """SMTP login (with `smtp_password`); unset: no AUTH."""
    smtp_password: SecretStr | None = None
    """SMTP password; sent only over TLS."""
    smtp_tls: str = Field(default="starttls", pattern=r"^(none|starttls|tls)$")
    """`starttls` (upgrade, port 587), `tls` (TLS from the first byte, port 465) or `none`."""
    smtp_timeout_seconds: float = Field(default=10.0, gt=0)
    """The longest one exchange with the SMTP relay may take."""
    vapid_private_key_file: Path | None = None
    """The Web Push (VAPID) private key, PEM (`livedash vapid-keys` writes one); unset: no push
    notifications."""
    vapid_subject: str = "mailto:livedash@localhost"
    """The operator's contact sent to push services with each push (`mailto:` or `https:` URL)."""
    push_allow_http: bool = False
    """Allow push subscriptions to plain-HTTP services on any host (tests only; never in
    production)."""
    delivery_lease_seconds: float = Field(default=60.0, gt=0)
    """How long the worker sending a notification holds it (longer than any one send); after that a
    worker whose process died is presumed gone and another sends it."""
    push_service_hosts: list[str] = [
        "fcm.googleapis.com",
        "updates.push.services.mozilla.com",
        ".push.apple.com",
        ".notify.windows.com",
    ]
    """The push services browsers may subscribe through (hosts, or `.suffix`); others are refused,
    so that nobody can make the server post to any address."""

    # Reports: where files go (`files`: under report_dir; `database`: in the reports table),
    # how long each type is kept, and above what size an e-mail carries a link instead.
    report_storage: Literal["files", "database"] = "files"
    """Where report files go: `files` (under `report_dir`) or `database` (the reports table)."""
    report_dir: Path = DEFAULT_DATA_DIR / "reports"
    """The directory report files are kept in (with `report_storage=files`)."""
    report_retention_days: dict[str, int] = Field(
        default={"default": 90}, description="Days kept, by report type ('default': the rest)."
    )
    report_attachment_max_bytes: int = Field(default=5_000_000, ge=0)
    """Reports larger than this are e-mailed as a link instead of an attachment."""
    report_max_attempts: int = Field(default=4, ge=1, le=20)
    """Tries of each scheduled report run before it is marked failed."""
    report_retry_seconds: float = Field(default=60.0, gt=0)
    """Wait before retrying a failed scheduled report (doubled each time)."""
    report_settle_seconds: float = Field(default=30.0, ge=0, le=3600)
    """A scheduled report starts this long after its time, so that what was committed just before
    has come through the change feed."""

    # Health: what makes /health/ready answer 503, and the hospital's main application.
    ready_max_feed_lag_seconds: float = Field(default=30.0, gt=0)
    """The instance reading the change feed is not ready while the feed is further behind."""
    ready_max_memory_mb: int | None = Field(default=None, ge=1)
    """The instance is not ready while its resident memory (RSS) is above this; unset: no limit."""
    ready_max_waiting_jobs: int = Field(default=1000, ge=1)
    """Not ready while more notifications and reports than this wait to be sent or made."""
    ready_probe_seconds: float = Field(default=2.0, gt=0)
    """How often readiness measures the feed lag, the database, the queue and memory."""
    main_app_health_url: str | None = Field(default=None, pattern=r"^https?://\S+$")
    """The hospital's main application's health URL (http or https), polled to show whether it
    is up; unset: not polled. It never makes livedash not ready."""
    main_app_poll_seconds: float = Field(default=10.0, gt=0)
    """How often the main application's health URL is polled."""
    main_app_timeout_seconds: float = Field(default=2.0, gt=0)
    """How long one poll of the main application may take before it counts as down."""

    log_level: str = "info"
    """Lowest level logged: debug, info, warning, error or critical (livedash's events and
    uvicorn's; other libraries' from warning up)."""
    log_json: bool | None = None
    """true: one JSON object per line (journald, Loki); false: readable text; unset: JSON unless
    the log goes to a terminal. Fields and redaction: docs/logging.md."""

    @model_validator(mode="after")
    def _socket_workers_where_they_serve(self) -> Settings:
        if self.socket_workers and not self.database_url.startswith("sqlite"):
            raise ValueError(
                "LIVEDASH_SOCKET_WORKERS serves the embedded default (SQLite): a deployment "
                "runs more instances behind its proxy instead; set it to 0"
            )
        if self.socket_workers and self.tls_certfile is not None:
            raise ValueError(
                "LIVEDASH_SOCKET_WORKERS takes connections before TLS: end TLS at a proxy "
                "(LIVEDASH_TLS_CERTFILE unset), or set it to 0"
            )
        return self

    @field_validator("log_level")
    @classmethod
    def _known_log_level(cls, value: str) -> str:
        if value.lower() not in LOG_LEVELS:
            raise ValueError(f"unknown log level {value!r}; known: {', '.join(LOG_LEVELS)}")
        return value.lower()

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
