"""From edge batches to signed envelopes committed in the outbox.

Samples are gathered per device; an envelope is cut when a device has ``max_samples`` waiting
or its oldest waiting sample is ``max_delay`` old. One committer task numbers, chains, signs and
commits everything that is ready in one outbox transaction, so a busy gateway pays one fsync
for many envelopes, and the chain head advances in the same transaction as the envelopes
(a crash can neither reuse nor skip a sequence number).

When the outbox is full it drops its oldest envelopes and records the dropped range; the
writer declares it in a signed loss envelope once the dropping stops, and at least every
``declare_every`` seconds while it goes on (so a long outage yields a few loss envelopes, not
one per commit), and at every start and stop. Until a declaration is committed the range stays
recorded in the outbox, so a crash in between only delays the declaration.

Backpressure: at most ``max_ready`` envelopes wait for the committer; beyond that the
consumer stops taking batches from the sample stream, whose producers (the drivers) then wait.

With a ``checkpoint_interval`` the committer also counts every committed sample per series
and period (``gateway._attest``, in the same transaction) and, once a period is over, commits
the signed checkpoint that attests the counts.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge import Batch, ConnectivityEvent, SampleStream
from edge import Quality as EdgeQuality
from edge import Sample as EdgeSample
from gateway import protocol
from gateway._attest import Attested, Attestor
from gateway._outbox import Dropped, Head, Outbox, OutboxDiskFull, OutboxError

logger = logging.getLogger(__name__)

_QUALITY = {q: protocol.Quality[q.name] for q in EdgeQuality}
#: the chain head of a gateway that has committed nothing yet
_ORIGIN = Head(0, protocol.GENESIS)
#: bytes per outbox transaction while the outbox refuses commits
_SMALL_COMMIT = 256 << 10
#: the JSON bytes a checkpoint stays within, well below the contract's 1 MiB: 10,000 counts
#: of names some 20 bytes long take about 0.4 MB, and an envelope near 1 MiB would not pass
#: Kafka's default limits (1 MiB a request in aiokafka, 1,048,588 bytes a message in Kafka)
#: on a platform that bridges MQTT to Kafka. Longer names: fewer counts a checkpoint.
CHECKPOINT_BYTES = 640 << 10
#: counts read at once for the checkpoints of one end: five checkpoints' worth (≈15 MB)
_READ_AHEAD = 5 * protocol.MAX_SAMPLES
#: seconds between tries while the disk is full: a refusal costs a statvfs and a checkpoint
#: of an empty WAL, and acknowledgements may free room at any moment
_DISK_FULL_RETRY = 0.5


class _Unfinished(Exception):
    """The outbox refused a commit; ``rest`` is what is still to be committed."""

    def __init__(self, rest: list[tuple[str, list[protocol.Sample]]]) -> None:
        self.rest = rest
        super().__init__(f"{len(rest)} envelopes' worth of samples not committed")


def to_wire(sample: EdgeSample) -> protocol.Sample:
    """The envelope form of an edge sample (docs/protocol.md: numbers are doubles, no NaN)."""
    value = sample.value
    quality = _QUALITY[sample.quality]
    if isinstance(value, bytes):
        value = value.hex()
    elif isinstance(value, float) and not math.isfinite(value):
        value = None
        quality = max(quality, protocol.Quality.UNCERTAIN)
    elif type(value) is int and abs(value) > protocol.MAX_EXACT_INT:
        value = str(value)
    return protocol.Sample(sample.tag, sample.ts // 1000, value, quality)


@dataclass
class WriterStats:
    envelopes: int = 0
    samples: int = 0
    commits: int = 0
    losses: int = 0
    checkpoints: int = 0
    dropped_envelopes: int = 0
    device_events: int = 0
    #: commits the outbox refused (disk full, I/O error), retried later
    commit_errors: int = 0
    #: per device name: False after a "down" event, True after an "up" event
    device_up: dict[str, bool] = field(default_factory=dict)


class EnvelopeWriter:
    """Async context manager: while open, :meth:`consume` turns batches into outbox entries."""

    def __init__(
        self,
        outbox: Outbox,
        key: Ed25519PrivateKey,
        gateway: str,
        devices: Mapping[str, str],
        *,
        max_samples: int = 500,
        max_delay: float = 0.2,
        max_ready: int = 256,
        declare_every: float = 60.0,
        checkpoint_interval: float | None = None,
        on_commit: Callable[[], None] = lambda: None,
        on_device: Callable[[str, bool], None] = lambda _device, _up: None,
    ) -> None:
        self._outbox = outbox
        self._key = key
        self._gateway = gateway
        self._devices = dict(devices)  # device name in the config → identifier
        self._max_samples = max_samples
        self._max_delay = max_delay
        self._max_ready = max_ready
        self._declare_every = declare_every
        self._declared_at = -math.inf
        self._on_commit = on_commit
        self._on_device = on_device
        self._buffers: dict[str, list[protocol.Sample]] = {}
        self._since: dict[str, float] = {}  # device → monotonic time of its oldest sample
        self._ready: list[tuple[str, list[protocol.Sample]]] = []
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._head = _ORIGIN  # the last envelope sealed
        self._committed = _ORIGIN  # the last envelope committed
        self._dropping = False
        self._failing = 0  # commits the outbox refused in a row
        self._closing = False
        self._interval = checkpoint_interval
        self._attestor: Attestor | None = None
        self._attested: Attested | None = None
        #: the counts due at an end, read ahead for its partial checkpoints, less those taken
        self._ahead: tuple[int, list[tuple[int, int, str, str, int]]] | None = None
        self.stats = WriterStats()

    async def __aenter__(self) -> EnvelopeWriter:
        self._head = self._committed = await asyncio.to_thread(self._outbox.head) or _ORIGIN
        if self._interval is not None:
            self._attestor = Attestor(
                self._interval,
                await asyncio.to_thread(self._outbox.last_ts),
                now=time.time_ns() // 1000,
                grace=max(1_000_000, round(2 * self._max_delay * 1_000_000)),
            )
            self._attested = await asyncio.to_thread(self._outbox.attested)
        await asyncio.to_thread(self._settle_losses)
        self._task = asyncio.create_task(self._commit_loop(), name="envelope-committer")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Commit everything still buffered (a clean stop loses nothing), then stop.

        The committer finishes on its own rather than being cancelled: a commit already handed
        to a worker thread cannot be called back, and a second one must not run beside it.
        """
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def consume(self, stream: SampleStream) -> None:
        """Take batches until the stream is closed and drained."""
        async for item in stream:
            if isinstance(item, ConnectivityEvent):
                self.stats.device_events += 1
                if self.stats.device_up.get(item.device, True) != item.up:
                    self._on_device(self._devices[item.device], item.up)
                self.stats.device_up[item.device] = item.up
                continue
            self.add(item)
            while len(self._ready) >= self._max_ready:
                self._room.clear()
                await self._room.wait()

    def add(self, batch: Batch) -> None:
        device = self._devices[batch.device]
        buffer = self._buffers.setdefault(device, [])
        if not buffer:
            self._since[device] = time.monotonic()
        buffer.extend(to_wire(s) for s in batch.samples)
        if len(buffer) >= self._max_samples:
            self._cut(device, whole_only=True)

    def _cut(self, device: str, *, whole_only: bool = False) -> None:
        """Move the device's samples to the committer in envelopes of ``max_samples``.

        ``whole_only`` keeps a remainder buffered, to be filled up by the next batches.
        """
        buffer = self._buffers.pop(device, [])
        size = self._max_samples
        end = len(buffer) - len(buffer) % size if whole_only else len(buffer)
        for start in range(0, end, size):
            self._ready.append((device, buffer[start : start + size]))
        if end < len(buffer):
            self._buffers[device] = buffer[end:]  # its oldest sample's clock keeps running
        else:
            self._since.pop(device, None)
        self._wake.set()

    def _take_ready(self) -> list[tuple[str, list[protocol.Sample]]]:
        ready, self._ready = self._ready, []
        self._room.set()
        return ready

    async def _commit_loop(self) -> None:
        while True:
            now = time.monotonic()
            for device, since in list(self._since.items()):
                if self._closing or now - since >= self._max_delay:
                    self._cut(device)
            if self._ready:
                try:
                    await asyncio.to_thread(self._commit, self._take_ready())
                except _Unfinished as failed:
                    await self._retry_later(failed)
                    continue
                if self._failing:
                    logger.info("the outbox takes envelopes again")
                    self._failing = 0
                self._on_commit()
            if self._closing and not self._ready and not self._buffers:
                await asyncio.to_thread(self._settle_losses)
                return
            if self._attestor is not None:
                await self._checkpoint_if_due(self._attestor)
            oldest = min(self._since.values(), default=None)
            timeout = self._max_delay if oldest is None else oldest + self._max_delay - now
            if self._attestor is not None:
                due = self._attestor.next_due(self._attested) - time.time_ns() // 1000
                timeout = min(timeout, due / 1_000_000)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(timeout, 0.001))

    async def _retry_later(self, failed: _Unfinished) -> None:
        """Put back what the outbox refused and wait before the next try (disk full clears
        when space is freed); meanwhile the full queue holds the drivers back."""
        self._ready[:0] = failed.rest
        self.stats.commit_errors += 1
        if self._closing:
            left = sum(len(samples) for _, samples in self._ready)
            logger.error("stopping with %d samples the outbox would not take", left)
            raise failed.__cause__ or failed
        full = isinstance(failed.__cause__, OutboxDiskFull)
        if not self._failing:
            left = sum(len(samples) for _, samples in self._ready)
            if full:
                logger.error(
                    "%s; holding %d samples (and the drivers) back until acknowledged "
                    "envelopes free room",
                    failed.__cause__,
                    left,
                )
            else:
                logger.error("the outbox refuses envelopes (%s); retrying", failed.__cause__)
        self._failing += 1
        if full:
            await asyncio.sleep(_DISK_FULL_RETRY)
        else:
            await asyncio.sleep(min(30.0, 0.25 * 2 ** min(self._failing, 7)))

    async def _checkpoint_if_due(self, attestor: Attestor) -> None:
        end = attestor.due(time.time_ns() // 1000, self._attested)
        if end is None:
            return
        try:
            await asyncio.to_thread(self._attest, attestor, end)
        except OutboxError as exc:
            # once per episode: a full disk is already reported by the refused commits
            log = logger.debug if self._failing or self._outbox.disk_full else logger.error
            log("the outbox refuses the checkpoint to %d (%s); retrying", end, exc)
            await asyncio.sleep(1.0)
            return
        self._on_commit()

    # -- in a worker thread: build, sign, commit --------------------------------------------------

    def _seal(self, envelope: protocol.Envelope, samples: int) -> tuple[int, str, bytes, int]:
        payload = protocol.encode_json(protocol.sign(envelope, self._key))
        self._head = Head(envelope.seq, envelope.digest)
        return envelope.seq, protocol.envelope_topic(envelope), payload, samples

    def _data_rows(
        self, device: str, samples: list[protocol.Sample]
    ) -> list[tuple[int, str, bytes, int]]:
        """Envelopes for ``samples``, halved until each encodes within the payload limit."""
        created = time.time_ns() // 1000
        head = self._head
        envelope = protocol.Envelope(
            self._gateway, head.seq + 1, head.hash, created, device, tuple(samples)
        )
        try:
            return [self._seal(envelope, len(samples))]
        except protocol.EnvelopeTooLarge:
            if len(samples) == 1:
                raise
        half = len(samples) // 2
        return self._data_rows(device, samples[:half]) + self._data_rows(device, samples[half:])

    def _commit(self, ready: list[tuple[str, list[protocol.Sample]]]) -> None:
        """Seal ``ready`` and commit it in transactions of at most a quarter of the outbox.

        If the outbox refuses (disk full, I/O error), :class:`_Unfinished` carries the part
        of ``ready`` that is not committed, to be tried again.
        """
        rows: list[tuple[int, str, bytes, int]] = []
        size = done = 0
        # after a refusal (a full disk), commit in small transactions: SQLite writes a
        # transaction to the WAL first, and a big one may never find that much room, while
        # small ones fit in the pages acknowledged envelopes freed
        limit = self._outbox.max_bytes // 4 if not self._failing else _SMALL_COMMIT
        # and never more than a quarter of the disk's free room: a transaction passes through
        # the WAL, and near full the outbox refuses one that would eat into its reserve
        limit = min(limit, max(_SMALL_COMMIT, self._outbox.free_bytes() // 4))
        try:
            for i, (device, samples) in enumerate(ready):
                new = self._data_rows(device, samples)
                rows += new
                size += sum(len(r[2]) for r in new)
                if size > limit or i == len(ready) - 1:
                    self._append(rows, ready[done : i + 1])
                    rows, size, done = [], 0, i + 1
        except OutboxError as exc:
            self._head = self._committed  # what was sealed and not committed is numbered anew
            raise _Unfinished(ready[done:]) from exc
        if self._outbox.losses() and (
            not self._dropping or time.monotonic() - self._declared_at >= self._declare_every
        ):
            try:
                self._settle_losses()
            except OutboxError as exc:  # the ranges stay recorded: declared after a later commit
                logger.debug("loss declaration deferred: %s", exc)

    def _append(
        self,
        rows: list[tuple[int, str, bytes, int]],
        counted: list[tuple[str, list[protocol.Sample]]],
    ) -> None:
        attestor = self._attestor
        tally = None if attestor is None else attestor.tally(counted)
        try:
            dropped = self._outbox.append(rows, self._head, tally=tally)
        except BaseException:
            self._head = self._committed  # nothing was committed: the numbers are free again
            raise
        if attestor is not None and tally is not None:
            attestor.committed(tally)
        self._committed = self._head
        self._dropping = bool(dropped)
        self.stats.commits += 1
        self.stats.envelopes += len(rows)
        self.stats.samples += sum(r[3] for r in rows)

    def _settle_losses(self) -> None:
        """Commit one loss envelope for every dropped range not yet declared."""
        pending = self._outbox.losses()
        if not pending:
            return
        rows = [self._loss_row(d) for d in pending]
        try:
            self._outbox.append(rows, self._head, settles=pending)
        except BaseException:
            self._head = self._committed
            raise
        self._committed = self._head
        self._declared_at = time.monotonic()
        for d in pending:
            logger.error(
                "outbox full: dropped envelopes %d..%d (%d samples), declared as lost",
                d.first,
                d.last,
                d.samples,
            )
        self.stats.losses += len(pending)
        self.stats.dropped_envelopes += sum(d.count for d in pending)

    def _attest(self, attestor: Attestor, end: int) -> None:
        """Commit the next checkpoint of ``end``: the closing one if it holds the counts of
        every period over by then, else a partial one (the next step makes the next)."""
        limit = protocol.MAX_SAMPLES
        rows = self._due(end, limit)
        head = self._head
        while True:
            checkpoint, taken = attestor.checkpoint(end, self._attested, rows, limit)
            envelope = protocol.Envelope(
                self._gateway, head.seq + 1, head.hash, time.time_ns() // 1000,
                checkpoint=checkpoint,
            )  # fmt: skip
            try:
                row: tuple[int, str, bytes, int] | None = self._seal(envelope, 0)
            except protocol.EnvelopeTooLarge:
                row = None
            if row is not None and len(row[2]) <= CHECKPOINT_BYTES:
                break
            if limit == 1:  # a count is at most some 64 kB of names: cannot happen
                size = protocol.MAX_PAYLOAD_BYTES + 1 if row is None else len(row[2])
                raise protocol.EnvelopeTooLarge("checkpoint", size, CHECKPOINT_BYTES)
            self._head = head  # long names: fewer counts, more partial checkpoints
            limit //= 2
        attested = attestor.attested(self._attested, envelope)
        try:
            self._outbox.append([row], self._head, attests=(attested, taken))
        except BaseException:
            self._head = self._committed
            raise
        self._committed = self._head
        self._attested = attested
        if checkpoint.partial:
            self._ahead = (end, _rest(rows, taken))
        attestor.restarted = False
        self.stats.checkpoints += 1
        logger.debug(
            "%s checkpoint #%d to %d: %d samples of %d series",
            "partial" if checkpoint.partial else "closing",
            envelope.seq,
            end,
            checkpoint.samples,
            len(taken),
        )

    def _due(self, end: int, limit: int) -> list[tuple[int, int, str, str, int]]:
        """The counts due at ``end``, in contract order: the rest of those read ahead for the
        checkpoints of ``end`` while more than ``limit`` are left (the next checkpoint is a
        partial one; a count grown since it was read shows, as the difference, in a later
        read), else read anew, so that the closing checkpoint holds every count due when it
        is made. One read of the outbox's counts is its whole journal (≈0.2 s at 100,000
        series): not one per checkpoint."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[0] == end and len(ahead[1]) > limit:
            return ahead[1]
        return self._outbox.counts(end, _READ_AHEAD + 1)

    def _loss_row(self, dropped: Dropped) -> tuple[int, str, bytes, int]:
        loss = protocol.Loss(dropped.first, dropped.last, dropped.samples, "outbox full")
        head, created = self._head, time.time_ns() // 1000
        envelope = protocol.Envelope(self._gateway, head.seq + 1, head.hash, created, loss=loss)
        return self._seal(envelope, 0)


def _rest(
    rows: list[tuple[int, int, str, str, int]], taken: list[tuple[int, int, str, str, int]]
) -> list[tuple[int, int, str, str, int]]:
    """``rows`` without ``taken``, a subsequence of them (both sorted, each row once)."""
    if not taken:
        return rows
    cut = bisect.bisect_right(rows, taken[-1])
    gone = set(taken)
    return [row for row in rows[:cut] if row not in gone] + rows[cut:]
