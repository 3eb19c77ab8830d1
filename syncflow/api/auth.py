"""Bearer-token auth of the console: salted SHA-256 hashes, constant-time comparison.

Tokens made by :func:`new_token` carry 256 random bits, so one salted SHA-256 is as strong as a
slow password hash would be (nobody can brute-force 2^256); the salt keeps equal tokens from
having equal hashes. The plain token is never logged nor stored.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from syncflow.errors import ConfigError

_HEX64 = re.compile(r"[0-9a-f]{64}")
_SALTED = re.compile(r"sha256\$([0-9a-f]{16,128})\$([0-9a-f]{64})")


def new_token() -> str:
    """A fresh random API token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def hash_token(token: str, *, salt: str | None = None) -> str:
    """``sha256$<salt>$<hex digest of salt + token>`` for ``SYNCFLOW_API_TOKEN_HASH``."""
    if not token:
        raise ConfigError("the token must not be empty")
    salt = salt or secrets.token_hex(16)
    digest = hashlib.sha256(bytes.fromhex(salt) + token.encode()).hexdigest()
    return f"sha256${salt}${digest}"


@dataclass(frozen=True)
class TokenCheck:
    """How presented tokens are checked: against a salted hash, a plain SHA-256, or nothing."""

    salt: bytes | None
    digest: bytes | None

    @classmethod
    def from_settings(cls, token_hash: str | None, token: str | None) -> TokenCheck:
        if token_hash:
            value = token_hash.strip().lower()
            m = _SALTED.fullmatch(value)
            if m:
                return cls(bytes.fromhex(m.group(1)), bytes.fromhex(m.group(2)))
            if _HEX64.fullmatch(value):
                return cls(b"", bytes.fromhex(value))
            raise ConfigError(
                "SYNCFLOW_API_TOKEN_HASH must be 'sha256$<salt-hex>$<digest-hex>' (syncflow api hash-token) "
                "or a 64-digit hex SHA-256"
            )
        if token:
            salt = secrets.token_bytes(16)
            return cls(salt, hashlib.sha256(salt + token.encode()).digest())
        return cls(None, None)

    @property
    def configured(self) -> bool:
        return self.digest is not None

    def verify(self, presented: str) -> bool:
        if self.digest is None or self.salt is None:
            return False
        candidate = hashlib.sha256(self.salt + presented.encode()).digest()
        return hmac.compare_digest(candidate, self.digest)
