"""Tokens and department scope."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest

from livedash.auth.scope import visible_departments
from livedash.auth.tokens import Principal, issue_token, verify_token
from livedash.errors import ConfigurationError, InvalidToken
from livedash.settings import Settings
from livedash.store.models import Role


def test_issued_token_verifies_to_its_principal(settings: Settings) -> None:
    token = issue_token(settings, "nurse-lead", Role.ADMIN, ["ED", "CARD", "ED"])
    principal = verify_token(settings, token)
    assert principal.subject == "nurse-lead"
    assert principal.role is Role.ADMIN
    assert principal.departments == frozenset({"ED", "CARD"})
    assert principal.expires_at > datetime.now(UTC)


def _claims(**overrides: object) -> dict[str, object]:
    now = int(datetime.now(UTC).timestamp())
    claims: dict[str, object] = {
        "sub": "x",
        "role": "admin",
        "departments": ["ED"],
        "iat": now,
        "exp": now + 600,
    }
    claims.update(overrides)
    return {key: value for key, value in claims.items() if value is not None}


@pytest.mark.parametrize(
    ("claims", "key", "algorithm", "reason"),
    [
        (_claims(exp=int(datetime.now(UTC).timestamp()) - 10), None, "HS256", "expired"),
        (_claims(), "another-key-another-key-another-key!", "HS256", "not valid"),
        (_claims(role="root"), None, "HS256", "unknown role"),
        (_claims(role=None), None, "HS256", "role"),
        (_claims(sub=None), None, "HS256", "sub"),
        (_claims(exp=None), None, "HS256", "exp"),
        (_claims(departments="ED"), None, "HS256", "departments"),
        (_claims(departments=[1]), None, "HS256", "departments"),
        (_claims(sub=""), None, "HS256", "sub"),
        (_claims(), None, "HS512", "not valid"),
    ],
)
def test_bad_tokens_are_refused_with_a_reason(
    settings: Settings, claims: dict[str, object], key: str | None, algorithm: str, reason: str
) -> None:
    token = jwt.encode(claims, key or settings.signing_key(), algorithm=algorithm)
    with pytest.raises(InvalidToken, match=reason):
        verify_token(settings, token)


def test_unsigned_tokens_are_refused(settings: Settings) -> None:
    unsigned = jwt.encode(_claims(), key=None, algorithm="none")
    with pytest.raises(InvalidToken):
        verify_token(settings, unsigned)


@pytest.mark.parametrize("token", [None, "", 42, "x" * 9000, "a.b.c"])
def test_malformed_tokens_are_refused(settings: Settings, token: object) -> None:
    with pytest.raises(InvalidToken):
        verify_token(settings, token)


def test_signing_key_file_is_created_once_and_private(tmp_path: Path) -> None:
    settings = Settings(jwt_secret_file=tmp_path / "keys" / "jwt-secret", _env_file=None)  # type: ignore[call-arg]
    key = settings.signing_key()
    assert len(key) >= 32
    assert settings.signing_key() == key
    assert (tmp_path / "keys" / "jwt-secret").stat().st_mode & 0o077 == 0


def test_unwritable_key_file_is_a_configuration_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    settings = Settings(jwt_secret_file=blocker / "jwt-secret", _env_file=None)  # type: ignore[call-arg]
    with pytest.raises(ConfigurationError, match="key file"):
        settings.signing_key()


def test_unknown_time_zone_is_refused() -> None:
    with pytest.raises(ValueError, match="time zone"):
        Settings(timezone="Mars/Olympus", _env_file=None)  # type: ignore[call-arg]


def _principal(role: Role, *departments: str) -> Principal:
    return Principal("x", role, frozenset(departments), datetime.now(UTC) + timedelta(hours=1))


def test_scope_rules() -> None:
    known = {"ED", "CARD", "ONC"}
    assert visible_departments(_principal(Role.SUPER_ADMIN), known) == {None, *known}
    assert visible_departments(_principal(Role.ADMIN, "ED", "GONE"), known) == {"ED"}
    assert visible_departments(_principal(Role.VIEWER, "CARD"), known) == {"CARD"}
    assert visible_departments(_principal(Role.VIEWER), known) == set()
