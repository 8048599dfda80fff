"""The dashboard's own sign-in: passwords, short-lived access tokens and rotating refresh tokens.

A sign-in starts a session (a refresh token *family*). Each refresh marks the presented token
used and issues its successor in the same family, expiring when the family does
(`refresh_token_days` after sign-in). Presenting a token that was already used or revoked
means it was copied: the whole family is revoked. A session also ends when it sits idle for
`idle_timeout_minutes` (each refresh restarts that clock), when its user becomes inactive, and
when the user is signed out everywhere (`tokens_valid_after`).

Refresh tokens read `<id>.<secret>`; only the SHA-256 of the whole token is stored, and the
row is found by its id. Passwords are hashed with argon2id (argon2-cffi); a hash in the older
scrypt format, or with outdated parameters, still verifies and is replaced at the next sign-in.

A sign-in reads the account, and a refresh or sign-out checks that the presented token exists
and matches, on a plain (reader) engine: only then does a writer transaction begin, which on
SQLite holds the database's write lock, so that nobody can stall the hospital's own writes by
sending wrong passwords or made-up tokens.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from argon2 import PasswordHasher
from argon2.exceptions import VerificationError
from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from livedash.auth.api_keys import ApiKeyAuthenticator, Scope
from livedash.auth.tokens import issue_token
from livedash.errors import AuthError, InvalidToken, StoreError
from livedash.settings import Settings
from livedash.store.engine import open_database
from livedash.store.models import RefreshToken, Role, User
from livedash.timeutil import naive_utc

log = structlog.get_logger(__name__)

# OWASP's argon2id configuration of 19 MiB, two passes and one lane: some 30 ms, and little
# memory when a shift change signs many staff in at once.
_HASHER = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
SCRYPT_PREFIX = "scrypt$"  # the format before argon2id: scrypt$n$r$p$salt$digest
MAX_PASSWORD_LENGTH = 1024
MAX_REFRESH_TOKEN_LENGTH = 256
WRONG_CREDENTIALS = "wrong user name or password"
SESSION_ENDED = "the session has ended: sign in again"


def hash_password(password: str) -> str:
    """`password` hashed with argon2id and a random salt, encoded with its parameters."""
    return _HASHER.hash(password)


def verify_password(password: str, encoded: str) -> bool:
    """True if `password` matches `encoded` (argon2, or the older scrypt format); constant time."""
    if encoded.startswith(SCRYPT_PREFIX):
        return _verify_scrypt(password, encoded)
    try:
        return _HASHER.verify(encoded, password)
    except (VerificationError, ValueError):
        return False


def needs_rehash(encoded: str) -> bool:
    """True if `encoded` is not argon2id with today's parameters (so is replaced at sign-in)."""
    if encoded.startswith(SCRYPT_PREFIX):
        return True
    try:
        return _HASHER.check_needs_rehash(encoded)
    except ValueError:
        return True


def _verify_scrypt(password: str, encoded: str) -> bool:
    try:
        _scheme, n, r, p, salt, digest = encoded.split("$")
        expected = _unb64(digest)
        computed = hashlib.scrypt(
            password.encode(),
            salt=_unb64(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
            maxmem=64 * 1024 * 1024,
        )
    except ValueError:
        return False
    return hmac.compare_digest(computed, expected)


@functools.cache
def _dummy_hash() -> str:
    """Checked against when there is no hash, so that answer takes as long as a wrong one."""
    return hash_password(secrets.token_urlsafe(16))


def _check_password(password: str, encoded: str | None) -> bool:
    # Hash even when there is nothing to compare with, so timing does not tell users apart.
    return verify_password(password, encoded if encoded is not None else _dummy_hash())


async def set_password(database: AsyncEngine, username: str, password: str) -> bool:
    """Set `username`'s password; False if there is no such user."""
    if not password or len(password) > MAX_PASSWORD_LENGTH:
        raise ValueError(f"a password must have 1 to {MAX_PASSWORD_LENGTH} characters")
    encoded = await asyncio.to_thread(hash_password, password)
    try:
        async with database.begin() as connection:
            result = await connection.execute(
                update(User).where(User.username == username).values(password_hash=encoded)
            )
    except (SQLAlchemyError, OSError) as error:
        raise StoreError(f"cannot set the password of {username!r}: {error}") from error
    log.info("audit_password_set", user=username, found=bool(result.rowcount))
    return bool(result.rowcount)


async def has_password(database: AsyncEngine, username: str) -> bool:
    """True if `username` exists and has a password."""
    async with database.connect() as connection:
        value = await connection.scalar(select(User.password_hash).where(User.username == username))
    return value is not None


@dataclass(frozen=True, slots=True)
class TokenPair:
    """What a sign-in or a refresh hands out."""

    access_token: str
    refresh_token: str
    expires_in: int
    """Seconds the access token is valid for."""
    username: str


@dataclass(frozen=True, slots=True)
class KeyGrant:
    """What a sign-in with a `dashboard` API key hands out."""

    access_token: str
    expires_in: int
    """Seconds the access token is valid for."""
    username: str
    key_name: str


@dataclass(frozen=True, slots=True)
class _Account:
    role: Role
    departments: tuple[str, ...]
    active: bool
    tokens_valid_after: datetime | None
    password_hash: str | None


class SessionService:
    """Signs users in, refreshes and ends their sessions (one for the whole service).

    `database` should be a writer engine (`create_engine(url, writer=True)`): on SQLite a
    refresh reads, then writes, in one transaction. `reader` is a plain engine for what only
    reads (it defaults to `database`, which on SQLite takes the write lock for reads too).
    """

    def __init__(
        self,
        settings: Settings,
        database: AsyncEngine,
        *,
        reader: AsyncEngine | None = None,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self._settings = settings
        self._database = database
        self._reader = reader if reader is not None else database
        self._now = now or (lambda: datetime.now(UTC))
        self._keys = ApiKeyAuthenticator(self._reader, writer=database)

    async def login(self, username: str, password: str) -> TokenPair:
        """A new session for `username`; `InvalidToken` (one message for every cause) if not."""
        if len(username) > 128 or len(password) > MAX_PASSWORD_LENGTH:
            raise InvalidToken(WRONG_CREDENTIALS)
        try:
            async with self._reader.connect() as connection:
                account = await _account(connection, username)
        except (SQLAlchemyError, OSError) as error:
            raise StoreError(f"cannot look up the user: {error}") from error
        stored = account.password_hash if account is not None else None
        matches = await asyncio.to_thread(_check_password, password, stored)
        if account is None or stored is None or not matches or not account.active:
            raise InvalidToken(WRONG_CREDENTIALS)
        upgraded = (
            await asyncio.to_thread(hash_password, password) if needs_rehash(stored) else None
        )
        now = self._now()
        family = secrets.token_urlsafe(16)
        expires = now + timedelta(days=self._settings.refresh_token_days)
        try:
            async with self._database.begin() as connection:
                if upgraded is not None:
                    # Only if unchanged since it was read: a password set meanwhile stays.
                    await connection.execute(
                        update(User)
                        .where(User.username == username, User.password_hash == stored)
                        .values(password_hash=upgraded)
                    )
                refresh = await _insert_token(connection, family, username, now, expires)
        except (SQLAlchemyError, OSError) as error:
            raise StoreError(f"cannot start the session: {error}") from error
        if upgraded is not None:
            log.info("audit_password_rehashed", user=username)
        return self._pair(username, account, refresh, now)

    async def refresh(self, refresh_token: str) -> TokenPair:
        """A new token pair for a valid refresh token, which is used up; `InvalidToken` if not."""
        token_id = _token_id(refresh_token)
        await self._check_known(token_id, refresh_token)
        now = self._now()
        naive_now = naive_utc(now)
        refusal: str | None = None
        new_token = ""
        try:
            async with self._database.begin() as connection:
                # Again: the token may have changed since it was checked.
                row = await _token_row(connection, token_id, refresh_token)
                if row is None:
                    raise InvalidToken("the refresh token is not valid")
                if row.revoked_at is not None:
                    refusal = "revoked"
                elif row.used_at is not None:
                    refusal = "reused"
                elif row.expires_at <= naive_now:
                    refusal = "expired"
                elif row.issued_at + self._idle() <= naive_now:
                    refusal = "idle"
                account = await _account(connection, row.username)
                if refusal is None:
                    refusal = await _account_refusal(connection, account, row.family_id)
                if refusal is None:
                    claimed = await connection.execute(
                        update(RefreshToken)
                        .where(
                            RefreshToken.id == token_id,
                            RefreshToken.used_at.is_(None),
                            RefreshToken.revoked_at.is_(None),
                        )
                        .values(used_at=naive_now)
                    )
                    if claimed.rowcount != 1:
                        refusal = "reused"  # a concurrent refresh of the same token won
                if refusal is not None:
                    await _revoke_family(connection, row.family_id, naive_now)
                else:
                    new_token = await _insert_token(
                        connection, row.family_id, row.username, now, row.expires_at
                    )
        except (SQLAlchemyError, OSError) as error:
            raise StoreError(f"cannot refresh the session: {error}") from error
        if refusal is not None or account is None:
            raise InvalidToken(SESSION_ENDED, reason=refusal, user=row.username)
        return self._pair(row.username, account, new_token, now)

    async def logout(self, refresh_token: str) -> str:
        """End the session of `refresh_token`; returns its user. `InvalidToken` if unknown."""
        token_id = _token_id(refresh_token)
        await self._check_known(token_id, refresh_token)
        try:
            async with self._database.begin() as connection:
                row = await _token_row(connection, token_id, refresh_token)
                if row is None:
                    raise InvalidToken("the refresh token is not valid")
                await _revoke_family(connection, row.family_id, naive_utc(self._now()))
        except (SQLAlchemyError, OSError) as error:
            raise StoreError(f"cannot end the session: {error}") from error
        return str(row.username)

    async def _check_known(self, token_id: str, token: str) -> None:
        """Refuse a token without a row or with another secret, reading only."""
        try:
            async with self._reader.connect() as connection:
                row = await _token_row(connection, token_id, token)
        except (SQLAlchemyError, OSError) as error:
            raise StoreError(f"cannot look up the refresh token: {error}") from error
        if row is None:
            raise InvalidToken("the refresh token is not valid")

    async def sign_in_with_key(self, key: str) -> KeyGrant:
        """An access token for the user of a `dashboard` API key (a wall screen); no refresh
        token: the key itself renews it. `AuthError` or `Forbidden` if the key may not."""
        info = await self._keys.authenticate(key, Scope.DASHBOARD)
        username = info.username
        if username is None:
            raise AuthError("the API key signs in as nobody")
        try:
            async with self._reader.connect() as connection:
                account = await _account(connection, username)
        except (SQLAlchemyError, OSError) as error:
            raise StoreError(f"cannot look up the user: {error}") from error
        if account is None or not account.active or account.role is Role.SUPER_ADMIN:
            raise AuthError(f"the API key's user {username!r} may not sign in")
        now = self._now()
        minutes = self._settings.access_token_minutes
        access = issue_token(
            self._settings, username, account.role, account.departments, minutes=minutes, now=now
        )
        return KeyGrant(access, minutes * 60, username, info.name)

    def _idle(self) -> timedelta:
        return timedelta(minutes=self._settings.idle_timeout_minutes)

    def _pair(self, username: str, account: _Account, refresh: str, now: datetime) -> TokenPair:
        minutes = self._settings.access_token_minutes
        access = issue_token(
            self._settings, username, account.role, account.departments, minutes=minutes, now=now
        )
        return TokenPair(access, refresh, minutes * 60, username)


async def _account(connection: AsyncConnection, username: str) -> _Account | None:
    row = (
        await connection.execute(
            select(
                User.role,
                User.departments,
                User.active,
                User.tokens_valid_after,
                User.password_hash,
            ).where(User.username == username)
        )
    ).first()
    if row is None:
        return None
    try:
        role = Role(row.role)
    except ValueError:
        return None
    departments = row.departments if isinstance(row.departments, list) else []
    return _Account(
        role,
        tuple(code for code in departments if isinstance(code, str)),
        bool(row.active),
        row.tokens_valid_after,
        row.password_hash,
    )


async def _account_refusal(
    connection: AsyncConnection, account: _Account | None, family_id: str
) -> str | None:
    """Why the account may no longer refresh this session, or None."""
    if account is None or not account.active:
        return "inactive"
    if account.tokens_valid_after is not None:
        started = await connection.scalar(
            select(func.min(RefreshToken.issued_at)).where(RefreshToken.family_id == family_id)
        )
        if started is None or started < account.tokens_valid_after:
            return "signed_out"
    return None


async def _token_row(connection: AsyncConnection, token_id: str, token: str) -> Any:
    """The stored row of `token`, or None when there is none or its secret does not match."""
    row = (
        await connection.execute(select(RefreshToken).where(RefreshToken.id == token_id))
    ).first()
    if row is None or not hmac.compare_digest(row.token_hash, _digest(token)):
        return None
    return row


async def _insert_token(
    connection: AsyncConnection, family_id: str, username: str, now: datetime, expires: datetime
) -> str:
    token_id = secrets.token_urlsafe(12)
    token = f"{token_id}.{secrets.token_urlsafe(32)}"
    await connection.execute(
        insert(RefreshToken).values(
            id=token_id,
            family_id=family_id,
            username=username,
            token_hash=_digest(token),
            issued_at=naive_utc(now),
            expires_at=naive_utc(expires),
        )
    )
    return token


async def _revoke_family(connection: AsyncConnection, family_id: str, now: datetime) -> None:
    await connection.execute(
        update(RefreshToken)
        .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )


def _token_id(token: object) -> str:
    if not isinstance(token, str) or not token or len(token) > MAX_REFRESH_TOKEN_LENGTH:
        raise InvalidToken("the refresh token is not valid")
    token_id, dot, secret = token.partition(".")
    if not dot or not token_id or not secret:
        raise InvalidToken("the refresh token is not valid")
    return token_id


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


async def run_set_password(
    settings: Settings, username: str, password: str, *, only_if_unset: bool = False
) -> bool:
    """Set `username`'s password (`only_if_unset`: unless it has one); False if not set."""
    async with open_database(settings.database_url, writer=True) as database:
        if only_if_unset and await has_password(database, username):
            return False
        return await set_password(database, username, password)
