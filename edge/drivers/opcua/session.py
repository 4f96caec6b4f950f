"""One OPC UA session with one server: connect, read in chunks, subscribe, close.

A :class:`Session` is used once: the driver makes a new one for every reconnect, so nothing
of a dead session (its subscriptions, its channel keys) can leak into the next. asyncua's own
reconnect is off: the driver's backoff decides when to try again, and it rebuilds the
subscriptions itself, because after a server restart there is nothing left to transfer.

Subscriptions bypass asyncua's ``Subscription`` object: the raw CreateSubscription and
CreateMonitoredItems services are used and each publish response is turned into samples in
one pass, keyed by client handle, without asyncua's per-notification objects and tasks that
cost more than the rest of the pipeline at 20,000 items per second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from asyncua import Client, ua
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256

from edge._model import OpcUa
from edge._samples import Sample
from edge.drivers.opcua.certs import ensure_certificate
from edge.drivers.opcua.config import DevicePlan, GroupPlan, describe
from edge.drivers.opcua.convert import TagCodec
from edge.drivers.opcua.errors import DeviceUnavailable, SecurityRejected

logger = logging.getLogger(__name__)

#: samples of one group from one publish response → the driver
OnSamples = Callable[[GroupPlan, list[Sample]], Awaitable[None]]

#: Publish requests kept outstanding (at most one per subscription)
PUBLISH_REQUESTS = 4
_LIMITS = (
    ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead,
    ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall,
)
_SECURITY_CODES = {
    ua.StatusCodes.BadCertificateInvalid, ua.StatusCodes.BadCertificateUntrusted,
    ua.StatusCodes.BadSecurityChecksFailed, ua.StatusCodes.BadSecurityPolicyRejected,
    ua.StatusCodes.BadIdentityTokenInvalid, ua.StatusCodes.BadIdentityTokenRejected,
    ua.StatusCodes.BadUserAccessDenied, ua.StatusCodes.BadCertificateUriInvalid,
}  # fmt: skip


class Session:
    """A connected client plus the server's limits and our subscriptions on it."""

    def __init__(self, plan: DevicePlan, *, ns_clock: Callable[[], int] = time.time_ns) -> None:
        self.plan = plan
        self.settings = plan.connection
        self._clock = ns_clock
        self.client: Client | None = None
        #: set when asyncua's supervisor finds the connection dead, or a request fails
        self.lost = asyncio.Event()
        self.lost_reason = ""
        #: the server's advertised MaxNodesPerRead (0: no limit)
        self.server_max_nodes_per_read = 0
        self.server_max_items_per_call = 0
        self.subscriptions: dict[int, GroupPlan] = {}
        self.monitored_items = 0
        #: tags whose monitored item the server refused (an unknown node…), by group
        self.refused: dict[str, list[str]] = {}
        self.read_requests = 0
        self._handles: dict[int, tuple[GroupPlan, TagCodec]] = {}
        self._on_samples: OnSamples | None = None
        #: notifications wait for this, so that they follow the "device is back" event
        self._released = asyncio.Event()
        self._publish_tasks: set[asyncio.Task[None]] = set()

    @property
    def device(self) -> str:
        return self.plan.name

    @property
    def nodes_per_read(self) -> int:
        cap = self.settings.max_nodes_per_read
        server = self.server_max_nodes_per_read
        return min(cap, server) if server > 0 else cap

    # --- connecting -----------------------------------------------------------------------

    async def open(self) -> None:
        """Connect, activate a session and read the server's operation limits."""
        s = self.settings
        client = new_client(s)
        client.connection_lost_callback = self._connection_lost
        self.client = client
        try:
            async with asyncio.timeout(4 * s.timeout + 1):
                await configure(client, s)
                await client.connect()
                self.server_max_nodes_per_read, self.server_max_items_per_call = await self._limits(
                    client
                )
        except BaseException as exc:
            await self.close()
            if isinstance(exc, Exception):
                raise self._translate(exc, "cannot connect") from exc
            raise
        logger.debug(
            "%s: session open on %s, MaxNodesPerRead %d",
            self.device,
            describe(s),
            self.server_max_nodes_per_read,
        )

    @staticmethod
    async def _limits(client: Client) -> tuple[int, int]:
        values = await client.read_attributes([client.get_node(ua.NodeId(i)) for i in _LIMITS])
        out = []
        for dv in values:
            v = dv.Value.Value if dv.StatusCode.is_good() and dv.Value is not None else 0
            out.append(int(v) if isinstance(v, int) else 0)
        return out[0], out[1]

    async def _connection_lost(self, exc: Exception) -> None:
        reason = str(exc) or type(exc).__name__
        self.mark_lost(f"device {self.device!r}: lost {describe(self.settings)}: {reason}")

    def mark_lost(self, reason: str) -> None:
        if not self.lost.is_set():
            self.lost_reason = reason
            self.lost.set()
            # nothing from a dead session may follow the Bad samples that mark its end
            self._on_samples = None

    def _translate(self, exc: Exception, what: str) -> Exception:
        if isinstance(exc, ua.UaStatusCodeError) and exc.code in _SECURITY_CODES:
            return SecurityRejected(self.device, f"{what}: {ua.StatusCode(exc.code).name}")
        if isinstance(exc, DeviceUnavailable | SecurityRejected):
            return exc
        if isinstance(exc, TimeoutError):
            detail = "no answer"
        elif isinstance(exc, ua.UaStatusCodeError):
            detail = ua.StatusCode(exc.code).name
        else:
            detail = str(exc) or type(exc).__name__
        return DeviceUnavailable(self.device, f"{what} {describe(self.settings)}: {detail}")

    async def close(self) -> None:
        """Close politely if the server answers quickly, else just drop the socket."""
        client, self.client = self.client, None
        if client is None:
            return
        self._on_samples = None
        self._released.set()
        for task in list(self._publish_tasks):
            task.cancel()
        polite = not self.lost.is_set()
        try:
            async with asyncio.timeout(min(self.settings.timeout, 2.0) if polite else 0.5):
                await client.disconnect()
        except (TimeoutError, Exception):
            logger.debug("%s: closing the session did not finish; socket dropped", self.device)
            with contextlib.suppress(Exception):
                client.disconnect_socket()
            with contextlib.suppress(TimeoutError, Exception):
                async with asyncio.timeout(0.5):
                    await client.disconnect()

    # --- polling --------------------------------------------------------------------------

    async def read(self, group: GroupPlan) -> list[Sample]:
        """One Read per chunk of at most :attr:`nodes_per_read` nodes; DataValues with their
        status codes and timestamps become samples."""
        client = self.client
        if client is None or self.lost.is_set():
            raise DeviceUnavailable(self.device, self.lost_reason or "not connected")
        session = client.uaclient
        samples: list[Sample] = []
        start = 0
        while start < len(group.nodes):
            size = self.nodes_per_read
            nodes = list(group.nodes[start : start + size])
            try:
                values = await session.read_attributes(nodes, ua.AttributeIds.Value)
            except ua.UaStatusCodeError as exc:
                if exc.code == ua.StatusCodes.BadTooManyOperations and size > 1:
                    self._smaller_reads(size)
                    continue
                error = self._translate(exc, "read failed on")
                self.mark_lost(str(error))
                raise error from exc
            except (ConnectionError, OSError, TimeoutError) as exc:
                error = self._translate(exc, "read failed on")
                self.mark_lost(str(error))
                raise error from exc
            self.read_requests += 1
            edge_ts = self._clock()
            samples += _samples(group.codecs[start : start + size], values, edge_ts)
            start += size
        return samples

    def _smaller_reads(self, size: int) -> None:
        """The server refused a Read of ``size`` nodes although it advertised more (or nothing):
        halve the chunks for the rest of this session."""
        self.server_max_nodes_per_read = max(1, size // 2)
        logger.warning(
            "%s: the server refused a Read of %d nodes (BadTooManyOperations); now %d at a time",
            self.device,
            size,
            self.server_max_nodes_per_read,
        )

    # --- subscriptions --------------------------------------------------------------------

    async def subscribe(self, groups: Sequence[GroupPlan], on_samples: OnSamples) -> None:
        """Each group becomes subscriptions of at most ``items_per_subscription`` items,
        publishing at the group's interval; monitored items are created in calls of at most
        the server's MaxMonitoredItemsPerCall."""
        client = self.client
        if client is None:
            raise DeviceUnavailable(self.device, "not connected")
        self._on_samples = on_samples
        s = self.settings
        per_sub = s.items_per_subscription
        per_call = min(per_sub, self.server_max_items_per_call or per_sub)
        try:
            for group in groups:
                for index, codec in zip(group.handles, group.codecs, strict=True):
                    self._handles[index] = (group, codec)
                for start in range(0, len(group.nodes), per_sub):
                    sub_id = await self._create_subscription(client, group)
                    self.subscriptions[sub_id] = group
                    end = min(start + per_sub, len(group.nodes))
                    for first in range(start, end, per_call):
                        await self._create_items(
                            client, sub_id, group, first, min(first + per_call, end)
                        )
        except (ConnectionError, OSError, TimeoutError, ua.UaStatusCodeError) as exc:
            error = self._translate(exc, "subscribing failed on")
            self.mark_lost(str(error))
            raise error from exc
        self._more_publish_requests(client)

    def _more_publish_requests(self, client: Client) -> None:
        """asyncua keeps one Publish request outstanding, so each subscription's notifications
        wait for a round trip of every other's; a busy server then publishes late. Part 4
        (5.13.5) has clients keep several outstanding: a few more loops, ended with the
        session like asyncua's own."""
        want = min(PUBLISH_REQUESTS, len(self.subscriptions)) - 1
        session = client.uaclient.session
        for _ in range(want):
            task = asyncio.get_running_loop().create_task(session._publish_loop())
            self._publish_tasks.add(task)
            task.add_done_callback(self._publish_tasks.discard)

    async def _create_subscription(self, client: Client, group: GroupPlan) -> int:
        interval_ms = group.interval * 1000
        params = ua.CreateSubscriptionParameters()
        params.RequestedPublishingInterval = interval_ms
        # keep-alives at least every watchdog period, so a silent but healthy subscription
        # is told apart from a dead one; lifetime three keep-alives, as the spec asks at least
        keepalive = max(1, int(self.settings.watchdog * 1000 // interval_ms))
        params.RequestedMaxKeepAliveCount = keepalive
        params.RequestedLifetimeCount = max(3 * keepalive, 30)
        params.MaxNotificationsPerPublish = 0  # no limit: a publish carries a whole interval
        params.PublishingEnabled = True
        params.Priority = 0
        result = await client.uaclient.create_subscription(params, self._publish)
        return int(result.SubscriptionId)

    async def _create_items(
        self, client: Client, sub_id: int, group: GroupPlan, first: int, end: int
    ) -> None:
        s = self.settings
        sampling = (s.sampling_interval or group.interval) * 1000
        requests = []
        for i in range(first, end):
            tag = group.tags[i]
            item = ua.MonitoredItemCreateRequest()
            item.ItemToMonitor = ua.ReadValueId(
                NodeId=group.nodes[i], AttributeId=ua.AttributeIds.Value
            )
            item.MonitoringMode = ua.MonitoringMode.Reporting
            parameters = ua.MonitoringParameters()
            parameters.ClientHandle = group.handles[i]
            parameters.SamplingInterval = sampling
            parameters.QueueSize = s.queue_size
            parameters.DiscardOldest = True
            parameters.Filter = _filter(tag.deadband, tag.max_silence)
            item.RequestedParameters = parameters
            requests.append(item)
        params = ua.CreateMonitoredItemsParameters()
        params.SubscriptionId = sub_id
        params.TimestampsToReturn = ua.TimestampsToReturn.Both
        params.ItemsToCreate = requests
        results = await client.uaclient.create_monitored_items(params)
        refused = []
        for i, result in zip(range(first, end), results, strict=True):
            if result.StatusCode.is_good():
                self.monitored_items += 1
            else:
                refused.append((group.tags[i].name, result.StatusCode.name))
                self.refused.setdefault(group.name, []).append(group.tags[i].name)
        if refused:
            # such a tag never reports: one Bad sample and this line say so
            logger.warning(
                "%s: %d monitored items refused, e.g. tag %r: %s",
                self.device,
                len(refused),
                *refused[0],
            )

    def release(self) -> None:
        """Let notifications through (held until the driver has said the device is up)."""
        self._released.set()

    async def _publish(self, result: ua.PublishResult) -> None:
        """asyncua's publish loop awaits this, so a full sample stream holds publishing back
        (the server keeps the notifications) rather than dropping anything here."""
        await self._released.wait()
        on_samples = self._on_samples
        if on_samples is None:
            return
        for data in result.NotificationMessage.NotificationData or ():
            if isinstance(data, ua.DataChangeNotification):
                edge_ts = self._clock()
                by_group: dict[str, tuple[GroupPlan, list[Sample]]] = {}
                for item in data.MonitoredItems:
                    found = self._handles.get(item.ClientHandle)
                    if found is None:
                        continue
                    group, codec = found
                    dv = item.Value
                    variant = dv.Value
                    sample = codec.sample(
                        dv.StatusCode.value if dv.StatusCode is not None else 0,
                        None if variant is None else variant.Value,
                        dv.SourceTimestamp or dv.ServerTimestamp,
                        edge_ts,
                    )
                    by_group.setdefault(group.name, (group, []))[1].append(sample)
                for group, samples in by_group.values():
                    if self._on_samples is None:
                        return
                    await on_samples(group, samples)
            elif isinstance(data, ua.StatusChangeNotification):
                status = ua.StatusCode(data.Status.value)
                if not status.is_good():
                    self.mark_lost(f"subscription {result.SubscriptionId}: {status.name}")


def new_client(settings: OpcUa) -> Client:
    """An asyncua client with the gateway's name, timeouts and watchdog (not connected)."""
    client = Client(
        settings.endpoint, timeout=settings.timeout, watchdog_intervall=settings.watchdog
    )
    client.name = client.description = "Guantong gateway"
    client.product_uri = "urn:guantong:gateway"
    # a dead session should not keep our subscriptions sampling on the server for an hour
    client.session_timeout = int(max(60.0, 4 * settings.watchdog) * 1000)
    return client


async def configure(client: Client, settings: OpcUa) -> None:
    """Login and security as the settings say; before ``connect``."""
    if settings.username is not None and settings.password_file is not None:
        client.set_user(settings.username)
        password = await asyncio.to_thread(_read_password, Path(settings.password_file))
        client.set_password(password)
    if settings.security_mode == "None":
        return
    # the model fills in both paths whenever security is on
    cert, key = Path(settings.certificate or ""), Path(settings.private_key or "")
    client.application_uri = await asyncio.to_thread(ensure_certificate, cert, key)
    mode = getattr(ua.MessageSecurityMode, settings.security_mode)
    await client.set_security(SecurityPolicyBasic256Sha256, str(cert), str(key), mode=mode)


def _filter(deadband: float | None, max_silence: float | None) -> ua.DataChangeFilter | None:
    """The server filters by absolute deadband, saving the network and the gateway's CPU;
    not when the tag has ``max_silence``, since a value the server holds back cannot be sent
    anyway after the silence: the gateway's report-by-exception filter does both then."""
    if deadband is None or max_silence is not None:
        return None
    flt = ua.DataChangeFilter()
    flt.Trigger = ua.DataChangeTrigger.StatusValue
    flt.DeadbandType = ua.DeadbandType.Absolute
    flt.DeadbandValue = deadband
    return flt


def _samples(
    codecs: Sequence[TagCodec], values: Sequence[ua.DataValue], edge_ts: int
) -> list[Sample]:
    out = []
    for codec, dv in zip(codecs, values, strict=True):
        variant = dv.Value
        status = dv.StatusCode
        out.append(
            codec.sample(
                0 if status is None else status.value,
                None if variant is None else variant.Value,
                dv.SourceTimestamp or dv.ServerTimestamp,
                edge_ts,
            )
        )
    return out


def _read_password(path: Path) -> str:
    return path.read_text(encoding="utf-8").strip()
