"""The running ingest: source → bounded queue → verifier → batch → store → acknowledgement.

The source is the MQTT consumer (``ingest run``) or a Kafka consumer group (``ingest sink``);
the rest is one pipeline.

One pipeline task builds a batch (verifying messages as they arrive) while the previous batch
is written in a worker thread; a batch is acknowledged to the broker only after its commit. A
batch that cannot be written because the database is away is retried as it is, with backoff,
until it commits: its verification stays valid because a failed transaction changed nothing.
If the connection broke during COMMIT, the retry first checks whether the batch is already
there. Meanwhile the queue fills and the broker holds the rest.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import logging
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg

import identifiers
from common import HttpServer
from ingest import _schema
from ingest._consumer import Consumer
from ingest._decode import Checked, Refused, precheck_many, watch_parent
from ingest._health import create_app
from ingest._kafka import KafkaSource
from ingest._source import Source
from ingest._store import Batch, Store
from ingest._verify import Message, Quarantined, Transient, Verifier
from ingest.config import IngestConfig, SinkConfig

logger = logging.getLogger(__name__)

_BACKOFF_MAX = 5.0
#: messages taken from the queue at once: handed to a decode worker together (one round trip
#: between processes), and their senders looked up ahead (``Verifier.prefetch``)
_CHUNK = 16
#: times a batch is verified again after its receipts met receipts another ingest stored
_REVERIFY = 3

Pre = Checked | Refused | str | None


@dataclass
class PipelineStats:
    messages: int = 0
    rows: int = 0
    batches: int = 0
    conflict_batches: int = 0
    commit_seconds: float = 0.0
    write_retries: int = 0
    #: database or identifier node operations that failed and were waited out
    waits: int = 0
    #: seconds from receiving the oldest message of the last batch to its commit
    lag_seconds: float = 0.0
    #: newest sample time committed, µs since the Unix epoch
    newest_sample: int = 0
    database_up: bool = False
    last_error: str | None = None


def migrate(dsn: str, *, compress_after: float = 7 * 86400.0) -> list[int]:
    """Apply missing migrations to the database at ``dsn`` (``guantong ingest migrate``)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        return _schema.migrate(conn, compress_after=compress_after)


@contextlib.contextmanager
def _main_module_hidden() -> Iterator[None]:
    """Start spawned workers without re-running the program's ``__main__`` in them.

    A spawned process imports the parent's main module (by module name or file) before it
    runs anything, and ``python -m guantong`` or the ``guantong`` script would run the whole
    command again there. The workers need nothing from it: they import ``ingest._decode``.
    A spawning ProcessPoolExecutor starts a worker on a ``submit`` that finds none idle, so
    as many submits in a row as there are workers start them all, here, at once.
    """
    main = sys.modules["__main__"]
    saved = {
        name: main.__dict__[name] for name in ("__spec__", "__file__") if name in main.__dict__
    }
    main.__spec__ = None
    main.__dict__.pop("__file__", None)
    try:
        yield
    finally:
        main.__dict__.update(saved)


class Ingest:
    """Async context manager running the whole pipeline of one config until it is left.

    An :class:`IngestConfig` reads from MQTT, a :class:`SinkConfig` from a Kafka consumer group.
    """

    def __init__(
        self,
        config: IngestConfig | SinkConfig,
        *,
        run_migrations: bool = True,
        stop_timeout: float = 10.0,
    ) -> None:
        self.config = config
        #: how long a stop waits for the batch being written (longer: an outage is not waited out)
        self.stop_timeout = stop_timeout
        self.run_migrations = run_migrations
        self.store = Store(config.database.dsn, partitions_ahead=config.database.partitions_ahead)
        self.queue: asyncio.Queue[Message] = asyncio.Queue(config.batch.queue_messages)
        self.resolver = identifiers.Client(config.identifiers.node)
        self.verifier = Verifier(
            self.store, self.resolver, asyncio.to_thread,
            cache_seconds=config.identifiers.cache_seconds,
        )  # fmt: skip
        self.consumer: Source
        if isinstance(config, SinkConfig):
            # partitions that come (back) to this sink bring gateways whose chains another
            # sink may have extended meanwhile: read them again from the receipts
            self.consumer = KafkaSource(
                config.kafka, self.queue, on_assigned=self.verifier.reset_chains
            )
        else:
            self.consumer = Consumer(config.mqtt, self.queue)
        self.stats = PipelineStats()
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._decoded: asyncio.Queue[tuple[list[Message], asyncio.Future[Any]]] = asyncio.Queue(
            max(2, config.batch.decode_workers * 2)
        )
        self._ready: collections.deque[tuple[Message, Pre]] = collections.deque()
        self.health: HttpServer | None = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._pipeline: asyncio.Task[None] | None = None
        self._committed = asyncio.Event()

    @property
    def running(self) -> bool:
        return self._pipeline is not None and not self._pipeline.done()

    async def __aenter__(self) -> Ingest:
        async with contextlib.AsyncExitStack() as stack:
            if self.run_migrations:
                db = self.config.database
                await asyncio.to_thread(migrate, db.dsn, compress_after=db.compress_after)
            await asyncio.to_thread(self.store.connect)
            stack.callback(self.store.close)
            self.stats.database_up = True
            await stack.enter_async_context(self.resolver)
            if self.config.batch.decode_workers:
                # spawn, not fork: this process already runs threads (paho, database)
                self._pool = concurrent.futures.ProcessPoolExecutor(
                    self.config.batch.decode_workers,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=watch_parent,
                    initargs=(os.getpid(),),
                )
                stack.push_async_callback(self._stop_pool)
                # start the workers now, not when the first message waits for them
                loop = asyncio.get_running_loop()
                workers = self.config.batch.decode_workers
                with _main_module_hidden():
                    started = [
                        loop.run_in_executor(self._pool, precheck_many, []) for _ in range(workers)
                    ]
                await asyncio.gather(*started)
            # left after the pipeline stopped: a Kafka sink commits the last batch's offsets
            await stack.enter_async_context(self.consumer)
            self._pipeline = asyncio.create_task(self._run(), name="ingest-pipeline")
            stack.push_async_callback(self._stop_pipeline)
            stack.push_async_callback(self._partitions_task())
            stack.push_async_callback(self.consumer.stop_receiving)
            if self.config.health is not None:
                host, port = self.config.health.address
                app = create_app(self, lambda: self.running)
                self.health = await stack.enter_async_context(
                    HttpServer(app, host, port, name="ingest health")
                )
            self._stack = stack.pop_all()
        logger.info("ingest started: %s, schema %s", self.consumer.describe(), self.store.flavour)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._stack is not None:
            await self._stack.aclose()
            self._stack = None

    def _partitions_task(self) -> Callable[[], Any]:
        async def ahead() -> None:
            while True:
                await asyncio.sleep(3600)
                with contextlib.suppress(psycopg.Error):
                    await asyncio.to_thread(self.store.ensure_ahead)

        task = asyncio.create_task(ahead(), name="ingest-partitions")

        async def stop() -> None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        return stop

    async def _stop_pool(self) -> None:
        if self._pool is not None:
            await asyncio.to_thread(self._pool.shutdown, True, cancel_futures=True)

    async def _stop_pipeline(self) -> None:
        if self._pipeline is not None:
            self._pipeline.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pipeline

    async def wait(self) -> None:
        """Until the pipeline stops (it stops only on a bug: the exception is raised here)."""
        if self._pipeline is not None:
            await self._pipeline

    async def committed(self) -> None:
        """Until the next batch commits (for tests and the demo)."""
        self._committed.clear()
        await self._committed.wait()

    # --- the pipeline ---------------------------------------------------------------------------

    async def _run(self) -> None:
        writing: asyncio.Task[None] | None = None
        decoding = asyncio.create_task(self._decode_stage(), name="ingest-decode")
        try:
            while True:
                batch, messages = await self._collect()
                if writing is not None:
                    # shielded: a stop arriving here must not cancel the write (and so its
                    # acknowledgement); the finally below lets it finish
                    await asyncio.shield(writing)
                writing = asyncio.create_task(self._commit(batch, messages), name="ingest-commit")
        finally:
            decoding.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await decoding
            if writing is not None:
                # let a batch being written finish (it may be mid-COMMIT), but not wait out a
                # database outage: unacknowledged, its messages come again after the restart
                try:
                    await asyncio.wait_for(asyncio.shield(writing), self.stop_timeout)
                except TimeoutError:
                    writing.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await writing
                    logger.warning("stopping with a batch not committed; the broker keeps it")
            await self.verifier.stop_prefetching()

    async def _collect(self) -> tuple[Batch, list[Message]]:
        batch = Batch()
        messages: list[Message] = []
        limits = self.config.batch
        item = await self._next(None)
        deadline = time.monotonic() + limits.max_delay
        while item is not None:
            msg, pre = item
            await self._verify(msg, pre, batch)
            messages.append(msg)
            if batch.samples >= limits.max_rows:
                break
            # verifying usually completes without suspending: let the loop run the previous
            # batch's write (and the consumer's hand-overs) meanwhile, not only after this batch
            await asyncio.sleep(0)
            item = await self._next(deadline - time.monotonic())
        return batch, messages

    async def _next(self, within: float | None) -> tuple[Message, Pre] | None:
        """The next message in arrival order, with its precheck if a worker did it."""
        if self._pool is None:
            if not self._ready:
                try:
                    msg = self.queue.get_nowait()
                except asyncio.QueueEmpty:
                    if within is not None and within <= 0:
                        return None
                    try:
                        msg = await asyncio.wait_for(self.queue.get(), within)
                    except TimeoutError:
                        return None
                # the messages waiting behind it too, to look their senders up meanwhile
                chunk = [msg]
                while len(chunk) < _CHUNK and not self.queue.empty():
                    chunk.append(self.queue.get_nowait())
                self.verifier.prefetch(m.topic for m in chunk)
                self._ready.extend((m, None) for m in chunk)
            return self._ready.popleft()
        if not self._ready:
            try:
                chunk, future = self._decoded.get_nowait()
            except asyncio.QueueEmpty:
                if within is not None and within <= 0:
                    return None
                try:
                    chunk, future = await asyncio.wait_for(self._decoded.get(), within)
                except TimeoutError:
                    return None
            try:
                checked: list[Pre] = list(await future)
            except Exception:  # a worker died: decode these here instead
                logger.exception("decode worker failed; decoding %d messages here", len(chunk))
                checked = [None] * len(chunk)
            self._ready.extend(zip(chunk, checked, strict=True))
        return self._ready.popleft()

    async def _decode_stage(self) -> None:
        """Hand chunks of received messages to the worker processes, keeping their order."""
        loop = asyncio.get_running_loop()
        pool = self._pool
        if pool is None:
            return
        while True:
            chunk = [await self.queue.get()]
            while len(chunk) < _CHUNK:
                try:
                    chunk.append(self.queue.get_nowait())
                except asyncio.QueueEmpty:
                    break
            self.verifier.prefetch(m.topic for m in chunk)
            known = self.verifier.known
            work = [(m.topic, m.payload, known.get(m.topic)) for m in chunk]
            try:
                future: asyncio.Future[Any] = loop.run_in_executor(pool, precheck_many, work)
            except RuntimeError:  # the pool is broken or shut down: decode in the pipeline
                future = loop.create_future()
                future.set_result([None] * len(chunk))
            await self._decoded.put((chunk, future))

    async def _verify(self, msg: Message, pre: Pre, batch: Batch) -> None:
        delay = 0.1
        while True:
            try:
                await self.verifier.add(msg, batch, pre)
                return
            except (Transient, psycopg.OperationalError) as exc:
                self._trouble(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _BACKOFF_MAX)

    async def _commit(self, batch: Batch, messages: list[Message]) -> None:
        try:
            batch = await self._write_verified(batch, messages)
        except psycopg.Error as exc:
            # not an outage (those are retried): the database refuses this batch for good, a
            # bug or a schema changed under ingest. Its messages go to quarantine whole, so
            # that nothing is lost and ingest carries on; the chain is re-read from receipts.
            logger.exception("the database refused a batch of %d messages", len(messages))
            refused = Batch()
            detail = f"{type(exc).__name__}: {exc}"
            for msg in messages:
                self.verifier.quarantine(msg, Quarantined("store_refused", detail), refused)
            self.verifier.reset_chains()
            batch = refused
            await self._write(batch)
        self.stats.database_up = True
        self.stats.last_error = None
        self.stats.batches += 1
        self.stats.messages += len(messages)
        if messages:
            self.stats.lag_seconds = time.time() - messages[0].received / 1e6
        self.stats.newest_sample = max(self.stats.newest_sample, batch.newest)
        await self.consumer.ack(messages)
        self._committed.set()

    async def _write_verified(self, batch: Batch, messages: list[Message]) -> Batch:
        """Write ``batch``; if its receipts meet receipts stored meanwhile, verify it again.

        That happens when another ingest wrote envelopes of the same gateway between this
        batch's verification and its commit: a Kafka sink whose partition moved here while it
        still wrote (docs/kafka.md). This batch was checked against a chain that is now stale,
        and the primary key of ``receipt`` refused it as a whole; verified again against the
        stored chain, the envelopes already stored become duplicates and the rest is written.
        """
        attempts = 0
        while True:
            try:
                await self._write(batch)
            except psycopg.errors.UniqueViolation as exc:
                attempts += 1
                if exc.diag.constraint_name != "receipt_pkey" or attempts > _REVERIFY:
                    raise
                logger.warning(
                    "receipts of a batch of %d messages were stored meanwhile by another "
                    "ingest; verifying the batch again against the stored chains",
                    len(messages),
                )
                self.verifier.reset_chains()
                batch = Batch()
                for msg in messages:
                    await self._verify(msg, None, batch)
            else:
                return batch

    async def _write(self, batch: Batch) -> None:
        """Write ``batch``, waiting out database outages; raise other database errors."""
        delay = 0.1
        retried = False
        while True:
            try:
                if retried and await asyncio.to_thread(self.store.committed, batch):
                    return
                result = await asyncio.to_thread(self.store.write, batch)
            except psycopg.OperationalError as exc:
                self._trouble(exc)
                self.stats.write_retries += 1
                retried = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, _BACKOFF_MAX)
                continue
            if not self.stats.database_up:
                logger.info("database reachable again; batch committed")
            self.stats.rows += result.rows_inserted
            self.stats.conflict_batches += result.conflicts
            self.stats.commit_seconds += result.seconds
            return

    def _trouble(self, exc: Exception) -> None:
        self.stats.waits += 1
        text = f"{type(exc).__name__}: {exc}".strip()
        if self.stats.database_up or self.stats.last_error is None:
            logger.error("ingest waits: %s", text)
        else:
            logger.debug("still waiting: %s", text)
        if isinstance(exc, psycopg.OperationalError):
            self.stats.database_up = False
        self.stats.last_error = text
