"""Ed25519 key files (a gateway's, the evidence platform's): created once, readable by their
owner only, never logged.

The file is PKCS#8 PEM (what ``openssl genpkey -algorithm ed25519`` writes); a raw 32-byte
seed is accepted too. A key file that others may read is refused, as OpenSSH refuses one:
whoever reads it can sign data in the firm's (or the platform's) name.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


class KeyFileError(Exception):
    """The key file is missing, unreadable, too open, not Ed25519, or already exists."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        super().__init__(f"key file {path}: {reason}")


def create_key(path: Path) -> Ed25519PrivateKey:
    """Generate a key and write it to ``path`` (mode 0600); refuse to overwrite a key."""
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(path, "exists already; a key is kept for life") from None
    except OSError as exc:
        raise KeyFileError(path, exc.strerror or str(exc)) from None
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
        out.flush()
        os.fsync(out.fileno())
    return key


def load_key(path: Path) -> Ed25519PrivateKey:
    try:
        mode = path.stat().st_mode
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(path, exc.strerror or str(exc)) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(path, f"others may read it (mode {mode & 0o777:o}): chmod 600 it")
    if len(data) == 32:
        return Ed25519PrivateKey.from_private_bytes(data)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(path, f"not a PEM private key without passphrase ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(path, f"a {type(key).__name__}, not an Ed25519 key")
    return key


def load_or_create_key(path: Path) -> tuple[Ed25519PrivateKey, bool]:
    """The key at ``path``, made on first use; and whether it was made just now."""
    try:
        return load_key(path), False
    except KeyFileError:
        if path.exists():
            raise
    return create_key(path), True
