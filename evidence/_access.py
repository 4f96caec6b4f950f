"""Scoped bearer tokens: who may see which firm.

The service knows only the SHA-256 of each secret. A presented secret is hashed and compared
with every configured hash in constant time, all of them, so neither the position of a match
nor a near miss shows in the answer's timing. An admin sees every firm; a provider and an
evaluator see the firms listed for their token, and nothing of any other firm.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from evidence._config import TokenSettings
from evidence._errors import AccessDenied


def digest(secret: str) -> str:
    """The hex SHA-256 a token is configured by."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_token() -> tuple[str, str]:
    """A new secret (256 random bits, URL-safe) and its hex SHA-256."""
    secret = secrets.token_urlsafe(32)
    return secret, digest(secret)


@dataclass(frozen=True, slots=True)
class Grant:
    """What a checked token may see."""

    name: str
    role: str
    firms: frozenset[str]
    expires: dt.datetime | None

    def sees(self, firm: str) -> bool:
        return self.role == "admin" or firm in self.firms

    def require(self, firm: str) -> None:
        """Return if the firm is in scope; raise 403 otherwise, whether or not it exists."""
        if not self.sees(firm):
            raise AccessDenied(403, f"firm {firm} is not in the scope of token {self.name!r}")


class Tokens:
    """The configured tokens; :meth:`check` turns an ``Authorization`` header into a grant."""

    def __init__(self, tokens: Iterable[TokenSettings]) -> None:
        self._entries = [
            (bytes.fromhex(t.sha256), Grant(t.name, t.role, frozenset(t.firms), t.expires))
            for t in tokens
        ]

    def check(self, header: str | None, now: dt.datetime | None = None) -> Grant:
        if header is None:
            raise AccessDenied(401, "a bearer token is needed (Authorization: Bearer <token>)")
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise AccessDenied(401, "the Authorization header must be 'Bearer <token>'")
        presented = hashlib.sha256(secret.strip().encode("utf-8")).digest()
        found = None
        for known, grant in self._entries:
            if hmac.compare_digest(presented, known):
                found = grant
        if found is None:
            raise AccessDenied(401, "unknown token")
        if found.expires is not None and found.expires <= (now or dt.datetime.now(dt.UTC)):
            raise AccessDenied(401, f"token {found.name!r} expired at {found.expires.isoformat()}")
        return found
