"""The part of verification that needs no identifier node and no database: topic, strict
decoding, topic against envelope, and packing the samples into COPY rows. It needs no state
of the pipeline, so it can run in worker processes (``batch.decode_workers``; since the usual
envelope is decoded by compiled code, the ingest process does it by default, which costs less
than moving envelopes between processes); what it returns is picklable.

Packing needs the series ids of the device's tags, which only the ingest process knows: it
hands over, with each message, the ids it knows for the device of the message's topic
(:data:`Known`). When they cover every tag, the envelope comes back packed and the ingest
process only verifies the signature, follows the chain and appends bytes; otherwise (a new
device or tag) it comes back with its samples and the ingest process packs them itself.
"""

from __future__ import annotations

import dataclasses
import hashlib
import marshal
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

import gateway.protocol as wire
from ingest._fastjson import decode_packed, learn_tags
from ingest._rows import Packed

Value = float | int | bool | str | None
#: (device identifier, tag → series id) known to the ingest process for a topic
Known = tuple[str, dict[str, int]]


@dataclass(frozen=True, slots=True)
class Refused:
    """The message goes to quarantine: ``reason`` is one of ``ingest.REASONS``."""

    reason: str
    detail: str
    gateway: str | None = None
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class Checked:
    """A decoded envelope that belongs on its topic, reduced to what the verifier needs.

    ``samples`` are (tag, ts µs, value, quality), or empty when ``packed`` holds them as rows
    already; ``count`` is the number of samples either way; ``canonical`` and ``signature``
    are what :meth:`verify` checks; ``has_nul`` says a text holds U+0000 (PostgreSQL cannot
    store it).
    """

    gateway: str
    device: str | None
    seq: int
    prev: bytes
    created: int
    kind: int
    loss: wire.Loss | None
    samples: Sequence[tuple[str, int, Value, int]]
    digest: bytes
    canonical: bytes
    signature: bytes
    has_nul: bool
    count: int
    packed: Packed | None = None
    checkpoint: wire.Checkpoint | None = None

    def verify(self, key: Ed25519PublicKey) -> None:
        """As ``SignedEnvelope.verify``: raise ``SignatureError`` unless the signature holds."""
        try:
            key.verify(self.signature, self.canonical)
        except InvalidSignature:
            raise wire.SignatureError(
                self.gateway, self.seq, "the signature does not verify"
            ) from None

    def __reduce__(self) -> tuple[Any, ...]:
        # from a worker process the samples travel in marshal's form, which costs a fifth of
        # what pickling a tuple per sample does (both sides run the same Python)
        values = [getattr(self, f.name) for f in dataclasses.fields(self)]
        values[_SAMPLES] = marshal.dumps(self.samples)
        return _unpickle_checked, tuple(values)


_SAMPLES = [f.name for f in dataclasses.fields(Checked)].index("samples")


def _unpickle_checked(*values: Any) -> Checked:
    fields = list(values)
    fields[_SAMPLES] = marshal.loads(fields[_SAMPLES])  # noqa: S302 - from our own worker
    return Checked(*fields)


#: a status message: acknowledged, counted, not stored
STATUS = "status"


def _where(topic: str) -> tuple[bool, str | None] | Refused | str:
    """Whether ``topic`` is Sparkplug, and the gateway it names (JSON topics only); a status
    topic is :data:`STATUS`, one outside the scheme is refused."""
    sparkplug = topic.startswith(wire.SPARKPLUG_NAMESPACE + "/")
    try:
        if sparkplug:
            wire.parse_sparkplug_topic(topic)
            return True, None
        where = wire.parse_topic(topic)
    except wire.TopicError as exc:
        return Refused("bad_topic", str(exc))
    return STATUS if where.kind == "status" else (False, where.gateway)


def precheck_cut(topic: str, size: int) -> Refused | str:
    """:func:`precheck` of a payload of ``size`` bytes that reached ingest cut (a Kafka
    record the bridge cut to what quarantine keeps, since Kafka would not take it whole).

    The outcome is the one the whole payload gets: the topic is judged first, then the size.
    A payload within the contract's limit that Kafka still refused is ``oversized`` too: it
    cannot be verified from its first bytes.
    """
    where = _where(topic)
    if not isinstance(where, tuple):
        return where
    sparkplug, gateway = where
    limit = wire.MAX_SPARKPLUG_BYTES if sparkplug else wire.MAX_PAYLOAD_BYTES
    if size > limit:
        return Refused("oversized", str(wire.EnvelopeTooLarge("payload", size, limit)), gateway)
    return Refused(
        "oversized",
        f"payload: {size} bytes, more than the Kafka broker or the bridge's "
        f"kafka.max_request_size takes (the contract allows {limit}); cut by the bridge",
        gateway,
    )


def precheck(  # noqa: PLR0911 - one return per refusal reads best
    topic: str, payload: bytes, known: Known | None = None
) -> Checked | Refused | str:
    where = _where(topic)
    if not isinstance(where, tuple):
        return where
    sparkplug, gateway = where
    if known is not None and not sparkplug:
        fast = _fast(topic, payload, known)
        if fast is not None:
            return fast
    try:
        signed = (
            wire.decode_sparkplug_envelope(topic, payload)
            if sparkplug
            else wire.decode_json(payload)
        )
    except wire.EnvelopeTooLarge as exc:
        return Refused("oversized", str(exc), gateway)
    except wire.UnsupportedVersion as exc:
        return Refused("unsupported_version", str(exc), gateway)
    except wire.TopicError as exc:  # Sparkplug: not DDATA/NDATA, or not the envelope's sender
        return Refused("topic_mismatch", str(exc))
    except wire.ProtocolError as exc:
        reason = "unsigned" if exc.field == "sig" and "missing" in exc.reason else "malformed"
        return Refused(reason, str(exc), gateway)
    env = signed.envelope
    if not sparkplug:  # decode_sparkplug_envelope checked its topic already
        try:
            wire.check_topic(topic, env)
        except wire.TopicError as exc:
            return Refused("topic_mismatch", str(exc), env.gateway, env.seq)
    return _checked(signed, payload, sparkplug, known)


def _fast(topic: str, payload: bytes, known: Known) -> Checked | Refused | None:
    """The usual JSON data envelope of a known device, decoded and packed in one pass; None
    leaves it to the full decoder."""
    fast = decode_packed(payload, known[1])
    if fast is None:
        return None
    head, canonical, packed, has_nul = fast
    env = head.envelope
    if env.device != known[0]:
        return None
    try:
        wire.check_topic(topic, env)  # the envelope cut to one sample names the same topic
    except wire.TopicError as exc:
        return Refused("topic_mismatch", str(exc), env.gateway, env.seq)
    return Checked(
        env.gateway, env.device, env.seq, env.prev, env.created, int(env.kind), None, [],
        hashlib.sha256(canonical).digest(), canonical, head.signature, has_nul, packed.count,
        packed,
    )  # fmt: skip


def _checked(
    signed: wire.SignedEnvelope, payload: bytes, sparkplug: bool, known: Known | None
) -> Checked:
    """The envelope reduced to what the verifier needs, packed if ``known`` covers its tags."""
    env = signed.envelope
    if env.device is None:  # loss or checkpoint: no samples
        samples: list[tuple[str, int, Value, int]] = []
        has_nul = env.loss is not None and "\x00" in env.loss.reason
    else:
        samples = [(s.tag, s.ts, s.value, int(s.quality)) for s in env.samples]
        learn_tags({s[0] for s in samples})
        # JSON text holds U+0000 only as an escape; without one, no text can hold it
        has_nul = (sparkplug or b"\\u0000" in payload) and any(
            isinstance(s[2], str) and "\x00" in s[2] for s in samples
        )
    count, packed = len(samples), None
    if known is not None and known[0] == env.device:
        try:
            packed = Packed.of(samples, known[1])
        except KeyError:  # a tag without a series yet: the ingest process makes it
            pass
        else:
            samples = []
    return Checked(
        env.gateway, env.device, env.seq, env.prev, env.created, int(env.kind), env.loss,
        samples, env.digest, env.canonical, signed.signature, has_nul, count, packed,
        env.checkpoint,
    )  # fmt: skip


def precheck_many(
    messages: Sequence[tuple[str, bytes, Known | None]],
) -> list[Checked | Refused | str]:
    """:func:`precheck` for a chunk of messages: one round trip to a worker process."""
    return [precheck(topic, payload, known) for topic, payload, known in messages]


def watch_parent(parent: int) -> None:
    """Initializer of a worker process: exit when the ingest process is gone.

    A worker blocks reading its task queue, whose write end it holds too, so it would not see
    a SIGKILLed parent go and would live on as an orphan.
    """

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="watch-parent", daemon=True).start()
