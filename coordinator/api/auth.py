"""Bearer tokens: who is calling (the owner) and what they may do (the scope).

A token is a JWT: HS256 signed with the deployment's secret, or, where a public key is
configured, an asymmetric signature (RS256, ES256, EdDSA) made by whoever holds the private
key. Claims: `sub` (the owner, as stored on accounts), `scope` (`user` or `admin`), `iat`,
`exp`, `iss`.
"""

from __future__ import annotations

import os
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization

from core.domain.errors import ConfigurationError, WalletError
from core.domain.validation import OWNER_LENGTH_MAX
from core.runtime.settings import Settings

SCOPES = ("user", "admin")
ISSUER = "wallet"
SECRET_FILE = "auth-secret"
SECRET_BYTES_MIN = 32  # HS256 keys shorter than its output are weak (RFC 7518 3.2)
TOKEN_TTL_S_DEFAULT = 30 * 24 * 3600
TOKEN_TTL_S_MAX = 366 * 24 * 3600
TOKEN_LENGTH_MAX = 4096
CLOCK_LEEWAY_S = 30
# Verified tokens remembered per process (the oldest forgotten first beyond this).
VERIFIED_TOKENS_MAX = 10_000
ASYMMETRIC_ALGORITHMS = ["RS256", "ES256", "EdDSA"]
# Owners of accounts this process has looked up; owners never change, accounts are never deleted.
OWNER_CACHE_SIZE_MAX = 100_000


@dataclass(frozen=True)
class Principal:
    owner: str
    scope: str
    token_id: str  # the token's signature: one rate-limit bucket per token

    def __post_init__(self) -> None:
        assert self.scope in SCOPES, f"scope must be one of {SCOPES}"

    @property
    def is_admin(self) -> bool:
        return self.scope == "admin"


def secret_path(home: Path) -> Path:
    return Path(home) / SECRET_FILE


def load_secret(settings: Settings, create: bool = False) -> str | None:
    """WALLET_AUTH_SECRET, else the secret kept in the home (made there if `create`: the
    local setup keeps one so restarts keep issued tokens valid)."""
    if settings.auth_secret is not None:
        return checked_secret(settings.auth_secret, "WALLET_AUTH_SECRET")
    path = secret_path(settings.home)
    if path.exists():
        try:
            return checked_secret(path.read_text().strip(), str(path))
        except OSError as error:
            raise ConfigurationError(f"cannot read the token secret {path}: {error.strerror or error}") from None
    if not create:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


def checked_secret(secret: str, where: str) -> str:
    if len(secret.encode()) < SECRET_BYTES_MIN:
        raise ConfigurationError(
            f"{where} must be at least {SECRET_BYTES_MIN} bytes (HS256 keys shorter than its "
            f"output are weak), got {len(secret.encode())}: `openssl rand -base64 48` makes one"
        )
    return secret


class TokenVerifier:
    def __init__(self, secret: str | None, public_key: str | None = None) -> None:
        if not secret and not public_key:
            raise ConfigurationError(
                "no token secret: set WALLET_AUTH_SECRET (or WALLET_AUTH_PUBLIC_KEY_FILE), or run `wallet dev up`"
            )
        if public_key is not None:
            try:
                serialization.load_pem_public_key(public_key.encode())
            except ValueError:
                raise ConfigurationError("WALLET_AUTH_PUBLIC_KEY_FILE does not hold a PEM public key") from None
            self.key: str = public_key
            self.algorithms = ASYMMETRIC_ALGORITHMS
        else:
            assert secret is not None
            self.key, self.algorithms = secret, ["HS256"]
        # Tokens already verified, with their expiry: a client sends the same token on every
        # request, and checking its signature each time costs more than the request's routing.
        self.verified: OrderedDict[str, tuple[Principal, float]] = OrderedDict()

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenVerifier:
        secret = None if settings.auth_public_key else load_secret(settings)
        if secret is None and settings.auth_public_key is None:
            raise ConfigurationError(
                f"no token secret: set WALLET_AUTH_SECRET, or keep one in "
                f"{secret_path(settings.home)} (`wallet serve --local` and `wallet dev up` make one)"
            )
        return cls(secret, settings.auth_public_key)

    def verify(self, authorization: str | None) -> Principal:
        if not authorization:
            raise WalletError("unauthorized", "send Authorization: Bearer <token> (`wallet token issue --owner NAME`)")
        kind, _, token = authorization.partition(" ")
        token = token.strip()
        if kind.lower() != "bearer" or not token or len(token) > TOKEN_LENGTH_MAX:
            raise WalletError("unauthorized", "the Authorization header must be `Bearer <token>`")
        known = self.verified.get(token)
        if known is not None:
            principal, expires_at = known
            if time.time() < expires_at + CLOCK_LEEWAY_S:
                return principal
            del self.verified[token]
            raise WalletError("unauthorized", "the token has expired; issue a new one")
        principal, expires_at = self._verify(token)
        self.verified[token] = (principal, expires_at)
        if len(self.verified) > VERIFIED_TOKENS_MAX:
            self.verified.popitem(last=False)
        return principal

    def _verify(self, token: str) -> tuple[Principal, float]:
        try:
            claims = jwt.decode(
                token,
                self.key,
                algorithms=self.algorithms,
                issuer=ISSUER,
                leeway=CLOCK_LEEWAY_S,
                options={"require": ["sub", "scope", "exp", "iat", "iss"]},
            )
        except jwt.ExpiredSignatureError:
            raise WalletError("unauthorized", "the token has expired; issue a new one") from None
        except jwt.PyJWTError:
            raise WalletError("unauthorized", "the token is not valid") from None
        owner, scope = claims.get("sub"), claims.get("scope")
        if not isinstance(owner, str) or not 0 < len(owner) <= OWNER_LENGTH_MAX or scope not in SCOPES:
            raise WalletError("unauthorized", "the token's subject or scope is not valid")
        return Principal(owner=owner, scope=scope, token_id=token.rsplit(".", 1)[-1]), float(claims["exp"])


def issue_token(
    key: str, owner: str, scope: str = "user", ttl_s: int = TOKEN_TTL_S_DEFAULT, algorithm: str = "HS256"
) -> str:
    """A signed token; `key` is the shared secret (HS256) or a private key in PEM."""
    if scope not in SCOPES:
        raise ConfigurationError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    if not 0 < len(owner) <= OWNER_LENGTH_MAX:
        raise ConfigurationError(f"owner must be 1-{OWNER_LENGTH_MAX} characters")
    if not 0 < ttl_s <= TOKEN_TTL_S_MAX:
        raise ConfigurationError(f"a token lives 1..{TOKEN_TTL_S_MAX} seconds, got {ttl_s}")
    now = int(time.time())
    claims = {"sub": owner, "scope": scope, "iat": now, "exp": now + ttl_s, "iss": ISSUER}
    return jwt.encode(claims, key, algorithm=algorithm)


class OwnerCache:
    """account id -> owner, for authorization checks without a shard round trip each time."""

    def __init__(self, size_max: int = OWNER_CACHE_SIZE_MAX) -> None:
        self.size_max = size_max
        self.owners: dict[str, str] = {}

    def get(self, account_id: str) -> str | None:
        return self.owners.get(account_id)

    def put(self, account_id: str, owner: str) -> None:
        if len(self.owners) >= self.size_max:
            self.owners.pop(next(iter(self.owners)))  # oldest first: dicts keep insertion order
        self.owners[account_id] = owner
