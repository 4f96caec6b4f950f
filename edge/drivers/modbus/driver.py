"""The Modbus driver: polls devices over TCP, RTU over serial or RTU over TCP into samples.

:class:`ModbusDriver` is an async context manager that runs every group of every device at its
interval and puts a :class:`edge.Batch` per poll into a :class:`edge.SampleStream`;
:meth:`ModbusDriver.read_once` reads every group once, for ``guantong edge read --once``.

A device that stops answering is marked down once: one :class:`edge.ConnectivityEvent`, one
ERROR log line, then explicitly Bad samples for its groups at their usual ticks, without I/O,
until a jittered exponential backoff lets one poll try again; the first answer brings it back
(an event and an INFO line). A down device costs devices on other links nothing: each link
(one serial bus, one TCP endpoint) has its own polling tasks and lock; devices behind one link
take turns on it, as they must on the wire.

A request that the device refuses with "illegal data address" is split, once, into requests
without holes and then into single tags, and the split plan is kept: the driver learns which
holes a device cannot read through and stops reading them, and only a tag that is itself
unreadable stays Bad. A poll that could read nothing of the group forgets the splits.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from types import TracebackType

from edge._backoff import Backoff
from edge._deadband import ExceptionFilter, Rule
from edge._model import Device
from edge._samples import Batch, ConnectivityEvent, Sample, SampleStream, bad_samples
from edge._scheduler import GroupStats, run_every
from edge.drivers.modbus.config import DevicePlan, GroupPlan, compile_device, describe
from edge.drivers.modbus.connection import Link, link_key
from edge.drivers.modbus.errors import DeviceRefused, DeviceUnavailable, IllegalAddress
from edge.drivers.modbus.planner import Limits, Request, plan

logger = logging.getLogger(__name__)


@dataclass
class DeviceStats:
    polls: int = 0
    requests: int = 0
    samples: int = 0
    bad_samples: int = 0
    timeouts: int = 0
    refused: int = 0
    #: requests split after "illegal data address"
    splits: int = 0
    groups: dict[str, GroupStats] = field(default_factory=dict)


class DeviceReader:
    """Polls one device's groups on a shared :class:`Link`; never raises for device faults."""

    def __init__(
        self,
        plan: DevicePlan,
        link: Link,
        *,
        ns_clock: Callable[[], int] = time.time_ns,
        backoff: Backoff | None = None,
    ) -> None:
        self.plan = plan
        self.link = link
        self._clock = ns_clock
        self._monotonic = time.monotonic
        self.backoff = backoff or Backoff(
            initial=min(1.0, plan.connection.backoff_max), maximum=plan.connection.backoff_max
        )
        self.up = True
        self.down_reason = ""
        self._retry_at = 0.0
        self._requests = {g.name: list(g.requests) for g in plan.groups}
        self._unreadable_tags: set[str] = set()
        self.stats = DeviceStats()
        self.events: list[ConnectivityEvent] = []

    @property
    def name(self) -> str:
        return self.plan.name

    def requests(self, group: str) -> tuple[Request, ...]:
        """The requests a poll of ``group`` sends now, splits learnt so far included."""
        return tuple(self._requests[group])

    async def poll(self, group: GroupPlan) -> tuple[list[Sample], list[ConnectivityEvent]]:
        """One poll of a group: its samples (Bad for what could not be read) and the
        connectivity events it caused: the device went down, came back, or both."""
        self.stats.polls += 1
        if not self.up and self._monotonic() < self._retry_at:
            return self._bad(group.tag_names), []
        samples: list[Sample] = []
        events: list[ConnectivityEvent] = []
        bad_before = self.stats.bad_samples
        requests = self._requests[group.name]
        index = 0
        while index < len(requests):
            request = requests[index]
            try:
                payload = await self.link.read(
                    self.name,
                    self.plan.connection.unit_id,
                    request,
                    self.plan.connection.busy_retries,
                    self.plan.connection.busy_delay,
                )
            except IllegalAddress as exc:
                self._answered(events)
                replacement = self._split(request, exc)
                if replacement is None:
                    samples += self._bad([t.name for t in request.tags])
                    index += 1
                else:
                    requests[index : index + 1] = replacement
                continue
            except DeviceRefused as exc:
                self._answered(events)
                self.stats.refused += 1
                logger.debug("%s", exc)
                samples += self._bad([t.name for t in request.tags])
                index += 1
                continue
            except DeviceUnavailable as exc:
                self.stats.timeouts += 1
                self._went_down(exc, events)
                done = {s.tag for s in samples}
                samples += self._bad([n for n in group.tag_names if n not in done])
                return samples, events
            self.stats.requests += 1
            self._answered(events)
            read = request.samples(payload, self._clock())
            self.stats.samples += len(read)
            samples += read
            index += 1
        if len(samples) == self.stats.bad_samples - bad_before:
            # nothing of the group could be read: a device refusing everything for a while
            # (program mode, a fault) teaches nothing about its holes; forget the splits
            self._requests[group.name] = list(group.requests)
        return samples, events

    def _bad(self, tags: Iterable[str]) -> list[Sample]:
        bad = bad_samples(tuple(tags), self._clock())
        self.stats.samples += len(bad)
        self.stats.bad_samples += len(bad)
        return bad

    def _split(self, request: Request, exc: IllegalAddress) -> list[Request] | None:
        """Smaller requests to try instead, or None if the request is a single tag."""
        if len(request.tags) == 1:
            name = request.tags[0].name
            if name not in self._unreadable_tags:
                self._unreadable_tags.add(name)
                logger.warning("%s: tag %r cannot be read", exc, name)
            return None
        self.stats.splits += 1
        c = self.plan.connection
        parts = plan(request.tags, Limits(c.max_registers, c.max_bits, max_gap=0))
        if len(parts) == 1:  # no holes left to drop: read the tags one by one
            parts = [Request(request.table, t.address, t.count, (t,)) for t in request.tags]
        logger.info(
            "%s; reading fc%d %d+%d as %d requests from now on",
            exc,
            request.function_code,
            request.start,
            request.count,
            len(parts),
        )
        return parts

    def _answered(self, events: list[ConnectivityEvent]) -> None:
        if self.up:
            return
        self.up = True
        self.backoff.reset()
        logger.info("device %r is back (%s)", self.name, describe(self.plan.connection))
        event = ConnectivityEvent(self.name, up=True, ts=self._clock())
        self.events.append(event)
        events.append(event)

    def _went_down(self, exc: DeviceUnavailable, events: list[ConnectivityEvent]) -> None:
        delay = self.backoff.next_delay()
        self._retry_at = self._monotonic() + delay
        if not self.up:
            logger.debug("%s; still down, next try in %.1fs", exc, delay)
            return
        self.up = False
        self.down_reason = str(exc)
        logger.error("%s; device down, retrying with backoff", exc)
        event = ConnectivityEvent(self.name, up=False, ts=self._clock(), reason=str(exc))
        self.events.append(event)
        events.append(event)


def _rules(device: Device) -> dict[str, Rule]:
    return {
        tag.name: Rule(tag.deadband, tag.deadband_percent, tag.max_silence)
        for group in device.groups
        for tag in group.tags
    }


class ModbusDriver:
    """Reads many Modbus devices; one link per endpoint, one task per group.

    Use as ``async with ModbusDriver(devices, stream) as driver:``; leaving the block stops the
    polls and closes every connection.
    """

    def __init__(
        self,
        devices: Iterable[Device],
        stream: SampleStream | None = None,
        *,
        ns_clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.stream = stream
        self.links: dict[tuple[object, ...], Link] = {}
        self.readers: list[DeviceReader] = []
        self._filters: dict[str, ExceptionFilter] = {}
        for device in devices:
            device_plan = compile_device(device)
            key = link_key(device_plan.connection)
            link = self.links.setdefault(key, Link(device_plan.connection))
            self.readers.append(DeviceReader(device_plan, link, ns_clock=ns_clock))
            self._filters[device.name] = ExceptionFilter(_rules(device))
        self._by_name = {reader.name: reader for reader in self.readers}
        #: timing of each polling task, by link and interval
        self.schedule_stats: dict[str, GroupStats] = {}
        self._group: asyncio.TaskGroup | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> ModbusDriver:
        """Start one polling task per link and interval.

        Groups of one link are polled one after the other at each tick, not by a task each:
        they would queue for the link's lock anyway, and thousands of tasks waking on every
        tick to wait in that queue cost more CPU than the reads.
        """
        if self.stream is None:
            raise ValueError("running the driver needs a stream to put samples into")
        buckets: dict[tuple[int, float], list[tuple[DeviceReader, GroupPlan]]] = {}
        for reader in self.readers:
            for group in reader.plan.groups:
                reader.stats.groups[group.name] = GroupStats()
                buckets.setdefault((id(reader.link), group.interval), []).append((reader, group))
        self._group = asyncio.TaskGroup()
        await self._group.__aenter__()
        for (_, interval), members in buckets.items():
            link = members[0][0].link
            stats = self.schedule_stats.setdefault(
                f"{link.endpoint} every {interval:g}s", GroupStats()
            )
            task = self._group.create_task(
                run_every(
                    interval,
                    self._poller(members),
                    stats,
                    overruns_to=[r.stats.groups[g.name] for r, g in members],
                ),
                name=f"modbus {link.endpoint} every {interval:g}s",
            )
            self._tasks.append(task)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self._group is not None:
                # Python 3.11's wait_for (inside pymodbus) loses a cancellation that arrives
                # as the answer does: cancel until every task has really stopped
                pending = set(self._tasks)
                while pending:
                    for task in pending:
                        task.cancel()
                    _, pending = await asyncio.wait(pending, timeout=0.2)
                await self._group.__aexit__(None, None, None)
        finally:
            self._group = None
            self._tasks = []
            self.close()

    def close(self) -> None:
        for link in self.links.values():
            link.close()

    def _poller(
        self, members: list[tuple[DeviceReader, GroupPlan]]
    ) -> Callable[[float], Coroutine[None, None, None]]:
        stream = self.stream
        assert stream is not None  # noqa: S101 - checked in __aenter__

        async def poll(tick: float) -> None:
            for reader, group in members:
                started = time.time()
                samples, events = await reader.poll(group)
                for event in events:
                    await stream.put(event)
                selected = self._filters[reader.name].select(samples)
                if selected:
                    await stream.put(Batch(reader.name, group.name, tuple(selected)))
                reader.stats.groups[group.name].record(time.time() - started, started - tick)

        return poll

    async def read_once(self) -> list[Batch | ConnectivityEvent]:
        """Every group of every device once; no deadband applied.

        Links are read concurrently, the devices of one link one after the other: they would
        queue for its lock anyway, and a queue of thousands of waiters costs more CPU than the
        reads.
        """
        by_link: dict[int, list[DeviceReader]] = {}
        for reader in self.readers:
            by_link.setdefault(id(reader.link), []).append(reader)

        async def one_link(readers: list[DeviceReader]) -> list[Batch | ConnectivityEvent]:
            out: list[Batch | ConnectivityEvent] = []
            for reader in readers:
                for group in reader.plan.groups:
                    samples, events = await reader.poll(group)
                    out += events
                    out.append(Batch(reader.name, group.name, tuple(samples)))
            return out

        results = await asyncio.gather(*(one_link(rs) for rs in by_link.values()))
        order = {id(r): i for i, r in enumerate(self.readers)}
        items = [item for chunk in results for item in chunk]
        return sorted(items, key=lambda item: order[id(self._by_name[item.device])])
