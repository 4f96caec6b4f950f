"""Ed25519 signatures over an envelope's canonical bytes."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gateway.protocol._envelope import Envelope
from gateway.protocol._errors import SignatureError

SIGNATURE_BYTES = 64
PUBLIC_KEY_BYTES = 32


@dataclass(frozen=True)
class SignedEnvelope:
    """An envelope with the gateway's signature; what travels and what ingest verifies."""

    envelope: Envelope
    signature: bytes

    def verify(self, public_key: bytes | Ed25519PublicKey) -> None:
        """Raise :class:`SignatureError` unless ``signature`` is the gateway's over the envelope.

        ``public_key`` is the raw 32-byte key as published in the gateway's identifier record
        (``HS_PUBKEY``), or a loaded key.
        """
        env = self.envelope
        if isinstance(public_key, bytes):
            if len(public_key) != PUBLIC_KEY_BYTES:
                raise SignatureError(env.gateway, env.seq, "the public key is not 32 bytes")
            public_key = Ed25519PublicKey.from_public_bytes(public_key)
        if len(self.signature) != SIGNATURE_BYTES:
            raise SignatureError(env.gateway, env.seq, "the signature is not 64 bytes")
        try:
            public_key.verify(self.signature, env.canonical)
        except InvalidSignature:
            raise SignatureError(env.gateway, env.seq, "the signature does not verify") from None


def sign(envelope: Envelope, key: Ed25519PrivateKey) -> SignedEnvelope:
    return SignedEnvelope(envelope, key.sign(envelope.canonical))


def public_key_bytes(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    """The raw 32-byte public key, the form published as ``HS_PUBKEY``."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def fingerprint(public_key: bytes) -> str:
    """``sha256:<hex>`` of the raw public key: short enough to read out during a site visit."""
    return "sha256:" + hashlib.sha256(public_key).hexdigest()
