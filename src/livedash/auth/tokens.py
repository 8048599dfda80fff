"""JWT access tokens, done as RFC 8725 asks.

One algorithm is configured (`jwt_algorithm`) and only tokens signed with it and with one of
its keys (`livedash.auth.keys`) are accepted: `alg: none`, any other algorithm and an HS256
token keyed with an RSA or EC public key are refused before any signature is checked.
`sub`, `role`, `iat`, `exp`, `aud` and `iss` are required; `aud` and `iss` must be the
configured ones, and time claims get `jwt_leeway_seconds` of clock skew, no more. Issued
tokens also carry a random `jti`, so one of them can be revoked.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt

from livedash.auth.keys import token_keys
from livedash.errors import InvalidToken
from livedash.settings import Settings
from livedash.store.models import Role

REQUIRED_CLAIMS = ("sub", "role", "iat", "exp", "aud", "iss")
MAX_TOKEN_LENGTH = 8192


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a verified token speaks for."""

    subject: str
    role: Role
    departments: frozenset[str]
    expires_at: datetime
    issued_at: datetime
    token_id: str | None


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
    key, key_id = token_keys(settings).signer()
    issued = now or datetime.now(UTC)
    lifetime = timedelta(minutes=minutes if minutes is not None else settings.token_minutes)
    claims = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": subject,
        "role": role.value,
        "departments": sorted(set(departments)),
        "iat": int(issued.timestamp()),
        "exp": int((issued + lifetime).timestamp()),
        "jti": secrets.token_urlsafe(16),
    }
    headers = {"kid": key_id} if key_id is not None else None
    return jwt.encode(claims, key, algorithm=settings.jwt_algorithm, headers=headers)


def verify_token(settings: Settings, token: object) -> Principal:
    """The principal of a valid token; `InvalidToken` says why any other is refused."""
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_LENGTH:
        raise InvalidToken("a token must be a non-empty string")
    keys = token_keys(settings)
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError as error:
        raise InvalidToken(f"the token is malformed: {error}") from error
    algorithm = header.get("alg")
    if algorithm != settings.jwt_algorithm:
        if algorithm is None:
            raise InvalidToken("the token names no algorithm (alg)")
        if isinstance(algorithm, str) and algorithm.lower() == "none":
            raise InvalidToken("unsigned tokens (alg: none) are refused")
        shown = str(algorithm)[:16]
        raise InvalidToken(
            f"the token's algorithm {shown!r} is not the configured {settings.jwt_algorithm}"
        )
    try:
        claims = jwt.decode(
            token,
            keys.verifier(header.get("kid")),
            algorithms=[settings.jwt_algorithm],
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            leeway=settings.jwt_leeway_seconds,
            options={"require": list(REQUIRED_CLAIMS)},
        )
    except jwt.ExpiredSignatureError as error:
        raise InvalidToken(_reason(settings, error), reason="expired") from error
    except jwt.InvalidTokenError as error:
        raise InvalidToken(_reason(settings, error)) from error
    return _principal(claims)


def _reason(settings: Settings, error: jwt.InvalidTokenError) -> str:
    """Why PyJWT refused a token, said for the person holding it."""
    if isinstance(error, jwt.ExpiredSignatureError):
        return "the token has expired"
    if isinstance(error, jwt.ImmatureSignatureError):
        return "the token is not yet valid (its iat or nbf is in the future)"
    if isinstance(error, jwt.MissingRequiredClaimError):
        return f"the token has no {error.claim} claim"
    if isinstance(error, jwt.InvalidAudienceError):
        return f"the token's audience (aud) is not {settings.jwt_audience!r}"
    if isinstance(error, jwt.InvalidIssuerError):
        return f"the token's issuer (iss) is not {settings.jwt_issuer!r}"
    if isinstance(error, jwt.InvalidSignatureError):
        return "the token's signature does not match the key"
    if isinstance(error, jwt.DecodeError):
        return f"the token is malformed: {error}"
    return f"the token is not valid: {error}"


def _principal(claims: dict[str, Any]) -> Principal:
    subject = claims["sub"]
    if not isinstance(subject, str) or not subject:
        raise InvalidToken("the sub claim must be a non-empty string")
    try:
        role = Role(claims["role"])
    except ValueError as error:
        raise InvalidToken(f"unknown role {str(claims['role'])[:32]!r}") from error
    departments = claims.get("departments", [])
    if not isinstance(departments, list) or not all(isinstance(d, str) for d in departments):
        raise InvalidToken("the departments claim must be a list of department codes")
    times = (claims["iat"], claims["exp"])
    if not all(isinstance(t, int | float) and not isinstance(t, bool) for t in times):
        raise InvalidToken("the iat and exp claims must be numbers")
    token_id = claims.get("jti")
    if token_id is not None and (not isinstance(token_id, str) or not token_id):
        raise InvalidToken("the jti claim must be a non-empty string")
    try:
        expires_at = datetime.fromtimestamp(claims["exp"], UTC)
        issued_at = datetime.fromtimestamp(claims["iat"], UTC)
    except (OverflowError, ValueError, OSError) as error:
        raise InvalidToken("the iat or exp claim is out of range") from error
    return Principal(
        subject=subject,
        role=role,
        departments=frozenset(departments),
        expires_at=expires_at,
        issued_at=issued_at,
        token_id=token_id,
    )
