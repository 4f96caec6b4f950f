"""Sparkplug B 3.0 as the uplink's payload format: the gateway is an edge node, each device a
Sparkplug device, each tag a metric with an alias.

The session follows the specification's rules for an edge node (docs/protocol.md,
"Sparkplug B"):

- every CONNECT carries an NDEATH Will (QoS 1, not retained) with a ``bdSeq`` one more than
  the previous accepted connection's (255 wraps to 0), kept in a small state file so that it
  also goes on across restarts; the uplink calls :meth:`SparkplugSession.will` exactly once
  per connection attempt and :meth:`SparkplugSession.births` after its CONNACK;
- after CONNACK: NBIRTH (``seq`` 0, the same ``bdSeq``, ``Node Control/Rebirth`` = false,
  without an alias), then one DBIRTH per device naming every tag with its alias, datatype and
  last known value, then data; every message after NBIRTH takes the next ``seq`` (mod 256);
- an NCMD ``Node Control/Rebirth`` = true answers with the whole birth sequence again, same
  ``bdSeq``, ``seq`` from 0; data published after the command follows the births;
- data envelopes go out as DDATA, loss declarations and checkpoints as NDATA, by alias,
  ``is_historical`` on the backlog of an outage, the signed envelope in ``body``;
- a clean stop publishes NDEATH before DISCONNECT (a host marks the devices offline with it).

Deviation, on purpose: DDATA and NDATA go at QoS 1, not 0. The outbox deletes an envelope only
on its PUBACK; at QoS 0 an envelope lost in a dropped connection would be gone for good.
Births stay at QoS 0: they are made again on every connection.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import identifiers
from edge import DataType as TagType
from gateway import protocol as p
from gateway._outbox import Entry
from gateway._uplink import Message
from gateway.config import GatewayConfig

logger = logging.getLogger(__name__)

T = p.SparkplugDataType
_TAG_TYPES = {
    TagType.BOOL: T.BOOLEAN,
    TagType.INT8: T.INT8,
    TagType.UINT8: T.UINT8,
    TagType.INT16: T.INT16,
    TagType.UINT16: T.UINT16,
    TagType.INT32: T.INT32,
    TagType.UINT32: T.UINT32,
    TagType.INT64: T.INT64,
    TagType.UINT64: T.UINT64,
    TagType.FLOAT32: T.FLOAT,
    TagType.FLOAT64: T.DOUBLE,
    TagType.STRING: T.STRING,
    TagType.BYTES: T.STRING,  # as in the envelope: lower-case hex
}
_QUALITY = {"good": None, "uncertain": p.SPARKPLUG_QUALITY_STALE, "bad": p.SPARKPLUG_QUALITY_BAD}
#: node metrics besides bdSeq and the rebirth command: (name, datatype)
GATEWAY_METRICS = (
    ("Properties/Gateway", T.STRING),
    ("Properties/Enterprise", T.STRING),
    ("Properties/Key", T.STRING),
)
LOSS_METRICS = (
    ("Loss/First", T.UINT64),
    ("Loss/Last", T.UINT64),
    ("Loss/Samples", T.UINT64),
    ("Loss/Reason", T.STRING),
)


def tag_datatype(tag_type: TagType, *, transformed: bool) -> p.SparkplugDataType:
    """A tag's metric datatype; a scaled or offset number is a Double."""
    if transformed and tag_type.numeric:
        return T.DOUBLE
    return _TAG_TYPES[tag_type]


@dataclass(frozen=True)
class SparkplugDevice:
    """A device as Sparkplug sees it: its identifier and its tags with their datatypes."""

    id: str
    tags: tuple[tuple[str, p.SparkplugDataType], ...]


@dataclass
class _Metric:
    name: str
    alias: int
    datatype: p.SparkplugDataType
    value: Any = None
    quality: int | None = None
    timestamp: int | None = None  # ms, of the last value


class BdSeqStore:
    """The ``bdSeq`` of the last connection that was accepted (CONNACK), in a one-line file
    replaced atomically, so that the number goes on across restarts."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def next(self) -> int:
        """The number after the last one stored; 0 for the first connection ever."""
        try:
            return (int(self.path.read_text(encoding="ascii")) + 1) % 256
        except FileNotFoundError:
            return 0
        except (OSError, ValueError) as exc:
            logger.warning(
                "sparkplug: %s is unreadable (%s); bdSeq starts again at 0", self.path, exc
            )
            return 0

    def store(self, bdseq: int) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        with tmp.open("w", encoding="ascii") as f:
            f.write(f"{bdseq}\n")
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.path)


class SparkplugSession:
    """The uplink :class:`~gateway._uplink.Session` of Sparkplug B (see the module docstring)."""

    def __init__(
        self,
        *,
        group: str,
        gateway: str,
        enterprise: str,
        key_fingerprint: str,
        devices: Sequence[SparkplugDevice],
        bdseq: BdSeqStore,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.group = group
        self.node = p.sparkplug_edge_node(gateway)
        self._bdseq_store = bdseq
        self._clock = clock
        self.bdseq: int | None = None
        self._born = False  # births() was called for the current bdSeq
        self._seq = 0
        alias = iter(range(2, 2**31))  # 1 is bdSeq's
        self._node_metrics = [
            _Metric(name, next(alias), datatype, value)
            for (name, datatype), value in zip(
                GATEWAY_METRICS, (gateway, enterprise, key_fingerprint), strict=True
            )
        ]
        self._loss = [_Metric(name, next(alias), datatype) for name, datatype in LOSS_METRICS]
        self._node_metrics += self._loss
        # device identifier → (device id in topics, tag name → metric)
        self._devices: dict[str, tuple[str, dict[str, _Metric]]] = {}
        for device in devices:
            metrics = {tag: _Metric(tag, next(alias), dt) for tag, dt in device.tags}
            self._devices[device.id] = (p.sparkplug_device(device.id), metrics)
        self._logged: set[tuple[str, str]] = set()
        self._down: set[str] = set()  # devices not answering: no DBIRTH until they do

    def _topic(self, kind: p.SparkplugMessageType, device: str | None = None) -> str:
        return p.sparkplug_topic(self.group, kind, self.node, device)

    def _now(self) -> int:
        return int(self._clock() * 1000)

    def _next_seq(self) -> int:
        seq = self._seq
        self._seq = (seq + 1) % 256
        return seq

    def _ndeath(self, bdseq: int) -> Message:
        metric = p.SparkplugMetric(
            name=p.SPARKPLUG_BDSEQ, timestamp=self._now(), datatype=T.INT64, value=bdseq
        )
        payload = p.SparkplugPayload(timestamp=self._now(), metrics=(metric,))
        return Message(self._topic(p.SparkplugMessageType.NDEATH), p.encode_sparkplug(payload))

    # -- the Session protocol --------------------------------------------------------------------

    def will(self) -> Message:
        """A new CONNECT: the next ``bdSeq``, and the NDEATH that carries it.

        A connection attempt that was never accepted (no CONNACK, so no births) leaves no
        session behind, and the next attempt reuses its number: a host sees ``bdSeq`` go up
        by exactly one from one NBIRTH to the next.
        """
        self.bdseq = self._bdseq_store.next()
        self._born = False
        return self._ndeath(self.bdseq)

    def births(self) -> list[Message]:
        """NBIRTH (``seq`` 0) and a DBIRTH per device, each metric with its last known value."""
        if self.bdseq is None:
            raise RuntimeError("will() opens every connection, before births()")
        if not self._born:  # the broker accepted the connection: its bdSeq is used
            self._bdseq_store.store(self.bdseq)
            self._born = True
        now = self._now()
        self._seq = 0
        node = [
            p.SparkplugMetric(
                name=p.SPARKPLUG_BDSEQ, alias=1, timestamp=now, datatype=T.INT64, value=self.bdseq
            ),
            p.SparkplugMetric(
                name=p.SPARKPLUG_REBIRTH, timestamp=now, datatype=T.BOOLEAN, value=False
            ),
        ]
        node += [_birth_metric(m, now) for m in self._node_metrics]
        messages = [self._message(p.SparkplugMessageType.NBIRTH, None, node, qos=0)]
        for device_id in self._devices:
            if device_id not in self._down:
                messages.append(self._dbirth(device_id, now))
        return messages

    def _dbirth(self, device_id: str, now: int) -> Message:
        device, metrics = self._devices[device_id]
        births = [_birth_metric(m, now) for m in metrics.values()]
        return self._message(p.SparkplugMessageType.DBIRTH, device, births, qos=0)

    def subscriptions(self) -> list[str]:
        return [
            self._topic(p.SparkplugMessageType.NCMD),
            f"{p.SPARKPLUG_NAMESPACE}/{self.group}/{p.SparkplugMessageType.DCMD}/{self.node}/+",
        ]

    def command(self, topic: str, payload: bytes) -> list[Message]:
        """``Node Control/Rebirth`` = true in an NCMD: the birth sequence again. Writes to
        device outputs (DCMD) are not supported: the gateway only reads."""
        try:
            parsed = p.parse_sparkplug_topic(topic)
            metrics = p.decode_sparkplug(payload).metrics
        except p.ProtocolError as exc:
            logger.warning("sparkplug: ignored a command on %s: %s", topic, exc)
            return []
        if parsed.type is p.SparkplugMessageType.NCMD and any(
            m.name == p.SPARKPLUG_REBIRTH and m.value is True for m in metrics
        ):
            logger.info("sparkplug: rebirth requested on %s", topic)
            return self.births()
        logger.warning(
            "sparkplug: ignored a %s on %s: only rebirth is supported", parsed.type, topic
        )
        return []

    def data(self, entry: Entry, historical: bool) -> Message:
        """DDATA for a data envelope, NDATA for a loss declaration or a checkpoint; the envelope
        in ``body``. A checkpoint has no metrics: its counts are evidence, read from the body."""
        doc = json.loads(entry.payload)
        if doc["kind"] == "loss":
            return self._loss_message(entry, doc, historical)
        if doc["kind"] == "checkpoint":
            return self._message(p.SparkplugMessageType.NDATA, None, [], body=entry.payload, qos=1)
        device = doc["device"]
        known_device = self._devices.get(device)
        if known_device is None:
            # an envelope committed before the device left the config: its body still goes
            # to ingest, without metrics that no DBIRTH declares
            if (device, "") not in self._logged:
                self._logged.add((device, ""))
                logger.error("sparkplug: device %s is not in the config: no metrics", device)
            known_device = (p.sparkplug_device(device), {})
        device_id, by_tag = known_device
        metrics, sources = [], []
        for tag, ts, value, label in doc["samples"]:
            known = by_tag.get(tag)
            if known is None:
                if by_tag and (device, tag) not in self._logged:
                    self._logged.add((device, tag))
                    logger.error("sparkplug: tag %r of %s is not in its DBIRTH", tag, device)
                continue
            metrics.append(
                p.SparkplugMetric(
                    alias=known.alias,
                    timestamp=ts // 1000,
                    datatype=known.datatype,
                    value=_value(known.datatype, value),
                    is_historical=historical,
                    quality=_QUALITY[label],
                )
            )
            sources.append(known)
        message = self._message(
            p.SparkplugMessageType.DDATA, device_id, metrics, body=entry.payload, qos=1
        )
        if not historical:  # what the next birth reports, as sent (after _unfit)
            for known, metric in zip(sources, metrics, strict=True):
                known.value, known.quality, known.timestamp = (
                    metric.value,
                    metric.quality,
                    metric.timestamp,
                )
        return message

    def _unfit(self, device_id: str, metrics: list[p.SparkplugMetric], i: int) -> None:
        """Metric ``i`` holds a value its declared datatype cannot (a driver giving another type
        than its config says): the metric goes out null with quality BAD, and the envelope in
        ``body`` keeps the value. Logged once per tag."""
        bad = metrics[i]
        key = (device_id, str(bad.alias))
        if key not in self._logged:
            self._logged.add(key)
            logger.error(
                "sparkplug: %r does not fit metric alias %s (%s) of device %s; sent as null",
                bad.value,
                bad.alias,
                bad.datatype and bad.datatype.name,
                device_id,
            )
        metrics[i] = dataclasses.replace(bad, value=None, quality=p.SPARKPLUG_QUALITY_BAD)

    def device(self, device: str, up: bool) -> list[Message]:
        """DDEATH when a device stops answering, its DBIRTH again when it answers again."""
        if device not in self._devices:
            return []
        if up:
            self._down.discard(device)
        else:
            self._down.add(device)
        if not self._born:
            return []  # the next births reflect it
        if up:
            return [self._dbirth(device, self._now())]
        topic_device = self._devices[device][0]
        return [self._message(p.SparkplugMessageType.DDEATH, topic_device, [], qos=0)]

    def death(self) -> Message | None:
        """NDEATH with this connection's ``bdSeq``, published before a clean DISCONNECT."""
        return None if self.bdseq is None else self._ndeath(self.bdseq)

    # -- helpers -----------------------------------------------------------------------------------

    def _loss_message(self, entry: Entry, doc: dict[str, Any], historical: bool) -> Message:
        loss = doc["loss"]
        ms = doc["created"] // 1000
        values = (loss["first"], loss["last"], loss["samples"], loss["reason"])
        metrics = []
        for known, value in zip(self._loss, values, strict=True):
            if not historical:
                known.value, known.timestamp = value, ms
            metrics.append(
                p.SparkplugMetric(
                    alias=known.alias,
                    timestamp=ms,
                    datatype=known.datatype,
                    value=value,
                    is_historical=historical,
                )
            )
        return self._message(p.SparkplugMessageType.NDATA, None, metrics, body=entry.payload, qos=1)

    def _message(
        self,
        kind: p.SparkplugMessageType,
        device: str | None,
        metrics: list[p.SparkplugMetric],
        *,
        qos: int,
        body: bytes | None = None,
    ) -> Message:
        while True:
            payload = p.SparkplugPayload(
                timestamp=self._now(),
                metrics=tuple(metrics),
                seq=self._seq,
                uuid=None if body is None else p.SPARKPLUG_ENVELOPE_UUID,
                body=body,
            )
            try:
                raw = p.encode_sparkplug(payload)
            except p.MalformedEnvelope as exc:
                index = _metric_index(exc.field)
                if index is None or device is None:
                    raise
                self._unfit(device, metrics, index)
            else:
                self._next_seq()
                return Message(self._topic(kind, device), raw, qos=qos)


def _metric_index(field: str) -> int | None:
    """``3`` for ``metrics[3].value``."""
    head, _, rest = field.partition("].")
    if rest != "value" or not head.startswith("metrics["):
        return None
    return int(head.removeprefix("metrics["))


def _birth_metric(m: _Metric, now: int) -> p.SparkplugMetric:
    return p.SparkplugMetric(
        name=m.name,
        alias=m.alias,
        timestamp=now if m.timestamp is None else m.timestamp,
        datatype=m.datatype,
        value=m.value,
        quality=m.quality,
    )


def _value(datatype: p.SparkplugDataType, value: Any) -> Any:
    """An envelope value as its metric's datatype holds it (docs/protocol.md: an integer over
    2⁵³ travels as text in the envelope, a NaN as null)."""
    if value is None or datatype in (T.STRING, T.BOOLEAN, T.FLOAT, T.DOUBLE):
        return value
    if isinstance(value, str):
        return int(value)
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return value


def sparkplug_session(config: GatewayConfig, public_key: bytes) -> SparkplugSession:
    """The session of a ``format: sparkplug`` uplink; ``bdSeq`` is kept beside the outbox."""
    gateway = config.gateway
    devices = [
        SparkplugDevice(
            d.id,
            tuple(
                (t.name, tag_datatype(t.type, transformed=t.scale != 1.0 or t.offset != 0.0))
                for g in d.groups
                for t in g.tags
            ),
        )
        for d in config.devices
    ]
    outbox = config.outbox.path
    return SparkplugSession(
        group=config.uplink.sparkplug_group or identifiers.parse(gateway.id).prefix,
        gateway=gateway.id,
        enterprise=gateway.enterprise,
        key_fingerprint=p.fingerprint(public_key),
        devices=devices,
        bdseq=BdSeqStore(outbox.with_name(outbox.name + ".bdseq")),
    )
