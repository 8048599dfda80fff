"""Tokens (RFC 8725) with each algorithm, their keys, the users check and department scope."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from livedash.auth.keys import key_id
from livedash.auth.scope import visible_departments
from livedash.auth.tokens import Principal, issue_token, verify_token
from livedash.auth.users import Authenticator, revoke_token, revoke_user_tokens
from livedash.errors import ConfigurationError, InvalidToken, StoreError
from livedash.settings import Settings
from livedash.store.engine import create_engine
from livedash.store.models import Role
from tests.support.writers import Users

SECRET = "test-secret-" + "x" * 64


@cache
def private_key(algorithm: str, n: int = 0) -> Any:
    """Key pair number `n` for `algorithm`, made once per run (RSA keys are slow to make)."""
    if algorithm == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def private_pem(key: Any) -> bytes:
    return bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def public_pem(key: Any) -> bytes:
    return bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def jwk(key: Any, **members: str) -> dict[str, Any]:
    """The public JWK of `key`, with extra `members` such as `kid`."""
    public = key.public_key()
    convert = RSAAlgorithm if isinstance(public, rsa.RSAPublicKey) else ECAlgorithm
    return {**convert.to_jwk(public, as_dict=True), **members}


def make_settings(tmp_path: Path, algorithm: str, **values: Any) -> Settings:
    return Settings(
        jwt_algorithm=algorithm,
        jwt_secret_file=tmp_path / "unused-secret",
        _env_file=None,  # type: ignore[call-arg]
        **values,
    )


def write(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


@dataclass
class Keyring:
    """Settings for one algorithm, the key that signs what they accept, and keys they refuse."""

    settings: Settings
    key: Any
    stranger: Any  # the same kind of key, unknown to the settings
    other_algorithm: tuple[str, Any]  # another algorithm and a key for it

    def sign(self, claims: dict[str, Any], *, key: Any = None, algorithm: str | None = None) -> str:
        return jwt.encode(
            claims,
            self.key if key is None else key,
            algorithm=algorithm or self.settings.jwt_algorithm,
        )


@pytest.fixture(params=["HS256", "RS256", "ES256"])
def keyring(request: pytest.FixtureRequest, tmp_path: Path) -> Keyring:
    algorithm: str = request.param
    if algorithm == "HS256":
        settings = make_settings(tmp_path, algorithm, jwt_secret=SECRET)
        return Keyring(settings, SECRET, "another-secret-" + "y" * 40, ("HS512", SECRET))
    key = private_key(algorithm)
    settings = make_settings(
        tmp_path,
        algorithm,
        jwt_private_key_file=write(tmp_path / "private.pem", private_pem(key)),
        jwt_public_key_file=write(tmp_path / "public.pem", public_pem(key)),
    )
    other = ("RS512", key) if algorithm == "RS256" else ("RS256", private_key("RS256"))
    return Keyring(settings, key, private_key(algorithm, 1), other)


def now() -> int:
    return int(datetime.now(UTC).timestamp())


def claims(**overrides: object) -> dict[str, Any]:
    """Valid claims for the test settings, with `overrides` (None removes a claim)."""
    values: dict[str, object] = {
        "iss": "livedash",
        "aud": "livedash",
        "sub": "x",
        "role": "admin",
        "departments": ["ED"],
        "iat": now(),
        "exp": now() + 600,
    }
    values.update(overrides)
    return {key: value for key, value in values.items() if value is not None}


def forge(header: dict[str, Any], payload: dict[str, Any], hmac_key: bytes = b"") -> str:
    """A token put together by hand, HMAC-SHA256-signed with `hmac_key` when there is one."""

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = f"{part(json.dumps(header).encode())}.{part(json.dumps(payload).encode())}"
    signature = hmac.new(hmac_key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{part(signature if hmac_key else b'')}"


# -- tokens, with each algorithm ----------------------------------------------------------


def test_issued_token_verifies_to_its_principal(keyring: Keyring) -> None:
    settings = keyring.settings
    token = issue_token(settings, "nurse-lead", Role.ADMIN, ["ED", "CARD", "ED"])
    principal = verify_token(settings, token)
    assert principal.subject == "nurse-lead"
    assert principal.role is Role.ADMIN
    assert principal.departments == frozenset({"ED", "CARD"})
    assert principal.issued_at <= datetime.now(UTC) < principal.expires_at
    assert principal.token_id
    assert verify_token(settings, issue_token(settings, "x", Role.ADMIN)).token_id != (
        principal.token_id
    )
    body = jwt.decode(token, options={"verify_signature": False})
    assert {"iss", "aud", "sub", "role", "iat", "exp", "jti"} <= body.keys()
    header = jwt.get_unverified_header(token)
    assert header["alg"] == settings.jwt_algorithm
    if settings.jwt_algorithm != "HS256":
        assert header["kid"] == key_id(keyring.key.public_key())


Case = Callable[[Keyring], object]

REFUSALS: dict[str, tuple[Case, str]] = {
    "unsigned": (lambda k: jwt.encode(claims(), None, algorithm="none"), "alg: none"),
    "unsigned, shouting": (lambda k: forge({"alg": "NONE"}, claims()), "alg: none"),
    "another key": (lambda k: k.sign(claims(), key=k.stranger), "signature does not match"),
    "another algorithm": (
        lambda k: k.sign(claims(), key=k.other_algorithm[1], algorithm=k.other_algorithm[0]),
        "is not the configured",
    ),
    "no algorithm": (lambda k: forge({"typ": "JWT"}, claims()), "names no algorithm"),
    "expired": (lambda k: k.sign(claims(exp=now() - 60)), "expired"),
    "not valid before a future time": (lambda k: k.sign(claims(nbf=now() + 120)), "not yet"),
    "issued in the future": (lambda k: k.sign(claims(iat=now() + 120)), "not yet valid"),
    "for another audience": (lambda k: k.sign(claims(aud="billing")), "audience"),
    "for no audience": (lambda k: k.sign(claims(aud=None)), "no aud claim"),
    "from another issuer": (lambda k: k.sign(claims(iss="https://idp.example")), "issuer"),
    "from no issuer": (lambda k: k.sign(claims(iss=None)), "no iss claim"),
    "without sub": (lambda k: k.sign(claims(sub=None)), "no sub claim"),
    "without role": (lambda k: k.sign(claims(role=None)), "no role claim"),
    "without iat": (lambda k: k.sign(claims(iat=None)), "no iat claim"),
    "without exp": (lambda k: k.sign(claims(exp=None)), "no exp claim"),
    "empty sub": (lambda k: k.sign(claims(sub="")), "sub claim"),
    "unknown role": (lambda k: k.sign(claims(role="root")), "unknown role"),
    "departments not a list": (lambda k: k.sign(claims(departments="ED")), "departments"),
    "departments not codes": (lambda k: k.sign(claims(departments=[1])), "departments"),
    "iat as text": (lambda k: k.sign(claims(iat=str(now()))), "numbers"),
    "empty jti": (lambda k: k.sign(claims(jti="")), "jti"),
    "not a JWT": (lambda k: "not-a-jwt", "malformed"),
    "three bad parts": (lambda k: "a.b.c", "malformed"),
    "not a string": (lambda k: 42, "non-empty string"),
    "empty": (lambda k: "", "non-empty string"),
    "too long": (lambda k: "x" * 9000, "non-empty string"),
}


@pytest.mark.parametrize("case", list(REFUSALS), ids=list(REFUSALS))
def test_bad_tokens_are_refused_with_a_reason(keyring: Keyring, case: str) -> None:
    make, reason = REFUSALS[case]
    with pytest.raises(InvalidToken, match=reason):
        verify_token(keyring.settings, make(keyring))


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_hs256_keyed_with_the_public_key_is_refused(tmp_path: Path, algorithm: str) -> None:
    # The classic confusion: a verifier that took `alg` from the token would check this
    # HMAC with the public key's PEM as the secret, and accept it.
    public = public_pem(private_key(algorithm))
    settings = make_settings(
        tmp_path, algorithm, jwt_public_key_file=write(tmp_path / "public.pem", public)
    )
    forged = forge({"alg": "HS256", "typ": "JWT"}, claims(role="super_admin"), public)
    with pytest.raises(InvalidToken, match="'HS256' is not the configured"):
        verify_token(settings, forged)


def test_leeway_allows_a_little_clock_skew_and_no_more(keyring: Keyring) -> None:
    skewed = claims(exp=now() - 10, nbf=now() + 10, iat=now() + 10)
    assert verify_token(keyring.settings, keyring.sign(skewed)).subject == "x"
    strict = keyring.settings.model_copy(update={"jwt_leeway_seconds": 0})
    with pytest.raises(InvalidToken, match="expired"):
        verify_token(strict, keyring.sign(claims(exp=now() - 10)))


def test_audience_and_issuer_come_from_the_settings(keyring: Keyring) -> None:
    ours = keyring.settings.model_copy(
        update={"jwt_audience": "dashboard", "jwt_issuer": "https://idp.example"}
    )
    token = keyring.sign(claims(aud=["portal", "dashboard"], iss="https://idp.example"))
    assert verify_token(ours, token).subject == "x"
    with pytest.raises(InvalidToken, match="issuer"):
        verify_token(keyring.settings, token)


# -- keys ---------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_jwks_verifies_by_key_id(tmp_path: Path, algorithm: str) -> None:
    one, two = private_key(algorithm), private_key(algorithm, 1)
    other_kind = private_key("ES256" if algorithm == "RS256" else "RS256")
    keys = [
        jwk(one, kid="one"),
        jwk(two, kid="two", use="sig"),
        jwk(other_kind, kid="other-kind"),  # another algorithm's key: never used
        jwk(private_key(algorithm, 2), kid="encryption", use="enc"),
        {"kty": "oct", "k": base64.urlsafe_b64encode(SECRET.encode()).decode(), "kid": "hmac"},
    ]
    jwks = write(tmp_path / "jwks.json", json.dumps({"keys": keys}))
    settings = make_settings(tmp_path, algorithm, jwt_jwks_file=jwks)

    def signed(key: Any, kid: str | None, alg: str = algorithm) -> str:
        return jwt.encode(claims(), key, algorithm=alg, headers={"kid": kid} if kid else None)

    assert verify_token(settings, signed(two, "two")).subject == "x"
    assert verify_token(settings, signed(one, "one")).subject == "x"
    other_algorithm = "ES256" if algorithm == "RS256" else "RS256"
    refusals = {
        signed(one, "two"): "signature does not match",
        signed(two, "three"): "not one this service knows",
        signed(two, None): "names no key",
        signed(private_key(algorithm, 2), "encryption"): "not one this service knows",
        signed(other_kind, "other-kind", other_algorithm): "is not the configured",
        signed(SECRET, "hmac", "HS256"): "'HS256' is not the configured",
    }
    for token, reason in refusals.items():
        with pytest.raises(InvalidToken, match=reason):
            verify_token(settings, token)
    with pytest.raises(ConfigurationError, match="jwt_private_key_file"):
        issue_token(settings, "x", Role.ADMIN)


def test_a_jwks_of_one_key_verifies_tokens_that_name_none(tmp_path: Path) -> None:
    key = private_key("ES256")
    jwks = write(tmp_path / "jwks.json", json.dumps({"keys": [jwk(key)]}))
    settings = make_settings(tmp_path, "ES256", jwt_jwks_file=jwks)
    assert verify_token(settings, jwt.encode(claims(), key, algorithm="ES256")).subject == "x"


def test_own_tokens_verify_through_a_jwks_of_the_same_key(tmp_path: Path) -> None:
    key = private_key("RS256")
    published = jwk(key, kid=key_id(key.public_key()))
    settings = make_settings(
        tmp_path,
        "RS256",
        jwt_private_key_file=write(tmp_path / "private.pem", private_pem(key)),
        jwt_jwks_file=write(tmp_path / "jwks.json", json.dumps({"keys": [published]})),
    )
    principal = verify_token(settings, issue_token(settings, "ann", Role.VIEWER))
    assert principal.subject == "ann"


def test_missing_key_file_is_a_configuration_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "keys" / "public.pem"
    settings = make_settings(tmp_path, "RS256", jwt_public_key_file=missing)  # nothing read yet
    with pytest.raises(ConfigurationError, match=re.escape(str(missing))):
        verify_token(settings, "a.b.c")


@pytest.mark.parametrize(
    ("algorithm", "key", "reason"),
    [
        ("RS256", lambda: private_key("ES256"), "RSA"),
        ("ES256", lambda: private_key("RS256"), "P-256"),
        ("ES256", lambda: ec.generate_private_key(ec.SECP384R1()), "P-256"),
        ("RS256", lambda: rsa.generate_private_key(65537, 1024), "2048"),
    ],
)
def test_keys_unfit_for_the_algorithm_are_refused(
    tmp_path: Path, algorithm: str, key: Callable[[], Any], reason: str
) -> None:
    path = write(tmp_path / "private.pem", private_pem(key()))
    settings = make_settings(tmp_path, algorithm, jwt_private_key_file=path)
    with pytest.raises(ConfigurationError, match=reason):
        issue_token(settings, "x", Role.ADMIN)


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ({"jwt_algorithm": "RS256"}, "needs jwt_private_key_file"),
        ({"jwt_public_key_file": Path("public.pem")}, "jwt_algorithm is HS256"),
        ({"jwt_secret": "short"}, "at least 32 bytes"),
    ],
)
def test_impossible_key_settings_are_configuration_errors(
    tmp_path: Path, values: dict[str, Any], reason: str
) -> None:
    settings = make_settings(tmp_path, values.pop("jwt_algorithm", "HS256"), **values)
    with pytest.raises(ConfigurationError, match=reason):
        issue_token(settings, "x", Role.ADMIN)


def test_a_file_that_is_not_a_jwks_is_a_configuration_error(tmp_path: Path) -> None:
    jwks = write(tmp_path / "jwks.json", "-----BEGIN PUBLIC KEY-----")
    settings = make_settings(tmp_path, "RS256", jwt_jwks_file=jwks)
    with pytest.raises(ConfigurationError, match="not a JWKS"):
        verify_token(settings, "a.b.c")


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


# -- the users table and revocation -------------------------------------------------------


@pytest.fixture
def authenticator(settings: Settings, database: AsyncEngine) -> Authenticator:
    return Authenticator(settings, database)


def set_user(database_path: Path, username: str, **columns: object) -> None:
    """Change `username`'s row with plain sqlite3, as the hospital's administrators would."""
    assignments = ", ".join(f"{name} = ?" for name in columns)
    with sqlite3.connect(database_path) as connection:
        connection.execute(
            f"UPDATE users SET {assignments} WHERE username = ?", (*columns.values(), username)
        )


async def test_the_token_fixture_signs_for_an_active_user(
    authenticator: Authenticator, token: Callable[..., str]
) -> None:
    principal = await authenticator.authenticate(token(Role.ADMIN, ("ED", "CARD")))
    assert principal.subject == "test-admin"
    assert principal.role is Role.ADMIN
    assert principal.departments == {"ED", "CARD"}


async def test_a_user_who_does_not_exist_is_refused(
    authenticator: Authenticator, token: Callable[..., str]
) -> None:
    with pytest.raises(InvalidToken, match="user does not exist"):
        await authenticator.authenticate(token(sub="nobody", user=False))


async def test_an_inactive_user_is_refused(
    authenticator: Authenticator, token: Callable[..., str], database_path: Path
) -> None:
    signed = token(sub="ann")
    set_user(database_path, "ann", active=0)
    with pytest.raises(InvalidToken, match="inactive"):
        await authenticator.authenticate(signed)


async def test_a_role_the_table_does_not_know_is_refused(
    authenticator: Authenticator, token: Callable[..., str], database_path: Path
) -> None:
    signed = token(sub="ann")
    set_user(database_path, "ann", role="root")
    with pytest.raises(InvalidToken, match="role"):
        await authenticator.authenticate(signed)


S, A, V = Role.SUPER_ADMIN, Role.ADMIN, Role.VIEWER


@pytest.mark.parametrize(
    ("in_token", "in_table", "expected"),
    [
        ((S, []), (A, ["ED", "CARD"]), (A, {"ED", "CARD"})),  # demoted: the table's scope
        ((A, ["ED", "CARD"]), (A, ["CARD", "ONC"]), (A, {"CARD"})),  # both name CARD only
        ((A, ["ED"]), (S, ["ED", "CARD"]), (A, {"ED"})),  # no more than the token asks
        ((A, ["ED"]), (V, ["ED"]), (V, {"ED"})),
        ((V, ["ED", "CARD"]), (A, []), (V, set())),
        ((S, ["ED"]), (S, []), (S, {"ED"})),
    ],
)
async def test_role_and_departments_are_the_least_of_token_and_table(
    authenticator: Authenticator,
    settings: Settings,
    users: Users,
    in_token: tuple[Role, list[str]],
    in_table: tuple[Role, list[str]],
    expected: tuple[Role, set[str]],
) -> None:
    users.save("ann", *in_table)
    principal = await authenticator.authenticate(issue_token(settings, "ann", *in_token))
    assert (principal.role, principal.departments) == expected


async def test_a_user_signed_out_everywhere_needs_a_new_token(
    authenticator: Authenticator,
    database: AsyncEngine,
    settings: Settings,
    users: Users,
) -> None:
    moment = datetime.now(UTC)
    users.save("ann", Role.ADMIN, ["ED"])
    before = issue_token(settings, "ann", Role.ADMIN, ["ED"], now=moment - timedelta(minutes=1))
    assert (await authenticator.authenticate(before)).subject == "ann"

    assert await revoke_user_tokens(database, "ann", moment)
    with pytest.raises(InvalidToken, match="signed out"):
        await authenticator.authenticate(before)
    after = issue_token(settings, "ann", Role.ADMIN, ["ED"], now=moment + timedelta(seconds=2))
    assert (await authenticator.authenticate(after)).subject == "ann"
    assert not await revoke_user_tokens(database, "nobody", moment)


async def test_a_revoked_token_id_is_refused_and_only_that_token(
    authenticator: Authenticator, database: AsyncEngine, token: Callable[..., str]
) -> None:
    lost, kept = token(sub="ann"), token(sub="ann")
    lost_principal = await authenticator.authenticate(lost)
    assert lost_principal.token_id is not None
    for _ in range(2):  # revoking twice is harmless
        await revoke_token(database, lost_principal.token_id, lost_principal.expires_at, "lost")
    with pytest.raises(InvalidToken, match="revoked"):
        await authenticator.authenticate(lost)
    assert (await authenticator.authenticate(kept)).subject == "ann"


async def test_revocations_of_long_expired_tokens_are_dropped(
    database: AsyncEngine, database_path: Path
) -> None:
    moment = datetime.now(UTC)
    await revoke_token(database, "old", moment - timedelta(days=1), "stolen", now=moment)
    await revoke_token(database, "forever", None, "stolen", now=moment)
    await revoke_token(database, "new", moment + timedelta(hours=1), "stolen", now=moment)
    with sqlite3.connect(database_path) as connection:
        kept = {row[0] for row in connection.execute("SELECT jti FROM revoked_tokens")}
    assert kept == {"forever", "new"}


async def test_without_check_users_only_revocation_applies(
    settings: Settings, database: AsyncEngine, token: Callable[..., str]
) -> None:
    authenticator = Authenticator(settings.model_copy(update={"check_users": False}), database)
    stranger = token(Role.ADMIN, ("ED",), sub="idp-user", user=False)
    principal = await authenticator.authenticate(stranger)
    assert (principal.role, principal.departments) == (Role.ADMIN, {"ED"})
    assert principal.token_id is not None
    await revoke_token(database, principal.token_id, principal.expires_at, "left")
    with pytest.raises(InvalidToken, match="revoked"):
        await authenticator.authenticate(stranger)


async def test_a_database_failure_is_a_store_error(
    settings: Settings, token: Callable[..., str], tmp_path: Path
) -> None:
    empty = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")
    try:
        with pytest.raises(StoreError, match="cannot check the token"):
            await Authenticator(settings, empty).authenticate(token())
    finally:
        await empty.dispose()


# -- scope --------------------------------------------------------------------------------


def _principal(role: Role, *departments: str) -> Principal:
    moment = datetime.now(UTC)
    return Principal("x", role, frozenset(departments), moment + timedelta(hours=1), moment, None)


def test_scope_rules() -> None:
    known = {"ED", "CARD", "ONC"}
    assert visible_departments(_principal(Role.SUPER_ADMIN), known) == {None, *known}
    assert visible_departments(_principal(Role.ADMIN, "ED", "GONE"), known) == {"ED"}
    assert visible_departments(_principal(Role.VIEWER, "CARD"), known) == {"CARD"}
    assert visible_departments(_principal(Role.VIEWER), known) == set()


async def test_administrative_actions_are_audited_without_secrets(
    database_url: str, database_path: Path
) -> None:
    import sqlite3

    from sqlalchemy.ext.asyncio import create_async_engine
    from structlog.testing import capture_logs

    from livedash.auth.api_keys import create_api_key, revoke_api_key
    from livedash.auth.sessions import set_password
    from livedash.auth.users import revoke_token, revoke_user_tokens

    with sqlite3.connect(database_path) as connection:
        connection.execute(
            "INSERT INTO users (username, role, departments, active) "
            "VALUES ('ann', 'admin', '[]', 1)"
        )
    database = create_async_engine(database_url)
    try:
        with capture_logs() as logs:
            key = await create_api_key(database, "main-app")
            await revoke_api_key(database, "main-app")
            await set_password(database, "ann", "correct horse battery staple")
            await revoke_user_tokens(database, "ann", datetime.now(UTC))
            await revoke_token(database, "jti-1", None, "stolen laptop")
    finally:
        await database.dispose()
    events = [entry["event"] for entry in logs]
    assert events == [
        "audit_api_key_created",
        "audit_api_key_revoked",
        "audit_password_set",
        "audit_user_signed_out",
        "audit_token_revoked",
    ]
    flattened = repr(logs)
    assert key not in flattened
    assert "correct horse" not in flattened


async def test_a_storm_of_sign_ins_is_answered_by_a_few_queries_each_fresh(
    authenticator: Authenticator,
    database: AsyncEngine,
    token: Callable[..., str],
    users: Users,
    database_path: Path,
) -> None:
    signed = [token(Role.VIEWER, ("ED",), sub=f"screen-{index}") for index in range(200)]
    set_user(database_path, "screen-7", active=0)
    statements: list[str] = []
    event.listen(
        database.sync_engine,
        "before_cursor_execute",
        lambda *args: statements.append(str(args[2])),
    )
    answers = await asyncio.gather(
        *(authenticator.authenticate(one) for one in signed), return_exceptions=True
    )
    refused = [index for index, answer in enumerate(answers) if isinstance(answer, InvalidToken)]
    assert refused == [7]  # each answered from the database as it is now
    assert all(
        isinstance(answer, Principal) and answer.subject == f"screen-{index}"
        for index, answer in enumerate(answers)
        if index != 7
    )
    lookups = [sql for sql in statements if "FROM users" in sql or "FROM revoked" in sql]
    assert len(lookups) <= 10, len(lookups)  # one at a time would be 400
