"""The OPC UA driver: polls or subscribes to servers into samples.

:class:`OpcUaDriver` is an async context manager with the shape of
:class:`edge.drivers.modbus.ModbusDriver`: it runs every device and puts a
:class:`edge.Batch` per poll (or per publish, in subscribe mode) into a
:class:`edge.SampleStream`; :meth:`OpcUaDriver.read_once` reads every group once, for
``guantong edge read --once``.

Each device has a supervisor task that owns its session: it connects, subscribes (in
subscribe mode), waits for the session to die (asyncua's watchdog, a failed request, a Bad
subscription status) and reconnects after a jittered exponential backoff, with a new session
and new subscriptions, since after a server restart there is nothing left to resume. A device
that goes down gives one :class:`edge.ConnectivityEvent` and one ERROR line, then explicitly
Bad samples for each of its groups at the group's interval until it is back (an event and an
INFO line). Devices never wait for each other: each has its own session and tasks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType

from edge._backoff import Backoff
from edge._deadband import ExceptionFilter
from edge._model import Device
from edge._samples import Batch, ConnectivityEvent, Sample, SampleStream, bad_samples
from edge._scheduler import GroupStats, run_every
from edge.drivers.opcua.config import DevicePlan, GroupPlan, compile_device, describe
from edge.drivers.opcua.errors import DeviceUnavailable, OpcUaError
from edge.drivers.opcua.session import Session

logger = logging.getLogger(__name__)

Item = Batch | ConnectivityEvent
#: seconds a session must have lived for the backoff to start again from its shortest wait:
#: a server that accepts sessions and drops them at once is retried ever more slowly
STABLE = 10.0
Emit = Callable[[Item], Awaitable[None]]


@dataclass
class DeviceStats:
    polls: int = 0
    read_requests: int = 0
    #: publish responses' samples (subscribe mode)
    notifications: int = 0
    samples: int = 0
    bad_samples: int = 0
    sessions: int = 0
    groups: dict[str, GroupStats] = field(default_factory=dict)


class DeviceReader:
    """One device's session, supervised; never raises for device faults."""

    def __init__(
        self,
        plan: DevicePlan,
        *,
        ns_clock: Callable[[], int] = time.time_ns,
        backoff: Backoff | None = None,
    ) -> None:
        self.plan = plan
        self._clock = ns_clock
        maximum = plan.connection.backoff_max
        self.backoff = backoff or Backoff(initial=min(0.5, maximum), maximum=maximum)
        self.up = True
        self.down_reason = ""
        self.session: Session | None = None
        self.stats = DeviceStats()
        self.events: list[ConnectivityEvent] = []
        #: subscribe mode: the last sample of each tag, for tags with ``max_silence``
        self.latest: dict[str, Sample] = {}
        #: set once the first connection attempt has ended, either way
        self.settled = asyncio.Event()

    @property
    def name(self) -> str:
        return self.plan.name

    @property
    def subscribing(self) -> bool:
        return self.plan.connection.mode == "subscribe"

    async def supervise(
        self, emit: Emit, on_samples: Callable[[GroupPlan, list[Sample]], Awaitable[None]]
    ) -> None:
        """Keep a session open (and subscribed) until cancelled."""
        try:
            while True:
                session = Session(self.plan, ns_clock=self._clock)
                try:
                    await session.open()
                    if self.subscribing:
                        await session.subscribe(self.plan.groups, on_samples)
                except OpcUaError as exc:
                    await session.close()
                    await self._went_down(str(exc), emit)
                    self.settled.set()
                    await asyncio.sleep(self.backoff.next_delay())
                    continue
                self.stats.sessions += 1
                opened = time.monotonic()
                self.session = session
                await self._answered(emit)
                for group in self.plan.groups:
                    if refused := session.refused.get(group.name):
                        await emit(Batch(self.name, group.name, tuple(self._bad(refused))))
                session.release()
                self.settled.set()
                await session.lost.wait()
                self.session = None
                await session.close()
                await self._went_down(session.lost_reason, emit)
                if time.monotonic() - opened >= STABLE:
                    self.backoff.reset()
                await asyncio.sleep(self.backoff.next_delay())
        finally:
            if self.session is not None:
                session, self.session = self.session, None
                await session.close()

    async def poll(self, group: GroupPlan) -> tuple[list[Sample], ConnectivityEvent | None]:
        """One poll of a group: Bad samples, without I/O, while the device is down."""
        self.stats.polls += 1
        await self.settled.wait()
        session = self.session
        if session is None or not self.up:
            return self._bad(group.tag_names), None
        before = session.read_requests
        try:
            samples = await session.read(group)
        except OpcUaError as exc:
            event = self._down(str(exc))
            return self._bad(group.tag_names), event
        finally:
            self.stats.read_requests += session.read_requests - before
        self.stats.samples += len(samples)
        return samples, None

    def _bad(self, tags: Iterable[str]) -> list[Sample]:
        bad = bad_samples(tuple(tags), self._clock())
        self.stats.samples += len(bad)
        self.stats.bad_samples += len(bad)
        return bad

    async def _answered(self, emit: Emit) -> None:
        if self.up:
            return
        self.up = True
        logger.info("device %r is back (%s)", self.name, describe(self.plan.connection))
        event = ConnectivityEvent(self.name, up=True, ts=self._clock())
        self.events.append(event)
        await emit(event)

    async def _went_down(self, reason: str, emit: Emit) -> None:
        event = self._down(reason)
        if event is not None:
            await emit(event)

    def _down(self, reason: str) -> ConnectivityEvent | None:
        """Mark the device down; the event if it was up (a poll and the supervisor may both
        see the same failure: only the first one reports it)."""
        if not self.up:
            logger.debug("device %r still down: %s", self.name, reason)
            return None
        self.up = False
        self.down_reason = reason
        logger.error("%s; device down, reconnecting with backoff", reason)
        event = ConnectivityEvent(self.name, up=False, ts=self._clock(), reason=reason)
        self.events.append(event)
        return event


class OpcUaDriver:
    """Reads many OPC UA devices; one session and one supervisor task per device.

    Use as ``async with OpcUaDriver(devices, stream) as driver:``; leaving the block stops
    every task and closes every session.
    """

    def __init__(
        self,
        devices: Iterable[Device],
        stream: SampleStream | None = None,
        *,
        ns_clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.stream = stream
        self._clock = ns_clock
        self.readers: list[DeviceReader] = []
        self._filters: dict[str, ExceptionFilter] = {}
        for device in devices:
            plan = compile_device(device)
            self.readers.append(DeviceReader(plan, ns_clock=ns_clock))
            self._filters[device.name] = ExceptionFilter(plan.rules())
        self._group: asyncio.TaskGroup | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def __aenter__(self) -> OpcUaDriver:
        if self.stream is None:
            raise ValueError("running the driver needs a stream to put samples into")
        self._group = asyncio.TaskGroup()
        await self._group.__aenter__()
        for reader in self.readers:
            self._tasks.append(
                self._group.create_task(
                    reader.supervise(self._emit, self._publisher(reader)),
                    name=f"opcua {reader.name}",
                )
            )
            for group in reader.plan.groups:
                stats = reader.stats.groups.setdefault(group.name, GroupStats())
                self._tasks.append(
                    self._group.create_task(
                        run_every(group.interval, self._poller(reader, group), stats),
                        name=f"opcua {reader.name}/{group.name}",
                    )
                )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._group is None:
            return
        try:
            for task in self._tasks:
                task.cancel()
            await self._group.__aexit__(None, None, None)
        finally:
            self._group = None
            self._tasks = []

    async def _emit(self, item: Item) -> None:
        assert self.stream is not None  # noqa: S101 - checked in __aenter__
        await self.stream.put(item)

    def _poller(self, reader: DeviceReader, group: GroupPlan) -> Callable[..., Awaitable[None]]:
        rbe = self._filters[reader.name]
        silent = [tag.name for tag in group.tags if tag.max_silence is not None]

        async def poll(tick: float | None = None) -> None:
            if reader.subscribing:  # notifications bring the data; ticks mark outages and
                await reader.settled.wait()  # keep quiet tags alive
                if reader.up:
                    if silent:
                        await self._still(reader, group, silent)
                    return
            samples, event = await reader.poll(group)
            if event is not None:
                await self._emit(event)
            selected = rbe.select(samples)
            if selected:
                await self._emit(Batch(reader.name, group.name, tuple(selected)))

        return poll

    async def _still(self, reader: DeviceReader, group: GroupPlan, silent: list[str]) -> None:
        """A subscription says nothing while a value stays put, so a tag with ``max_silence``
        would never be sent again: its last value is offered at every tick, stamped now
        (no source time: the server did not send it again, the live subscription vouches
        that it still holds), and the report-by-exception filter passes it once the tag has
        been silent for ``max_silence``."""
        now = self._clock()
        offered = [
            Sample(name, last.value, last.quality, now)
            for name in silent
            if (last := reader.latest.get(name)) is not None
        ]
        if selected := self._filters[reader.name].select(offered):
            await self._emit(Batch(reader.name, group.name, tuple(selected)))

    def _publisher(
        self, reader: DeviceReader
    ) -> Callable[[GroupPlan, list[Sample]], Awaitable[None]]:
        rbe = self._filters[reader.name]
        stats = reader.stats
        watched = {
            tag.name for g in reader.plan.groups for tag in g.tags if tag.max_silence is not None
        }

        async def publish(group: GroupPlan, samples: list[Sample]) -> None:
            stats.notifications += len(samples)
            stats.samples += len(samples)
            if watched:
                for sample in samples:
                    if sample.tag in watched:
                        reader.latest[sample.tag] = sample
            selected = rbe.select(samples)
            if selected:
                await self._emit(Batch(reader.name, group.name, tuple(selected)))

        return publish

    async def read_once(self) -> list[Item]:
        """Every group of every device once, devices concurrently, with one Read session each
        (also for devices in subscribe mode); no deadband applied."""

        async def one(reader: DeviceReader) -> list[Item]:
            out: list[Item] = []
            session = Session(reader.plan, ns_clock=self._clock)
            try:
                await session.open()
                for group in reader.plan.groups:
                    samples = await session.read(group)
                    reader.stats.samples += len(samples)
                    reader.stats.read_requests = session.read_requests
                    out.append(Batch(reader.name, group.name, tuple(samples)))
            except OpcUaError as exc:
                event = reader._down(str(exc))
                if event is not None:
                    out.append(event)
                done = {item.group for item in out if isinstance(item, Batch)}
                for group in reader.plan.groups:
                    if group.name not in done:
                        out.append(
                            Batch(reader.name, group.name, tuple(reader._bad(group.tag_names)))
                        )
            finally:
                await session.close()
            return out

        results = await asyncio.gather(*(one(r) for r in self.readers))
        return [item for items in results for item in items]


__all__ = ["DeviceReader", "DeviceStats", "DeviceUnavailable", "OpcUaDriver"]
