"""Exceptions of the wire contract; the tree is drawn in ``gateway.protocol``'s docstring."""

from __future__ import annotations


class ProtocolError(ValueError):
    """A payload or topic that breaks the contract; ``field`` names where (``samples[3].ts``)."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}" if field else reason)


class MalformedEnvelope(ProtocolError):
    """Not JSON, a missing or unknown field, a wrong type or an impossible value."""


class UnsupportedVersion(ProtocolError):
    """An envelope version this code does not know; ``version`` is what was sent."""

    def __init__(self, version: object) -> None:
        self.version = version
        super().__init__("v", f"unsupported envelope version {version!r}")


class EnvelopeTooLarge(ProtocolError):
    """More bytes or samples than the contract allows."""

    def __init__(self, field: str, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(field, f"{size} exceeds the limit of {limit}")


class TopicError(ProtocolError):
    """A topic outside the scheme, or one that names another gateway or device than the payload."""

    def __init__(self, topic: str, reason: str) -> None:
        self.topic = topic
        super().__init__("topic", f"{topic!r}: {reason}")


class SignatureError(ProtocolError):
    """The signature does not verify under the given key, or the key is not an Ed25519 key."""

    def __init__(self, gateway: str, seq: int, reason: str) -> None:
        self.gateway = gateway
        self.seq = seq
        super().__init__("sig", f"envelope {gateway} #{seq}: {reason}")
