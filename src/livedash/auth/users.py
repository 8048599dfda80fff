"""Tokens checked against the database: the `users` table and the revoked tokens.

With `check_users`, a token speaks for its user only while the user exists and is active, and
never for more than the user's row allows: the role is the lesser of the token's and the
row's (super_admin > admin > viewer) and the departments are those both name, a super_admin
side naming every department. A token issued before the user's `tokens_valid_after` is
refused. Whatever `check_users` says, a token whose `jti` is in `revoked_tokens` is refused.

Nothing is cached: a change to a user or a revocation applies to the next authentication, and
`recheck` lets the gateway apply it to sockets already open.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from livedash.auth.tokens import Principal, verify_token
from livedash.errors import ConfigurationError, InvalidToken, StoreError
from livedash.settings import Settings
from livedash.store.engine import open_database
from livedash.store.models import RefreshToken, RevokedToken, Role, User
from livedash.timeutil import naive_utc

log = structlog.get_logger(__name__)

PRIVILEGE = {Role.VIEWER: 0, Role.ADMIN: 1, Role.SUPER_ADMIN: 2}

# Longer than any leeway the settings allow: past it, an expired token is refused anyway.
REVOCATION_KEPT_AFTER_EXPIRY = timedelta(minutes=10)
# How long a database answer about a token may stand in for the database while it is down.
LAST_KNOWN_SECONDS = 15 * 60
LAST_KNOWN_ENTRIES = 50_000


@dataclass(frozen=True, slots=True)
class _UserRow:
    role: str
    departments: Any
    active: bool
    tokens_valid_after: datetime | None


class Authenticator:
    """Verifies tokens and checks them against the database (one for the whole service)."""

    def __init__(self, settings: Settings, database: AsyncEngine) -> None:
        self._settings = settings
        self._database = database
        # The last answer the database gave per (user, token): while it is unreachable, a
        # screen that reconnects with a token checked shortly before is let back in (as the
        # database last said), instead of every screen being locked out by the outage.
        self._last_known: OrderedDict[tuple[str, str | None], tuple[float, _UserRow | None, bool]]
        self._last_known = OrderedDict()
        # Admissions waiting for the next lookup: a reconnect storm's thousands of sign-ins
        # are answered by a few batched queries, each still reading the database afresh.
        self._waiting: list[tuple[Principal, asyncio.Future[tuple[_UserRow | None, bool]]]] = []
        self._looking_up: asyncio.Task[None] | None = None

    async def authenticate(self, token: object) -> Principal:
        """The principal `token` speaks for right now; `InvalidToken` says why it cannot."""
        return await self.admit(verify_token(self._settings, token))

    async def admit(self, claims: Principal) -> Principal:
        """What a verified token's `claims` allow right now; `InvalidToken` says why not.

        Admissions that arrive while a lookup runs wait for the next one, which answers them
        all in two queries: no answer is older than the query it was asked before.
        """
        answer: asyncio.Future[tuple[_UserRow | None, bool]] = (
            asyncio.get_running_loop().create_future()
        )
        self._waiting.append((claims, answer))
        looking_up = self._looking_up
        if (
            looking_up is None
            or looking_up.done()
            or looking_up.get_loop() is not answer.get_loop()
        ):
            self._looking_up = asyncio.create_task(self._look_up_waiting())
        user, revoked = await answer
        return self._decide(claims, user, revoked)

    async def _look_up_waiting(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                users, revoked = await self._read([claims for claims, _ in batch])
            except StoreError as error:
                for claims, answer in batch:
                    if answer.done():
                        continue
                    known = self._known(claims, error)
                    if known is None:
                        answer.set_exception(error)
                    else:
                        answer.set_result(known)
                continue
            now = time.monotonic()
            for claims, answer in batch:
                found = users.get(claims.subject), claims.token_id in revoked
                self._remember(claims, now, found)
                if not answer.done():
                    answer.set_result(found)

    async def recheck(self, claims: Sequence[Principal]) -> list[Principal | InvalidToken]:
        """`admit` for many tokens at once, in two queries whatever their number (the
        periodic check of open sockets); `StoreError` if the database cannot tell."""
        users, revoked = await self._read(claims)
        decided: list[Principal | InvalidToken] = []
        for claim in claims:
            try:
                decided.append(
                    self._decide(claim, users.get(claim.subject), claim.token_id in revoked)
                )
            except InvalidToken as refusal:
                decided.append(refusal)
        return decided

    def _decide(self, principal: Principal, user: _UserRow | None, revoked: bool) -> Principal:
        if revoked:
            raise InvalidToken("the token has been revoked", reason="revoked")
        if not self._settings.check_users:
            return principal
        if user is None:
            raise InvalidToken("the token's user does not exist", reason="unknown_user")
        if not user.active:
            raise InvalidToken("the token's user is inactive", reason="disabled")
        valid_after = user.tokens_valid_after
        if valid_after is not None and principal.issued_at < valid_after.replace(tzinfo=UTC):
            raise InvalidToken(
                "the token has been revoked (the user was signed out)", reason="revoked"
            )
        try:
            role = Role(user.role)
        except ValueError as error:
            raise InvalidToken("the user's role is not one livedash knows") from error
        return _narrowed(principal, role, _codes(user.departments))

    async def _read(self, claims: Sequence[Principal]) -> tuple[dict[str, _UserRow], set[str]]:
        """The users rows (with `check_users`) and the revoked token ids among `claims`, in
        two queries whatever their number; `StoreError` if the database cannot tell."""
        subjects = sorted({claim.subject for claim in claims})
        token_ids = sorted({claim.token_id for claim in claims if claim.token_id is not None})
        users: dict[str, _UserRow] = {}
        revoked: set[str] = set()
        try:
            async with self._database.connect() as connection:
                for chunk in _chunks(subjects):
                    if self._settings.check_users:
                        users.update(await _users(connection, chunk))
                for chunk in _chunks(token_ids):
                    found = await connection.scalars(
                        select(RevokedToken.jti).where(RevokedToken.jti.in_(chunk))
                    )
                    revoked.update(found)
        except (SQLAlchemyError, OSError, ValueError) as error:
            # ValueError: a value written by another program that cannot be read.
            raise StoreError(f"cannot check the tokens against the database: {error}") from error
        return users, revoked

    def _known(self, claims: Principal, error: StoreError) -> tuple[_UserRow | None, bool] | None:
        """While the database cannot be reached: what it last said of this token, if that
        was shortly before."""
        known = self._last_known.get((claims.subject, claims.token_id))
        if known is None or time.monotonic() - known[0] > LAST_KNOWN_SECONDS:
            return None
        log.warning("auth_checked_from_memory", user=claims.subject, error=str(error))
        return known[1], known[2]

    def _remember(self, claims: Principal, at: float, found: tuple[_UserRow | None, bool]) -> None:
        key = (claims.subject, claims.token_id)
        self._last_known[key] = (at, *found)
        self._last_known.move_to_end(key)
        while len(self._last_known) > LAST_KNOWN_ENTRIES:
            self._last_known.popitem(last=False)


async def revoke_token(
    database: AsyncEngine,
    jti: str,
    expires_at: datetime | None,
    reason: str,
    *,
    now: datetime | None = None,
) -> None:
    """Refuse the token `jti` from now on; kept until it expires (`None`: for good)."""
    moment = now or datetime.now(UTC)
    try:
        async with database.begin() as connection:
            insert = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
            await connection.execute(
                insert(RevokedToken)
                .values(
                    jti=jti,
                    revoked_at=naive_utc(moment),
                    expires_at=naive_utc(expires_at) if expires_at is not None else None,
                    reason=reason[:256],
                )
                .on_conflict_do_nothing(index_elements=["jti"])
            )
            # Records of tokens refused anyway (expired) are dropped as new ones arrive.
            await connection.execute(
                delete(RevokedToken).where(
                    RevokedToken.expires_at < naive_utc(moment - REVOCATION_KEPT_AFTER_EXPIRY)
                )
            )
    except (SQLAlchemyError, OSError) as error:
        raise StoreError(f"cannot revoke the token: {error}") from error
    log.info("audit_token_revoked", jti=jti, reason=reason[:256])


async def revoke_user_tokens(database: AsyncEngine, username: str, now: datetime) -> bool:
    """Refuse every token of `username` issued before `now`; False if there is no such user."""
    try:
        async with database.begin() as connection:
            result = await connection.execute(
                update(User)
                .where(User.username == username)
                .values(tokens_valid_after=naive_utc(now))
            )
    except (SQLAlchemyError, OSError) as error:
        raise StoreError(f"cannot revoke the tokens of {username!r}: {error}") from error
    log.info("audit_user_signed_out", user=username, found=bool(result.rowcount))
    return bool(result.rowcount)


async def run_revoke(
    settings: Settings, *, user: str | None = None, jti: str | None = None, reason: str = ""
) -> bool:
    """Revoke every token of `user`, or the token `jti`; False if `user` does not exist."""
    async with open_database(settings.database_url, writer=True) as database:
        if user is not None:
            return await revoke_user_tokens(database, user, datetime.now(UTC))
        if jti is None:
            raise ConfigurationError("name the user or the token id (jti) to revoke")
        await revoke_token(database, jti, None, reason)
        return True


async def save_user(
    database: AsyncEngine,
    username: str,
    role: Role,
    departments: Iterable[str] = (),
    *,
    active: bool = True,
) -> bool:
    """Create or update a dashboard user; True if it was created."""
    codes = sorted(set(departments))
    try:
        async with database.begin() as connection:
            result = await connection.execute(
                update(User)
                .where(User.username == username)
                .values(role=role.value, departments=codes, active=active)
            )
            created = not result.rowcount
            if created:
                await connection.execute(
                    insert(User).values(
                        username=username, role=role.value, departments=codes, active=active
                    )
                )
    except (SQLAlchemyError, OSError) as error:
        raise StoreError(f"cannot save the user {username!r}: {error}") from error
    log.info(
        "audit_user_saved",
        user=username,
        role=role.value,
        departments=codes,
        active=active,
        created=created,
    )
    return created


async def run_save_user(
    settings: Settings, username: str, role: Role, departments: Iterable[str], *, active: bool
) -> bool:
    """`save_user` on the configured database (for the CLI)."""
    async with open_database(settings.database_url, writer=True) as database:
        return await save_user(database, username, role, departments, active=active)


async def run_find_user(settings: Settings, username: str) -> bool:
    """True if `username` exists and is active (for the CLI)."""
    async with (
        open_database(settings.database_url) as database,
        database.connect() as connection,
    ):
        found = await _user(connection, username)
    return found is not None and bool(found.active)


@dataclass(frozen=True, slots=True)
class UserInfo:
    """A user as `livedash user list` shows it."""

    username: str
    role: str
    departments: tuple[str, ...]
    active: bool
    has_password: bool
    last_sign_in: datetime | None
    """When its newest sign-in session began (UTC), if it ever signed in with a password."""


async def list_users(database: AsyncEngine) -> list[UserInfo]:
    """Every user, by name, with when it last signed in."""
    started = (
        select(RefreshToken.username, func.min(RefreshToken.issued_at).label("started"))
        .group_by(RefreshToken.username, RefreshToken.family_id)
        .subquery()
    )
    last = (
        select(started.c.username, func.max(started.c.started).label("last_sign_in"))
        .group_by(started.c.username)
        .subquery()
    )
    query = (
        select(
            User.username,
            User.role,
            User.departments,
            User.active,
            User.password_hash.is_not(None).label("has_password"),
            last.c.last_sign_in,
        )
        .outerjoin(last, last.c.username == User.username)
        .order_by(User.username)
    )
    try:
        async with database.connect() as connection:
            rows = (await connection.execute(query)).all()
    except (SQLAlchemyError, OSError) as error:
        raise StoreError(f"cannot list the users: {error}") from error
    return [
        UserInfo(
            str(row.username),
            str(row.role),
            tuple(sorted(_codes(row.departments))),
            bool(row.active),
            bool(row.has_password),
            row.last_sign_in.replace(tzinfo=UTC) if row.last_sign_in is not None else None,
        )
        for row in rows
    ]


async def set_active(database: AsyncEngine, username: str, *, active: bool, now: datetime) -> bool:
    """Enable or disable `username`; False if there is no such user.

    Disabling also signs the user out everywhere (`tokens_valid_after`), so that enabling it
    again later does not bring back the tokens and sessions it held.
    """
    values: dict[str, object] = {"active": active}
    if not active:
        values["tokens_valid_after"] = naive_utc(now)
    try:
        async with database.begin() as connection:
            result = await connection.execute(
                update(User).where(User.username == username).values(**values)
            )
    except (SQLAlchemyError, OSError) as error:
        raise StoreError(f"cannot change the user {username!r}: {error}") from error
    found = bool(result.rowcount)
    log.info("audit_user_enabled" if active else "audit_user_disabled", user=username, found=found)
    return found


async def run_list_users(settings: Settings) -> list[UserInfo]:
    """`list_users` on the configured database (for the CLI)."""
    async with open_database(settings.database_url) as database:
        return await list_users(database)


async def run_set_active(settings: Settings, username: str, *, active: bool) -> bool:
    """`set_active` on the configured database, now (for the CLI)."""
    async with open_database(settings.database_url, writer=True) as database:
        return await set_active(database, username, active=active, now=datetime.now(UTC))


async def _users(connection: AsyncConnection, usernames: Sequence[str]) -> dict[str, _UserRow]:
    rows = await connection.execute(
        select(
            User.username, User.role, User.departments, User.active, User.tokens_valid_after
        ).where(User.username.in_(usernames))
    )
    return {
        str(row.username): _UserRow(
            str(row.role), row.departments, bool(row.active), row.tokens_valid_after
        )
        for row in rows
    }


def _chunks(items: Sequence[str], size: int = 500) -> list[Sequence[str]]:
    """`items` in slices short enough for one `IN (...)` on every backend."""
    return [items[start : start + size] for start in range(0, len(items), size)]


async def _user(connection: AsyncConnection, username: str) -> _UserRow | None:
    row = (
        await connection.execute(
            select(User.role, User.departments, User.active, User.tokens_valid_after).where(
                User.username == username
            )
        )
    ).first()
    if row is None:
        return None
    return _UserRow(str(row.role), row.departments, bool(row.active), row.tokens_valid_after)


def _narrowed(principal: Principal, role: Role, departments: frozenset[str]) -> Principal:
    """`principal` with no more than the user's `role` and `departments` allow."""
    least = min(principal.role, role, key=PRIVILEGE.__getitem__)
    # A super_admin side names every department, so it narrows nothing.
    scopes = [
        codes
        for side, codes in ((principal.role, principal.departments), (role, departments))
        if side is not Role.SUPER_ADMIN
    ]
    narrowed = frozenset.intersection(*scopes) if scopes else principal.departments
    return replace(principal, role=least, departments=narrowed)


def _codes(value: object) -> frozenset[str]:
    """Department codes from a `users.departments` value; anything but a list names none."""
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return frozenset(value)
    return frozenset()
