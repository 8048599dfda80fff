"""API keys for machine writers, such as the hospital's main application posting to ingest.

A key reads `ldk_<prefix>_<secret>`. The prefix (8 characters) is stored in clear, to find the
key's row and to tell keys apart in listings; the key itself is stored only as its SHA-256.
The secret is shown once, when the key is created, and never again.

A key carries scopes (`ingest`); it is refused once revoked, and for any scope it lacks.
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
from sqlalchemy.ext.asyncio import AsyncEngine

from livedash.errors import AuthError, ConfigurationError, Forbidden, StoreError
from livedash.settings import Settings
from livedash.store.engine import open_database
from livedash.store.models import ApiKey
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


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    """A key as listings show it: everything but the secret."""

    name: str
    prefix: str
    scopes: tuple[str, ...]
    created_at: datetime
    revoked_at: datetime | None
    last_used_at: datetime | None


async def create_api_key(
    database: AsyncEngine,
    name: str,
    scopes: Iterable[str] = (Scope.INGEST,),
    *,
    now: datetime | None = None,
) -> str:
    """Create the key `name` and return it; this is the only time its secret is seen."""
    if not name or len(name) > 128:
        raise ConfigurationError("an API key's name must be 1 to 128 characters")
    granted = sorted({str(scope) for scope in scopes})
    unknown = [scope for scope in granted if scope not in set(Scope)]
    if unknown:
        raise ConfigurationError(
            f"unknown scope {unknown[0]!r}; known: {', '.join(s.value for s in Scope)}"
        )
    prefix = "".join(secrets.choice(_PREFIX_ALPHABET) for _ in range(PREFIX_LENGTH))
    key = f"{KEY_MARK}{prefix}_{secrets.token_urlsafe(32)}"
    try:
        async with database.begin() as connection:
            await connection.execute(
                insert(ApiKey).values(
                    name=name,
                    prefix=prefix,
                    key_hash=_hash(key),
                    scopes=granted,
                    created_at=naive_utc(now or datetime.now(UTC)),
                )
            )
    except IntegrityError as error:
        raise StoreError(f"an API key named {name!r} already exists") from error
    except (SQLAlchemyError, OSError) as error:
        raise StoreError(f"cannot store the API key: {error}") from error
    log.info("audit_api_key_created", name=name, prefix=prefix, scopes=granted)
    return key


async def revoke_api_key(database: AsyncEngine, name: str, *, now: datetime | None = None) -> bool:
    """Refuse the key `name` from its next use; False if there is no such (unrevoked) key."""
    try:
        async with database.begin() as connection:
            result = await connection.execute(
                update(ApiKey)
                .where(ApiKey.name == name, ApiKey.revoked_at.is_(None))
                .values(revoked_at=naive_utc(now or datetime.now(UTC)))
            )
    except (SQLAlchemyError, OSError) as error:
        raise StoreError(f"cannot revoke the API key {name!r}: {error}") from error
    log.info("audit_api_key_revoked", name=name, found=bool(result.rowcount))
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
        )
        for row in rows
    ]


class ApiKeyAuthenticator:
    """Checks presented keys against the `api_keys` table (one for the whole service)."""

    def __init__(self, database: AsyncEngine) -> None:
        self._database = database

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
            async with self._database.begin() as connection:
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


async def run_create_api_key(settings: Settings, name: str, scopes: Iterable[str]) -> str:
    """`create_api_key` on the configured database, for the CLI."""
    async with open_database(settings.database_url, writer=True) as database:
        return await create_api_key(database, name, scopes)


async def run_revoke_api_key(settings: Settings, name: str) -> bool:
    """`revoke_api_key` on the configured database, for the CLI."""
    async with open_database(settings.database_url, writer=True) as database:
        return await revoke_api_key(database, name)


async def run_list_api_keys(settings: Settings) -> list[ApiKeyInfo]:
    """`list_api_keys` on the configured database, for the CLI."""
    async with open_database(settings.database_url) as database:
        return await list_api_keys(database)
