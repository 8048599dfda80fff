"""JWT access tokens: HS256 with `sub`, `role`, `departments`, `iat` and `exp`."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt

from livedash.errors import InvalidToken
from livedash.settings import Settings
from livedash.store.models import Role

REQUIRED_CLAIMS = ("sub", "role", "exp", "iat")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a verified token speaks for."""

    subject: str
    role: Role
    departments: frozenset[str]
    expires_at: datetime


def issue_token(
    settings: Settings,
    subject: str,
    role: Role,
    departments: Iterable[str] = (),
    *,
    minutes: int | None = None,
    now: datetime | None = None,
) -> str:
    """A signed token for `subject`, valid for `minutes` (default: the setting)."""
    issued = now or datetime.now(UTC)
    lifetime = timedelta(minutes=minutes if minutes is not None else settings.token_minutes)
    claims = {
        "sub": subject,
        "role": role.value,
        "departments": sorted(set(departments)),
        "iat": int(issued.timestamp()),
        "exp": int((issued + lifetime).timestamp()),
    }
    return jwt.encode(claims, settings.signing_key(), algorithm=settings.jwt_algorithm)


def verify_token(settings: Settings, token: object) -> Principal:
    """The principal of a valid token; `InvalidToken` says why any other is refused."""
    if not isinstance(token, str) or not token or len(token) > 8192:
        raise InvalidToken("a token must be a non-empty string")
    try:
        claims = jwt.decode(
            token,
            settings.signing_key(),
            algorithms=[settings.jwt_algorithm],
            options={"require": list(REQUIRED_CLAIMS)},
        )
    except jwt.ExpiredSignatureError as error:
        raise InvalidToken("the token has expired") from error
    except jwt.InvalidTokenError as error:
        raise InvalidToken(f"the token is not valid: {error}") from error
    try:
        role = Role(claims["role"])
    except ValueError as error:
        raise InvalidToken(f"unknown role {claims['role']!r}") from error
    departments = claims.get("departments", [])
    if not isinstance(departments, list) or not all(isinstance(d, str) for d in departments):
        raise InvalidToken("the departments claim must be a list of department codes")
    if not isinstance(claims["sub"], str) or not claims["sub"]:
        raise InvalidToken("the sub claim must be a non-empty string")
    return Principal(
        subject=claims["sub"],
        role=role,
        departments=frozenset(departments),
        expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
    )
