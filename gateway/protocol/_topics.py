"""The MQTT topic scheme (docs/protocol.md, "Topics").

::

    gt/v1/<firm prefix>/<gateway suffix>/data/<device suffix>   data envelopes, QoS 1
    gt/v1/<firm prefix>/<gateway suffix>/loss                   loss envelopes, QoS 1
    gt/v1/<firm prefix>/<gateway suffix>/checkpoint             checkpoint envelopes, QoS 1
    gt/v1/<firm prefix>/<gateway suffix>/status                 retained online/offline status

The firm prefix (``88.709.911``) is one topic level, so a broker ACL can confine a firm to
``gt/v1/88.709.911/#`` and a gateway to ``gt/v1/88.709.911/<gateway suffix>/#``. A suffix may
contain ``/``, ``+``, ``#`` and ``%``, which mean something else in a topic: they are
percent-encoded so that every suffix is exactly one level.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import identifiers
from gateway.protocol._envelope import Envelope
from gateway.protocol._errors import TopicError

ROOT = "gt/v1"
#: what ingest subscribes to
SUBSCRIPTION = f"{ROOT}/#"

_ESCAPE = {"%": "%25", "/": "%2F", "+": "%2B", "#": "%23"}
_UNESCAPE = {v: k for k, v in _ESCAPE.items()}


@dataclass(frozen=True, slots=True)
class Topic:
    """A parsed topic: ``kind`` is ``data``, ``loss``, ``checkpoint`` or ``status``; ``device``
    only for data."""

    kind: str
    gateway: str
    device: str | None = None


def _escape(suffix: str) -> str:
    return "".join(_ESCAPE.get(ch, ch) for ch in suffix)


def _unescape(topic: str, level: str) -> str:
    out, i = [], 0
    while i < len(level):
        if level[i] == "%":
            code = _UNESCAPE.get(level[i : i + 3].upper())
            if code is None:
                raise TopicError(topic, f"bad escape in {level!r}")
            out.append(code)
            i += 3
        else:
            out.append(level[i])
            i += 1
    return "".join(out)


def _gateway_base(gateway: str) -> str:
    gw = identifiers.parse(gateway)
    return f"{ROOT}/{gw.prefix}/{_escape(gw.suffix)}"


def data_topic(gateway: str, device: str) -> str:
    dev = identifiers.parse(device)
    if dev.prefix != identifiers.parse(gateway).prefix:
        raise TopicError(device, "a gateway publishes only for devices of its own firm")
    return f"{_gateway_base(gateway)}/data/{_escape(dev.suffix)}"


def loss_topic(gateway: str) -> str:
    return f"{_gateway_base(gateway)}/loss"


def checkpoint_topic(gateway: str) -> str:
    return f"{_gateway_base(gateway)}/checkpoint"


def status_topic(gateway: str) -> str:
    return f"{_gateway_base(gateway)}/status"


def envelope_topic(envelope: Envelope) -> str:
    """Where ``envelope`` is published."""
    if envelope.checkpoint is not None:
        return checkpoint_topic(envelope.gateway)
    if envelope.device is None:
        return loss_topic(envelope.gateway)
    return data_topic(envelope.gateway, envelope.device)


@functools.lru_cache(maxsize=8192)
def _topic_of(kind: str, gateway: str, device: str | None) -> str:
    """:func:`envelope_topic` of an envelope of ``kind`` (``""``: loss), for ``check_topic``."""
    if kind == "checkpoint":
        return checkpoint_topic(gateway)
    if kind == "data":
        return data_topic(gateway, device)  # type: ignore[arg-type]
    return loss_topic(gateway)


def parse_topic(topic: str) -> Topic:
    """Split a topic of the scheme; raise :class:`TopicError` for anything else."""
    return _parse_topic(topic)


@functools.lru_cache(maxsize=8192)
def _parse_topic(topic: str) -> Topic:
    # ingest parses the topic of every message, and a topic twice more to check it against
    # its envelope: the same few topics, for each envelope. A Topic is immutable; a refusal
    # is not cached (it raises).
    levels = topic.split("/")
    if levels[:2] != ROOT.split("/") or len(levels) < 5:
        raise TopicError(topic, f"not under {ROOT}/<prefix>/<gateway>/<kind>")
    prefix, gateway_level, kind, rest = levels[2], levels[3], levels[4], levels[5:]
    try:
        gateway = str(identifiers.Identifier.under(prefix, _unescape(topic, gateway_level)))
        if kind == "data" and len(rest) == 1:
            device = str(identifiers.Identifier.under(prefix, _unescape(topic, rest[0])))
            return Topic("data", gateway, device)
    except identifiers.IdentifierError as exc:
        raise TopicError(topic, f"{exc.part}: {exc.reason}") from None
    if kind in ("loss", "checkpoint", "status") and not rest:
        return Topic(kind, gateway)
    raise TopicError(topic, f"unknown kind {'/'.join(levels[4:])!r}")


def check_topic(topic: str, envelope: Envelope) -> None:
    """Raise :class:`TopicError` unless ``topic`` is where ``envelope`` belongs.

    A gateway's broker ACL confines it to its own topics; this check makes the payload agree
    with the topic, so an envelope naming another gateway or device is refused.
    """
    kind = "checkpoint" if envelope.checkpoint is not None else "data" if envelope.device else ""
    expected = _topic_of(kind, envelope.gateway, envelope.device)
    if parse_topic(topic) != parse_topic(expected):
        raise TopicError(topic, f"the envelope belongs on {expected!r}")
