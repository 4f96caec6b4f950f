"""From an MQTT message to rows, or to quarantine with a reason: the trust decisions.

For each message, in order: the topic is of the scheme; the payload decodes under the strict
contract; the envelope belongs on its topic; the gateway's key comes from its identifier
record and the signature verifies; a data envelope's device is registered under the same firm
and names this gateway; the envelope fits the gateway's chain. Only then do its samples
become rows. Every refusal is a :class:`Quarantined` with a reason from :data:`REASONS`.

The chain of each gateway is followed from its receipts (so it survives restarts): the next
``seq`` extends it; a jump leaves a gap (a connectivity event); a loss envelope is a declared
loss; the same ``seq`` with the same hash is a redelivery, absorbed; the same ``seq`` with
another hash is a fork or a rewound gateway, quarantined.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

import gateway.protocol as wire
import identifiers
from ingest import _checkpoints
from ingest._decode import Checked, Known, Refused, precheck, precheck_cut
from ingest._rows import pg_us
from ingest._store import Batch, Store

logger = logging.getLogger(__name__)

#: quarantine reasons, and what each means (docs/ingest.md lists them too)
REASONS = {
    "bad_topic": "the topic is not of the gt/v1 scheme",
    "oversized": "over 1 MiB, or more samples than the contract allows",
    "unsupported_version": "an envelope version this ingest does not know",
    "malformed": "not a valid envelope (the detail names the field)",
    "unsigned": "no signature",
    "topic_mismatch": "the envelope names another gateway, device or kind than its topic",
    "unknown_gateway": "the gateway has no identifier record",
    "unverifiable": "the gateway's record has no usable key, or the node refused the lookup",
    "bad_signature": "the signature does not verify under the gateway's registered key",
    "unknown_device": "the device has no identifier record",
    "foreign_device": "the device is registered under another firm or gateway",
    "fork": "an envelope with an already received seq but different content",
    "unstorable": "text PostgreSQL cannot hold (U+0000)",
    "store_refused": "the database refused the batch holding it for a reason other than an "
    "outage (the detail has the error); every message of that batch is kept here",
}
#: bytes of an oversized payload kept in quarantine (the size column has the whole size)
KEEP_OVERSIZED = 64 * 1024
_RECENT = 8192
#: series ids of a device handed to decode workers with each of its messages; a device with
#: more tags than this is packed by ingest, as handing its ids over would cost more
HAND_OVER_TAGS = 4096


def storable(text: str) -> str:
    """``text`` as PostgreSQL can hold it: a refusal's detail may quote a field name the sender
    chose, with U+0000 or a lone surrogate in it, and one such row would make the database
    refuse the whole batch, good envelopes with it."""
    if text.isprintable():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


class Transient(Exception):
    """Not the message's fault (identifier node or database away): retry it later."""


@dataclass(frozen=True, slots=True)
class Message:
    """What a source hands to the pipeline; ``position`` is the source's own, to acknowledge
    it after the commit (an MQTT packet id, a Kafka partition and offset). ``size`` is the
    whole payload's size when the source holds only its first bytes (a Kafka record the
    bridge cut): such a message is quarantined as ``oversized``."""

    topic: str
    payload: bytes
    received: int  # µs since the Unix epoch
    position: object = None
    size: int | None = None


@dataclass(slots=True)
class Quarantined:
    reason: str
    detail: str
    gateway: str | None = None
    seq: int | None = None


@dataclass
class _Chain:
    """A gateway's chain as far as ingest has seen it; ``recent``: seq → (hash, prev)."""

    gateway_id: int
    head: int = 0
    recent: OrderedDict[int, tuple[bytes, bytes]] = field(default_factory=OrderedDict)

    def remember(self, seq: int, digest: bytes, prev: bytes) -> None:
        self.recent[seq] = (digest, prev)
        self.recent.move_to_end(seq)
        while len(self.recent) > _RECENT:
            self.recent.popitem(last=False)
        self.head = max(self.head, seq)


@dataclass
class _Party:
    """A resolved gateway or device, kept for ``cache_seconds``."""

    record: Any
    expires: float
    key: Ed25519PublicKey | None = None


@dataclass
class VerifyStats:
    accepted: int = 0
    #: accepted envelopes whose rows a decode worker packed
    packed: int = 0
    duplicates: int = 0
    ignored: int = 0
    gaps: int = 0
    losses: int = 0
    checkpoints: int = 0
    chain_breaks: int = 0
    quarantined: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REASONS, 0))


Call = Callable[..., Awaitable[Any]]


class Verifier:
    """Turns messages into a :class:`Batch`. ``db`` runs a Store method off the event loop."""

    def __init__(
        self, store: Store, resolver: identifiers.Client, db: Call, *, cache_seconds: float = 60
    ) -> None:
        self.store = store
        self.resolver = resolver
        self._db = db
        self._cache_seconds = cache_seconds
        self._parties: dict[str, _Party] = {}
        self._chains: dict[str, _Chain] = {}
        self._enterprises: dict[str, int] = {}
        self._gateways: dict[str, int] = {}
        self._devices: dict[tuple[str, int], int] = {}
        self._series_ids: dict[int, dict[str, int]] = {}
        #: topic → the series ids a decode worker may pack that topic's next envelopes with
        self.known: dict[str, Known] = {}
        self.stats = VerifyStats()
        #: handle → its look-up started by :meth:`prefetch`
        self._prefetching: dict[str, asyncio.Task[None]] = {}

    def reset_chains(self) -> None:
        """Forget chain state (after a failed write whose effects must not be assumed)."""
        self._chains.clear()

    async def add(
        self, msg: Message, batch: Batch, pre: Checked | Refused | str | None = None
    ) -> int:
        """Put what ``msg`` carries into ``batch``; return the samples it added.

        ``pre`` is :func:`precheck` of the message if a worker process did it already.
        """
        outcome = await self._check(msg, batch, pre)
        if isinstance(outcome, Quarantined):
            self.quarantine(msg, outcome, batch)
            return 0
        return outcome

    def quarantine(self, msg: Message, outcome: Quarantined, batch: Batch) -> None:
        self.stats.quarantined[outcome.reason] += 1
        payload = msg.payload
        if outcome.reason == "oversized":
            payload = payload[:KEEP_OVERSIZED]
        batch.quarantine.append(
            (pg_us(msg.received), msg.topic, payload,
             len(msg.payload) if msg.size is None else msg.size, outcome.reason,
             storable(outcome.detail), outcome.gateway and storable(outcome.gateway), outcome.seq)
        )  # fmt: skip
        logger.debug("quarantined %s: %s %s", msg.topic, outcome.reason, outcome.detail)

    async def _check(
        self, msg: Message, batch: Batch, pre: Checked | Refused | str | None
    ) -> int | Quarantined:
        if msg.size is not None:
            pre = precheck_cut(msg.topic, msg.size)
        elif pre is None:
            pre = precheck(msg.topic, msg.payload, self.known.get(msg.topic))
        if isinstance(pre, Refused):
            return Quarantined(pre.reason, pre.detail, pre.gateway, pre.seq)
        if isinstance(pre, str):
            self.stats.ignored += 1
            return 0
        refused = await self._authenticate(pre)
        if refused is not None:
            return refused
        if pre.has_nul:
            return Quarantined("unstorable", "a text contains U+0000", pre.gateway, pre.seq)
        return await self._chain(msg, pre, batch)

    # --- identity -----------------------------------------------------------------------------

    def prefetch(self, topics: Iterable[str]) -> None:
        """Start looking up, all at once, the gateways and devices of messages waiting.

        Messages are verified one after another, and the look-up of each party not cached
        would otherwise wait for the one before: at start, with a backlog from many devices,
        one round trip to the identifier node per device before the first batch is written.
        The parties found are cached as verification would cache them; verification still
        makes every decision, and asks again for a party whose look-up failed here.
        """
        now = time.monotonic()
        for topic in topics:
            try:
                where = wire.parse_topic(topic)
            except wire.TopicError:
                continue  # verification quarantines it
            for handle in (where.gateway, where.device):
                if handle is None or handle in self._prefetching:
                    continue
                party = self._parties.get(handle)
                if party is None or now >= party.expires:
                    self._prefetching[handle] = asyncio.create_task(
                        self._prefetch(handle), name=f"ingest-prefetch {handle}"
                    )

    async def _prefetch(self, handle: str) -> None:
        try:
            await self._party(handle)
        except Exception:  # verification asks again and deals with it
            logger.debug("looking %s up ahead failed", handle, exc_info=True)
        finally:
            self._prefetching.pop(handle, None)

    async def stop_prefetching(self) -> None:
        tasks = list(self._prefetching.values())
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _party(self, handle: str, *, fresh: bool = False) -> _Party | Quarantined:
        now = time.monotonic()
        party = self._parties.get(handle)
        if party is not None and not fresh and now < party.expires:
            return party
        try:
            record = await self.resolver.resolve(handle, fresh=fresh)
        except identifiers.HandleNotFound:
            return Quarantined("unknown", f"{handle}: no identifier record")
        except identifiers.NodeUnavailable as exc:
            raise Transient(f"identifier node: {exc}") from exc
        except identifiers.HandleError as exc:
            return Quarantined("unverifiable", f"{handle}: the node answered {exc}")
        template = record.first("GT_TEMPLATE")
        kind = template.text.split("/")[0] if template is not None else ""
        try:
            if kind == "gateway":
                parsed: Any = identifiers.GatewayRecord.from_record(record)
                key = Ed25519PublicKey.from_public_bytes(parsed.public_key)
                party = _Party(parsed, now + self._cache_seconds, key)
            elif kind == "device":
                party = _Party(
                    identifiers.DeviceRecord.from_record(record), now + self._cache_seconds
                )
            else:
                return Quarantined("unverifiable", f"{handle}: not a gateway or device record")
        except (ValueError, identifiers.HandleError) as exc:
            return Quarantined("unverifiable", f"{handle}: {exc}")
        self._parties[handle] = party
        return party

    async def _authenticate(  # noqa: PLR0911 - one return per refusal reads best
        self, env: Checked
    ) -> Quarantined | None:
        gw = await self._party(env.gateway)
        if isinstance(gw, Quarantined):
            reason = "unknown_gateway" if gw.reason == "unknown" else gw.reason
            return Quarantined(reason, gw.detail, env.gateway, env.seq)
        if gw.key is None:
            return Quarantined(
                "unverifiable", f"{env.gateway} is not a gateway", env.gateway, env.seq
            )
        try:
            env.verify(gw.key)
        except wire.SignatureError:
            # the key may have been replaced since it was cached: ask the node once more
            self.resolver.forget(env.gateway)
            fresh = await self._party(env.gateway, fresh=True)
            try:
                if isinstance(fresh, Quarantined) or fresh.key is None:
                    raise wire.SignatureError(env.gateway, env.seq, "no key")
                env.verify(fresh.key)
            except wire.SignatureError as exc:
                return Quarantined("bad_signature", str(exc), env.gateway, env.seq)
            gw = fresh
        if env.device is None:
            return None
        dev = await self._party(env.device)
        if isinstance(dev, Quarantined):
            reason = "unknown_device" if dev.reason == "unknown" else dev.reason
            return Quarantined(reason, dev.detail, env.gateway, env.seq)
        if dev.key is not None:
            return Quarantined("foreign_device", f"{env.device} is a gateway", env.gateway, env.seq)
        firm = gw.record.enterprise
        if dev.record.enterprise != firm:
            return Quarantined(
                "foreign_device",
                f"{env.device} belongs to {dev.record.enterprise}, the gateway to {firm}",
                env.gateway,
                env.seq,
            )
        if dev.record.gateway != env.gateway:
            return Quarantined(
                "foreign_device",
                f"{env.device} is read by {dev.record.gateway}, not {env.gateway}",
                env.gateway,
                env.seq,
            )
        return None

    # --- dimensions ---------------------------------------------------------------------------

    async def _gateway_id(self, gateway: str) -> int:
        gid = self._gateways.get(gateway)
        if gid is None:
            firm = self._parties[gateway].record.enterprise
            eid = self._enterprises.get(firm)
            if eid is None:
                eid = self._enterprises[firm] = await self._db(self.store.enterprise_id, firm)
            gid = self._gateways[gateway] = await self._db(self.store.gateway_id, gateway, eid)
        return gid

    async def _device_id(self, device: str, gateway: str, gateway_id: int) -> int:
        did = self._devices.get((device, gateway_id))
        if did is None:
            eid = self._enterprises[self._parties[gateway].record.enterprise]
            did = await self._db(self.store.device_id, device, eid, gateway_id)
            self._devices[(device, gateway_id)] = did
        return did

    async def _series(self, device_id: int, tags: set[str]) -> dict[str, int]:
        known = self._series_ids.setdefault(device_id, {})
        missing = tags - known.keys()
        if missing:
            known.update(await self._db(self.store.series_ids, device_id, sorted(missing)))
        return known

    # --- the chain ----------------------------------------------------------------------------

    async def _chain_of(self, gateway: str, gateway_id: int) -> _Chain:
        chain = self._chains.get(gateway)
        if chain is None:
            chain = _Chain(gateway_id)
            head = await self._db(self.store.head, gateway_id)
            if head is not None:
                chain.remember(head[0], head[1], head[2])
            self._chains[gateway] = chain
        return chain

    async def _known(self, chain: _Chain, seqs: list[int]) -> dict[int, tuple[bytes, bytes]]:
        found = {s: chain.recent[s] for s in seqs if s in chain.recent}
        ask = [s for s in seqs if s not in found and 0 < s <= chain.head]
        if ask:
            stored = await self._db(self.store.receipts, chain.gateway_id, ask)
            for seq, pair in stored.items():
                chain.remember(seq, *pair)
            found.update(stored)
        return found

    async def _series_of(
        self, topic: str, device: str, device_id: int, samples: Iterable[tuple[str, Any, ...]]
    ) -> dict[str, int]:
        """The series ids of a device's tags, shared with the decode stage (``known``) so that
        the device's next envelopes come packed."""
        tags = {s[0] for s in samples}
        series = await self._series(device_id, tags)
        shared = self.known.get(topic)
        if len(series) <= HAND_OVER_TAGS and (shared is None or not tags <= shared[1].keys()):
            # a copy: the worker's is sent while this one may grow
            self.known[topic] = (device, dict(series))
        return series

    def _take(self, env: Checked, gateway_id: int, series: dict[str, int], batch: Batch) -> int:
        """Put what an accepted envelope carries into the batch; return its sample count."""
        loss = env.loss
        if env.device is not None:
            if env.packed is None:
                batch.add_samples(env.samples, series)
            else:
                batch.add_packed(env.packed)
                self.stats.packed += 1
            return env.count
        if loss is not None:  # a loss declaration or a checkpoint: a receipt, no samples
            self.stats.losses += 1
            batch.events.append(
                (gateway_id, "loss", loss.first, loss.last, loss.samples, loss.reason, env.seq)
            )
        else:
            self.stats.checkpoints += 1
            batch.checkpoints.append(_checkpoints.rows(gateway_id, env))
        return 0

    async def _chain(self, msg: Message, env: Checked, batch: Batch) -> int | Quarantined:
        gateway_id = await self._gateway_id(env.gateway)
        chain = await self._chain_of(env.gateway, gateway_id)
        seq, digest = env.seq, env.digest
        known = await self._known(chain, [seq - 1, seq, seq + 1])
        if seq in known:
            if known[seq][0] == digest:
                self.stats.duplicates += 1
                return 0
            return Quarantined(
                "fork",
                f"seq {seq} was received with hash {known[seq][0].hex()}, "
                f"this one has {digest.hex()}",
                env.gateway,
                seq,
            )
        loss = env.loss
        series: dict[str, int] = {}
        device_id = None
        if env.device is not None:  # data; loss and checkpoint envelopes name no device
            device_id = await self._device_id(env.device, env.gateway, gateway_id)
            if env.packed is None:
                series = await self._series_of(msg.topic, env.device, device_id, env.samples)
        events = batch.events
        before = known.get(seq - 1)
        if (seq == 1 and env.prev != wire.GENESIS) or (
            before is not None and before[0] != env.prev
        ):
            self.stats.chain_breaks += 1
            events.append(
                (
                    gateway_id,
                    "chain_break",
                    seq,
                    seq,
                    None,
                    f"prev {env.prev.hex()} is not the hash of envelope {seq - 1}",
                    seq,
                )
            )
        after = known.get(seq + 1)
        if after is not None and after[1] != digest:
            self.stats.chain_breaks += 1
            events.append(
                (
                    gateway_id,
                    "chain_break",
                    seq + 1,
                    seq + 1,
                    None,
                    f"envelope {seq + 1} does not name envelope {seq} as prev",
                    seq,
                )
            )
        if seq > chain.head + 1:
            first, last = chain.head + 1, seq - 1
            declared = loss is not None and loss.first <= first and last <= loss.last
            if not declared:
                self.stats.gaps += 1
                events.append(
                    (
                        gateway_id,
                        "gap",
                        first,
                        last,
                        None,
                        f"envelopes {first}..{last} had not arrived when {seq} did",
                        seq,
                    )
                )
        count = self._take(env, gateway_id, series, batch)
        batch.receipts.append(
            (
                gateway_id,
                seq,
                digest,
                env.prev,
                True,
                int(env.kind),
                device_id,
                count,
                pg_us(env.created),
                pg_us(msg.received),
            )
        )
        chain.remember(seq, digest, env.prev)
        self.stats.accepted += 1
        return count
