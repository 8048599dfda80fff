"""The keys tokens are signed and verified with, loaded on first use.

- HS256: one shared secret (`jwt_secret`, else `jwt_secret_file`) of at least 32 bytes.
- RS256 / ES256: a PEM private key signs (`jwt_private_key_file`). Tokens are verified with
  the public key (`jwt_public_key_file`, else the private key's public half) and with every
  key of the JWKS file (`jwt_jwks_file`) that is meant for the configured algorithm.

A token that names its key (`kid`) is verified with that key only, and one that names none
only when a single key is configured. Issued tokens name their key by its RFC 7638
thumbprint, so a JWKS built from the same key pair verifies them too.

Key files are read once per configuration: replacing a key takes a restart.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from livedash.errors import ConfigurationError, InvalidToken
from livedash.settings import Settings

MIN_SECRET_BYTES = 32  # RFC 7518 3.2: an HS256 key as long as the hash
MIN_RSA_BITS = 2048  # RFC 7518 3.3

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
VerifyingKey = str | PublicKey
SigningKey = str | PrivateKey


@dataclass(frozen=True, slots=True)
class TokenKeys:
    """The keys of one configuration: what signs, and what verifies."""

    algorithm: str
    signing_key: SigningKey | None
    signing_key_id: str | None
    by_id: Mapping[str, VerifyingKey]
    only: VerifyingKey | None
    """The key for tokens that name none: set when exactly one key is configured."""

    def signer(self) -> tuple[SigningKey, str | None]:
        """The key to sign with and its `kid`; `ConfigurationError` when there is none."""
        if self.signing_key is None:
            raise ConfigurationError(
                f"signing {self.algorithm} tokens needs jwt_private_key_file "
                "(this configuration can only verify them)"
            )
        return self.signing_key, self.signing_key_id

    def verifier(self, key_id: object) -> VerifyingKey:
        """The key for a token whose header names `key_id`; `InvalidToken` when none fits."""
        if isinstance(self.only, str):
            return self.only  # HS256 has one secret, whatever the token calls it
        if key_id is None:
            if self.only is None:
                raise InvalidToken("the token names no key (kid) and several are configured")
            return self.only
        key = self.by_id.get(key_id) if isinstance(key_id, str) else None
        if key is None:
            raise InvalidToken("the token's key (kid) is not one this service knows")
        return key


def token_keys(settings: Settings) -> TokenKeys:
    """The keys `settings` configure; `ConfigurationError` names the file that fails."""
    config = _KeyConfig.of(settings)
    keys = _loaded.get(config)
    if keys is None:
        keys = _load(settings)
        if len(_loaded) >= 16:  # one configuration in a service; many only in tests
            _loaded.clear()
        _loaded[config] = keys
    return keys


def key_id(key: PublicKey) -> str:
    """The RFC 7638 thumbprint of `key`, used as its `kid`."""
    jwk = _to_jwk(key)
    members = ("e", "kty", "n") if jwk["kty"] == "RSA" else ("crv", "kty", "x", "y")
    canonical = json.dumps({name: jwk[name] for name in members}, separators=(",", ":"))
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@dataclass(frozen=True, slots=True)
class _KeyConfig:
    """What the loaded keys depend on, to know when they must be loaded again."""

    algorithm: str
    secret: str | None
    secret_file: Path
    private_key_file: Path | None
    public_key_file: Path | None
    jwks_file: Path | None

    @classmethod
    def of(cls, settings: Settings) -> _KeyConfig:
        secret = settings.jwt_secret
        return cls(
            settings.jwt_algorithm,
            secret.get_secret_value() if secret is not None else None,
            settings.jwt_secret_file,
            settings.jwt_private_key_file,
            settings.jwt_public_key_file,
            settings.jwt_jwks_file,
        )


_loaded: dict[_KeyConfig, TokenKeys] = {}


def _load(settings: Settings) -> TokenKeys:
    algorithm = settings.jwt_algorithm
    key_files = {
        "jwt_private_key_file": settings.jwt_private_key_file,
        "jwt_public_key_file": settings.jwt_public_key_file,
        "jwt_jwks_file": settings.jwt_jwks_file,
    }
    if algorithm == "HS256":
        named = [name for name, path in key_files.items() if path is not None]
        if named:
            raise ConfigurationError(
                f"{', '.join(named)} is set but jwt_algorithm is HS256: "
                "set jwt_algorithm to RS256 or ES256 to use key files"
            )
        secret = settings.signing_key()
        if len(secret.encode()) < MIN_SECRET_BYTES:
            raise ConfigurationError(f"the HS256 secret must be at least {MIN_SECRET_BYTES} bytes")
        return TokenKeys(algorithm, secret, None, {}, secret)
    if all(path is None for path in key_files.values()):
        raise ConfigurationError(
            f"{algorithm} needs jwt_private_key_file, jwt_public_key_file or jwt_jwks_file"
        )
    private: PrivateKey | None = None
    public: PublicKey | None = None
    if settings.jwt_private_key_file is not None:
        private = _pem_key(settings.jwt_private_key_file, algorithm, private=True)
        public = private.public_key()
    if settings.jwt_public_key_file is not None:
        public = _pem_key(settings.jwt_public_key_file, algorithm, private=False)
    distinct: dict[str, PublicKey] = {}  # by thumbprint
    by_id: dict[str, PublicKey] = {}
    if public is not None:
        thumbprint = key_id(public)
        distinct[thumbprint] = by_id[thumbprint] = public
    if settings.jwt_jwks_file is not None:
        for kid, key in _jwks(settings.jwt_jwks_file, algorithm):
            thumbprint = key_id(key)
            distinct[thumbprint] = key
            if kid is None:
                continue
            if kid in by_id and key_id(by_id[kid]) != thumbprint:
                raise ConfigurationError(
                    f"{settings.jwt_jwks_file}: kid {kid!r} names two different keys"
                )
            by_id[kid] = key
    only = next(iter(distinct.values())) if len(distinct) == 1 else None
    signing_id = key_id(private.public_key()) if private is not None else None
    return TokenKeys(algorithm, private, signing_id, by_id, only)


def _pem_key(path: Path, algorithm: str, *, private: bool) -> Any:
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigurationError(f"cannot read the key file {path}: {error}") from error
    try:
        if private:
            key: Any = serialization.load_pem_private_key(data, password=None)
        else:
            key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as error:
        kind = "private" if private else "public"
        raise ConfigurationError(f"{path} is not an unencrypted PEM {kind} key: {error}") from error
    problem = _unfit(key, algorithm)
    if problem:
        raise ConfigurationError(f"{path}: {problem}")
    return key


def _jwks(path: Path, algorithm: str) -> list[tuple[str | None, PublicKey]]:
    """The JWKS's keys for `algorithm` (others, and encryption keys, are left out)."""
    try:
        key_set = jwt.PyJWKSet.from_json(path.read_text())
    except OSError as error:
        raise ConfigurationError(f"cannot read the JWKS file {path}: {error}") from error
    except (ValueError, jwt.PyJWTError) as error:
        raise ConfigurationError(f"{path} is not a JWKS: {error}") from error
    found: list[tuple[str | None, PublicKey]] = []
    for jwk in key_set:
        if jwk.algorithm_name != algorithm or jwk.public_key_use not in (None, "sig"):
            continue
        key = _public(jwk.key)
        problem = _unfit(key, algorithm)
        if problem:
            raise ConfigurationError(f"{path}: key {jwk.key_id!r}: {problem}")
        found.append((jwk.key_id, key))
    if not found:
        raise ConfigurationError(f"{path} holds no {algorithm} signing key")
    return found


def _public(key: Any) -> Any:
    """The public half of `key` (a JWKS may carry private keys; verifying needs none)."""
    if isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        return key.public_key()
    return key


def _unfit(key: object, algorithm: str) -> str | None:
    """Why `key` cannot serve `algorithm`, or None."""
    public = _public(key)
    if algorithm == "RS256":
        if not isinstance(public, rsa.RSAPublicKey):
            return "RS256 needs an RSA key"
        if public.key_size < MIN_RSA_BITS:
            return f"an RSA key needs at least {MIN_RSA_BITS} bits, not {public.key_size}"
        return None
    if not isinstance(public, ec.EllipticCurvePublicKey) or not isinstance(
        public.curve, ec.SECP256R1
    ):
        return "ES256 needs an EC key on the P-256 curve"
    return None


def _to_jwk(key: PublicKey) -> dict[str, Any]:
    if isinstance(key, rsa.RSAPublicKey):
        return RSAAlgorithm.to_jwk(key, as_dict=True)
    return ECAlgorithm.to_jwk(key, as_dict=True)
