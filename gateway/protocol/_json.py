"""The JSON carrier of a signed envelope (docs/protocol.md, "JSON form").

Decoding is strict: UTF-8 only, no duplicate keys, no unknown or missing fields, no NaN or
Infinity literals, a size limit checked before parsing. Every refusal is a
:class:`ProtocolError` naming the field, never a bare ``KeyError`` or ``TypeError``.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

from gateway.protocol._envelope import (
    VERSION,
    Checkpoint,
    Count,
    Envelope,
    Kind,
    Loss,
    Period,
    Quality,
    Sample,
)
from gateway.protocol._errors import EnvelopeTooLarge, MalformedEnvelope, UnsupportedVersion
from gateway.protocol._signing import SIGNATURE_BYTES, SignedEnvelope

#: an MQTT message carrying more than this is refused before it is parsed
MAX_PAYLOAD_BYTES = 1 << 20

_COMMON = ("v", "kind", "gateway", "seq", "prev", "created", "sig")
_FIELDS = {
    Kind.DATA: frozenset((*_COMMON, "device", "samples")),
    Kind.LOSS: frozenset((*_COMMON, "loss")),
    Kind.CHECKPOINT: frozenset((*_COMMON, "checkpoint")),
}
_LOSS_FIELDS = frozenset(("first", "last", "samples", "reason"))
_CHECKPOINT_FIELDS = frozenset(("from", "to", "previous", "previous_hash", "restarted", "periods"))
_PERIOD_FIELDS = frozenset(("from", "to", "counts"))
_KINDS = {kind.label: kind for kind in Kind}
_QUALITIES = {quality.label: quality for quality in Quality}
_HEX64 = re.compile(r"[0-9a-f]{64}")


def encode_json(signed: SignedEnvelope) -> bytes:
    """The compact JSON text of ``signed``; raise :class:`EnvelopeTooLarge` over the limit."""
    env = signed.envelope
    doc: dict[str, Any] = {
        "v": env.version,
        "kind": env.kind.label,
        "gateway": env.gateway,
        "seq": env.seq,
        "prev": env.prev.hex(),
        "created": env.created,
    }
    if env.checkpoint is not None:
        cp = env.checkpoint
        doc["checkpoint"] = {
            "from": cp.start,
            "to": cp.end,
            "previous": cp.previous,
            "previous_hash": cp.previous_hash.hex(),
            "restarted": cp.restarted,
            "periods": [
                {
                    "from": period.start,
                    "to": period.end,
                    "counts": [[c.device, c.tag, c.samples] for c in period.counts],
                }
                for period in cp.periods
            ],
        }
    elif env.loss is None:
        doc["device"] = env.device
        doc["samples"] = [[s.tag, s.ts, s.value, s.quality.label] for s in env.samples]
    else:
        loss = env.loss
        doc["loss"] = {
            "first": loss.first,
            "last": loss.last,
            "samples": loss.samples,
            "reason": loss.reason,
        }
    doc["sig"] = base64.b64encode(signed.signature).decode("ascii")
    raw = json.dumps(doc, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise EnvelopeTooLarge("payload", len(raw), MAX_PAYLOAD_BYTES)
    return raw


def decode_json(raw: bytes) -> SignedEnvelope:
    """Parse and validate a JSON envelope; the signature is checked by ``verify``, not here."""
    return decode_json_document(parse_json(raw))


def parse_json(raw: bytes) -> dict[str, Any]:
    """The first half of :func:`decode_json`: the strict JSON text (size limit, UTF-8, no
    duplicate keys, no NaN or Infinity) of an object, whose fields are not checked yet."""
    if len(raw) > MAX_PAYLOAD_BYTES:
        raise EnvelopeTooLarge("payload", len(raw), MAX_PAYLOAD_BYTES)
    try:
        doc = json.loads(
            raw.decode("utf-8"), object_pairs_hook=_unique_keys, parse_constant=_no_constant
        )
    except UnicodeDecodeError as exc:
        raise MalformedEnvelope("payload", f"not UTF-8: {exc.reason}") from None
    except json.JSONDecodeError as exc:
        raise MalformedEnvelope("payload", f"not JSON: {exc.msg} at {exc.pos}") from None
    except RecursionError:
        raise MalformedEnvelope("payload", "nested too deeply") from None
    except MalformedEnvelope:  # a duplicate key or a NaN, refused by the hooks
        raise
    except ValueError as exc:  # an integer literal over Python's 4,300-digit limit
        raise MalformedEnvelope("payload", f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise MalformedEnvelope("payload", "must be a JSON object")
    return doc


def decode_json_document(doc: dict[str, Any]) -> SignedEnvelope:
    """The second half of :func:`decode_json`: every field of a parsed envelope checked."""
    if "v" not in doc:
        raise MalformedEnvelope("v", "is missing")
    if doc["v"] != VERSION or type(doc["v"]) is not int:
        raise UnsupportedVersion(doc["v"])
    kind = _KINDS.get(doc["kind"]) if isinstance(doc.get("kind"), str) else None
    if kind is None:
        raise MalformedEnvelope("kind", f"must be one of {sorted(_KINDS)}, not {doc.get('kind')!r}")
    _exact_fields("", doc, _FIELDS[kind])
    signature = _signature(doc["sig"])
    common: dict[str, Any] = {
        "gateway": doc["gateway"],
        "seq": doc["seq"],
        "prev": _digest(doc["prev"]),
        "created": doc["created"],
    }
    if kind is Kind.DATA:
        envelope = Envelope(device=doc["device"], samples=_samples(doc["samples"]), **common)
    elif kind is Kind.LOSS:
        envelope = Envelope(loss=_loss(doc["loss"]), **common)
    else:
        envelope = Envelope(checkpoint=_checkpoint(doc["checkpoint"]), **common)
    return SignedEnvelope(envelope, signature)


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc = dict(pairs)
    if len(doc) != len(pairs):
        seen: set[str] = set()
        dupe = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise MalformedEnvelope(dupe, "is given twice")
    return doc


def _no_constant(name: str) -> None:
    raise MalformedEnvelope("payload", f"{name} is not a JSON number")


def _exact_fields(where: str, doc: dict[str, Any], fields: frozenset[str]) -> None:
    for name in sorted(fields - doc.keys()):
        raise MalformedEnvelope(where + name, "is missing")
    for name in sorted(doc.keys() - fields):
        raise MalformedEnvelope(where + name, "is not a field of this envelope kind")


def _digest(text: object, where: str = "prev") -> bytes:
    if not isinstance(text, str) or not _HEX64.fullmatch(text):
        raise MalformedEnvelope(where, "must be 64 lower-case hex digits")
    return bytes.fromhex(text)


def _signature(text: object) -> bytes:
    if not isinstance(text, str):
        raise MalformedEnvelope("sig", "must be a base64 string")
    try:
        signature = base64.b64decode(text, validate=True)
    except ValueError:  # binascii.Error, or non-ASCII text
        raise MalformedEnvelope("sig", "is not valid base64") from None
    if len(signature) != SIGNATURE_BYTES:
        raise MalformedEnvelope("sig", f"must be {SIGNATURE_BYTES} bytes, not {len(signature)}")
    if base64.b64encode(signature).decode("ascii") != text:
        # unused trailing bits would let two texts carry one signature
        raise MalformedEnvelope("sig", "is not in canonical base64")
    return signature


#: Sample is a frozen dataclass: its ``__init__`` sets each field through
#: ``object.__setattr__``, which was half the cost of decoding a sample. The decoder sets the
#: slots through their own descriptors instead (the envelope then checks every sample).
_new_sample = object.__new__
_SET_TAG, _SET_TS, _SET_VALUE, _SET_QUALITY = (
    vars(Sample)[name].__set__ for name in ("tag", "ts", "value", "quality")
)


def _samples(items: object) -> tuple[Sample, ...]:
    if not isinstance(items, list):
        raise MalformedEnvelope("samples", "must be a list")
    samples = []
    append, qualities = samples.append, _QUALITIES
    for i, item in enumerate(items):
        if not isinstance(item, list) or len(item) != 4:
            raise MalformedEnvelope(f"samples[{i}]", "must be [tag, ts, value, quality]")
        tag, ts, value, label = item
        quality = qualities.get(label) if type(label) is str else None
        if quality is None:
            raise MalformedEnvelope(
                f"samples[{i}].quality", f"must be one of {sorted(_QUALITIES)}, not {label!r}"
            )
        sample = _new_sample(Sample)
        _SET_TAG(sample, tag)
        _SET_TS(sample, ts)
        _SET_VALUE(sample, value)
        _SET_QUALITY(sample, quality)
        append(sample)
    return tuple(samples)


def _loss(doc: object) -> Loss:
    if not isinstance(doc, dict):
        raise MalformedEnvelope("loss", "must be an object")
    _exact_fields("loss.", doc, _LOSS_FIELDS)
    return Loss(doc["first"], doc["last"], doc["samples"], doc["reason"])


def _checkpoint(doc: object) -> Checkpoint:
    """Shapes only: the values are checked by :class:`Envelope`, which names the field."""
    if not isinstance(doc, dict):
        raise MalformedEnvelope("checkpoint", "must be an object")
    _exact_fields("checkpoint.", doc, _CHECKPOINT_FIELDS)
    if not isinstance(doc["periods"], list):
        raise MalformedEnvelope("checkpoint.periods", "must be a list")
    periods = []
    for i, item in enumerate(doc["periods"]):
        where = f"checkpoint.periods[{i}]"
        if not isinstance(item, dict):
            raise MalformedEnvelope(where, "must be an object")
        _exact_fields(where + ".", item, _PERIOD_FIELDS)
        if not isinstance(item["counts"], list):
            raise MalformedEnvelope(f"{where}.counts", "must be a list")
        counts = []
        for j, count in enumerate(item["counts"]):
            if not isinstance(count, list) or len(count) != 3:
                raise MalformedEnvelope(f"{where}.counts[{j}]", "must be [device, tag, samples]")
            counts.append(Count(*count))
        periods.append(Period(item["from"], item["to"], tuple(counts)))
    previous_hash = _digest(doc["previous_hash"], "checkpoint.previous_hash")
    return Checkpoint(
        doc["from"], doc["to"], doc["previous"], previous_hash, doc["restarted"], tuple(periods)
    )
