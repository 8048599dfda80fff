"""API keys for machine writers, such as the hospital's main application posting to ingest.

A key reads `ldk_<prefix>_<secret>`. The prefix (8 characters) is stored in clear, to find the
key's row and to tell keys apart in listings; the key itself is stored only as its SHA-256.
The secret is shown once, when the key is created, and never again.

A key carries scopes; it is refused once revoked, and for any scope it lacks:

- `ingest`: the hospital's main application posts changes (`POST /api/ingest/...`).
- `dashboard`: a wall screen signs in as the key's user (`POST /api/auth/key`) and renews its
  access token with the key, so that it never needs a person to sign in again. Such a key
  names an active user who is not a super_admin. Revoking it signs that user out everywhere
  (`tokens_valid_after`), so its screens lose their sockets within the revocation bound;
  screens with another key of the same user sign in again with theirs.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
import string
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy import insert, or_, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from livedash.errors import AuthError, ConfigurationError, Forbidden, StoreError
from livedash.settings import Settings
from livedash.store.engine import open_database
from livedash.store.models import ApiKey, Role, User
from livedash.timeutil import naive_utc

log = structlog.get_logger(__name__)

KEY_MARK = "ldk_"
PREFIX_LENGTH = 8
MAX_KEY_LENGTH = 128
_PREFIX_ALPHABET = string.ascii_lowercase + string.digits

# Recording every use would be a write per request; once a minute says enough about a key.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class Scope(enum.StrEnum):
    """What a key may do."""

    INGEST = "ingest"
    DASHBOARD = "dashboard"


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    """A key as listings show it: everything but the secret."""

    name: str
    prefix: str
    scopes: tuple[str, ...]
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None
    username: str | None = None
    """The user a `dashboard` key signs in as."""


async def create_api_key(
    database: AsyncEngine,
    name: str,
    scopes: Iterable[str] = (Scope.INGEST,),
    *,
    username: str | None = None,
    now: datetime | None = None,
) -> str:
    """Create the key `name` and return it; this is the only time its secret is seen.

    A `dashboard` key needs `username`, an active user who is not a super_admin; the other
    scopes take none."""
    if not name or len(name) > 128:
        raise ConfigurationError("an API key's name must be 1 to 128 characters")
    granted = sorted({str(scope) for scope in scopes})
    unknown = [scope for scope in granted if scope not in set(Scope)]
    if unknown:
        raise ConfigurationError(
            f"unknown scope {unknown[0]!r}; known: {', '.join(s.value for s in Scope)}"
        )
    if (Scope.DASHBOARD in granted) != (username is not None):
        raise ConfigurationError(
            "a dashboard key signs in as a user: give the user for the dashboard scope, "
            "and only for it"
        )
    prefix = "".join(secrets.choice(_PREFIX_ALPHABET) for _ in range(PREFIX_LENGTH))
    key = f"{KEY_MARK}{prefix}_{secrets.token_urlsafe(32)}"
    try:
        async with database.begin() as connection:
            if username is not None:
                await _check_key_user(connection, username)
            await connection.execute(
                insert(ApiKey).values(
                    name=name,
                    prefix=prefix,
                    key_hash=_hash(key),
                    scopes=granted,
                    created_at=naive_utc(now or datetime.now(UTC)),
                    username=username,
                )
            )
    except IntegrityError as error:
        raise StoreError(f"an API key named {name!r} already exists") from error
    except (SQLAlchemyError, OSError) as error:
        raise StoreError(f"cannot store the API key: {error}") from error
    log.info("audit_api_key_created", name=name, prefix=prefix, scopes=granted, user=username)
    return key


async def _check_key_user(connection: AsyncConnection, username: str) -> None:
    row = (
        await connection.execute(select(User.role, User.active).where(User.username == username))
    ).first()
    if row is None or not row.active:
        raise ConfigurationError(f"there is no active user {username!r} to sign in as")
    if row.role == Role.SUPER_ADMIN:
        # Whoever can read the screen's storage holds the key: never one with every power.
        raise ConfigurationError(
            f"{username!r} is a super_admin; a dashboard key signs in as a viewer or an admin"
        )


async def revoke_api_key(database: AsyncEngine, name: str, *, now: datetime | None = None) -> bool:
    """Refuse the key `name` from its next use; False if there is no such (unrevoked) key.

    A `dashboard` key's user is signed out everywhere too: the tokens it handed out stop."""
    moment = naive_utc(now or datetime.now(UTC))
    try:
        async with database.begin() as connection:
            username = await connection.scalar(
                select(ApiKey.username).where(ApiKey.name == name, ApiKey.revoked_at.is_(None))
            )
            result = await connection.execute(
                update(ApiKey)
                .where(ApiKey.name == name, ApiKey.revoked_at.is_(None))
                .values(revoked_at=moment)
            )
            if result.rowcount and username is not None:
                await connection.execute(
                    update(User).where(User.username == username).values(tokens_valid_after=moment)
                )
    except (SQLAlchemyError, OSError) as error:
        raise StoreError(f"cannot revoke the API key {name!r}: {error}") from error
    log.info("audit_api_key_revoked", name=name, found=bool(result.rowcount), user=username)
    return bool(result.rowcount)


async def list_api_keys(database: AsyncEngine) -> list[ApiKeyInfo]:
    """Every key, revoked ones included, by name; never a secret or a hash."""
    try:
        async with database.connect() as connection:
            rows = (
                await connection.execute(
                    select(
                        ApiKey.name,
                        ApiKey.prefix,
                        ApiKey.scopes,
                        ApiKey.created_at,
                        ApiKey.revoked_at,
                        ApiKey.last_used_at,
                        ApiKey.username,
                    ).order_by(ApiKey.name)
                )
            ).all()
    except (SQLAlchemyError, OSError) as error:
        raise StoreError(f"cannot list the API keys: {error}") from error
    return [
        ApiKeyInfo(
            name=row.name,
            prefix=row.prefix,
            scopes=_scopes(row.scopes),
            created_at=row.created_at,
            revoked_at=row.revoked_at,
            last_used_at=row.last_used_at,
            username=row.username,
        )
        for row in rows
    ]


class ApiKeyAuthenticator:
    """Checks presented keys against the `api_keys` table (one for the whole service)."""

    def __init__(self, database: AsyncEngine, *, writer: AsyncEngine | None = None) -> None:
        self._database = database
        # Recording a use writes; on SQLite a writer engine takes the write lock even to read,
        # so keys are looked up on `database` and only the rare write goes to `writer`.
        self._writer = writer if writer is not None else database

    async def authenticate(
        self, key: str, scope: str, *, now: datetime | None = None
    ) -> ApiKeyInfo:
        """The key's details if it is valid for `scope`; `AuthError` or `Forbidden` if not."""
        prefix = _prefix(key)
        presented = _hash(key)
        try:
            async with self._database.connect() as connection:
                rows = (
                    await connection.execute(
                        select(
                            ApiKey.id,
                            ApiKey.name,
                            ApiKey.prefix,
                            ApiKey.key_hash,
                            ApiKey.scopes,
                            ApiKey.created_at,
                            ApiKey.revoked_at,
                            ApiKey.last_used_at,
                            ApiKey.username,
                        ).where(ApiKey.prefix == prefix)
                    )
                ).all()
                # Compare hashes in constant time, so timing tells nothing about stored keys.
                found = next(
                    (row for row in rows if hmac.compare_digest(row.key_hash, presented)), None
                )
        except (SQLAlchemyError, OSError, ValueError) as error:
            raise StoreError(f"cannot check the API key: {error}") from error
        if found is None:
            raise AuthError("the API key is not valid")
        if found.revoked_at is not None:
            raise AuthError("the API key has been revoked")
        info = ApiKeyInfo(
            name=found.name,
            prefix=found.prefix,
            scopes=_scopes(found.scopes),
            created_at=found.created_at,
            revoked_at=None,
            last_used_at=found.last_used_at,
            username=found.username,
        )
        if scope not in info.scopes:
            raise Forbidden(f"the API key {info.name!r} does not have the {scope!r} scope")
        moment = naive_utc(now or datetime.now(UTC))
        if found.last_used_at is None or moment - found.last_used_at >= LAST_USED_RESOLUTION:
            await self._touch(found.id, moment)
        return info

    async def _touch(self, key_id: int, moment: datetime) -> None:
        stale = moment - LAST_USED_RESOLUTION
        try:
            async with self._writer.begin() as connection:
                # Concurrent requests may all see a stale time; the condition keeps it one write.
                await connection.execute(
                    update(ApiKey)
                    .where(
                        ApiKey.id == key_id,
                        or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at <= stale),
                    )
                    .values(last_used_at=moment)
                )
        except (SQLAlchemyError, OSError) as error:
            raise StoreError(f"cannot record the API key's use: {error}") from error


def _prefix(key: str) -> str:
    """The prefix of a well-formed key; `AuthError` for anything else."""
    if (
        not isinstance(key, str)
        or len(key) > MAX_KEY_LENGTH
        or not key.startswith(KEY_MARK)
        or key[len(KEY_MARK) + PREFIX_LENGTH : len(KEY_MARK) + PREFIX_LENGTH + 1] != "_"
    ):
        raise AuthError("an API key reads ldk_<prefix>_<secret>")
    return key[len(KEY_MARK) : len(KEY_MARK) + PREFIX_LENGTH]


def _hash(key: str) -> str:
    # Keys are 256 random bits, so they cannot be guessed from a fast hash: a slow password
    # hash (argon2, bcrypt) would add a cost per request and no protection.
    return hashlib.sha256(key.encode()).hexdigest()


def _scopes(value: object) -> tuple[str, ...]:
    if isinstance(value, list):
        return tuple(item for item in value if isinstance(item, str))
    return ()


async def run_create_api_key(
    settings: Settings, name: str, scopes: Iterable[str], username: str | None = None
) -> str:
    """`create_api_key` on the configured database, for the CLI."""
    async with open_database(settings.database_url, writer=True) as database:
        return await create_api_key(database, name, scopes, username=username)


async def run_revoke_api_key(settings: Settings, name: str) -> bool:
    """`revoke_api_key` on the configured database, for the CLI."""
    async with open_database(settings.database_url, writer=True) as database:
        return await revoke_api_key(database, name)


async def run_list_api_keys(settings: Settings) -> list[ApiKeyInfo]:
    """`list_api_keys` on the configured database, for the CLI."""
    async with open_database(settings.database_url) as database:
        return await list_api_keys(database)
