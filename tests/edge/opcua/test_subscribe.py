"""Subscriptions against the simulator on the real clock: values arrive as notifications."""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

from edge import Batch, ConnectivityEvent, Device, Quality, SampleStream
from edge.drivers.opcua import OpcUaDriver
from simulators import OpcUaEndpoint

Start = Callable[..., Awaitable[OpcUaEndpoint]]


async def collect(
    stream: SampleStream,
    seconds: float,
    until: Callable[[list[Batch | ConnectivityEvent]], bool] | None = None,
) -> list[Batch | ConnectivityEvent]:
    """What the stream yields for ``seconds``, or until ``until(items)`` holds."""
    items: list[Batch | ConnectivityEvent] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            items.append(await asyncio.wait_for(stream.get(), left))
        except TimeoutError:
            break
        if until is not None and until(items):
            break
    return items


async def test_notifications_carry_the_values_of_their_source_second(
    sim: Any, make_server: Start
) -> None:
    m = sim.machine("compressor", live=True)
    server = await make_server(m)
    device = sim.device_for(m, server.url, mode="subscribe", groups=False, items_per_subscription=4)
    stream = SampleStream()
    names = {spec.name for spec in m.profile.tags}

    def enough(got: list[Batch | ConnectivityEvent]) -> bool:
        samples = [s for i in got if isinstance(i, Batch) for s in i.samples]
        return len({s.source_ts for s in samples}) >= 3 and {s.tag for s in samples} == names

    async with OpcUaDriver([device], stream) as driver:
        items = await collect(stream, 60, until=enough)
        (reader,) = driver.readers
        session = reader.session
        assert session is not None
        # the group's items are spread over subscriptions of at most four
        assert len(session.subscriptions) == math.ceil(len(m.profile.tags) / 4)
        assert session.monitored_items == len(m.profile.tags)
    batches = [i for i in items if isinstance(i, Batch)]
    assert [i for i in items if isinstance(i, ConnectivityEvent)] == []
    seconds = set()
    changed = set()
    for batch in batches:
        assert batch.device == m.name
        assert batch.group == "all"
        for sample in batch.samples:
            assert sample.quality is Quality.GOOD
            assert sample.source_ts is not None
            want = sim.expected(m, sample.source_ts / 1e9)[sample.tag]
            assert sample.value == want, sample
            seconds.add(sample.source_ts)
            changed.add(sample.tag)
    # first the initial values, then changes, second by second
    assert len(seconds) >= 3
    assert set(changed) == names


async def test_an_absolute_deadband_is_filtered_by_the_server(sim: Any, make_server: Start) -> None:
    m = sim.machine("meter", live=True)
    server = await make_server(m)
    device = sim.device_for(m, server.url, mode="subscribe", groups=False).model_dump(mode="json")
    for tag in device["groups"][0]["tags"]:
        if tag["name"] == "energy_import":  # a counter that creeps up by < 1e6 a second
            tag["deadband"] = 1e6
    stream = SampleStream()

    def count(items: list[Batch | ConnectivityEvent]) -> dict[str, int]:
        seen: dict[str, int] = {}
        for item in items:
            assert isinstance(item, Batch)
            for sample in item.samples:
                seen[sample.tag] = seen.get(sample.tag, 0) + 1
        return seen

    async with OpcUaDriver([Device.model_validate(device)], stream) as driver:
        # until another tag has changed twice after its initial value (on a loaded machine
        # the subscriptions may take seconds to start)
        items = await collect(stream, 60, until=lambda got: max(count(got).values()) >= 3)
    seen = count(items)
    assert seen["energy_import"] == 1  # the initial value, then nothing beyond the deadband
    assert max(seen.values()) >= 3  # other tags changed every second
    # held back by the server, not by the gateway's own filter: everything that arrived passed
    assert driver.readers[0].stats.notifications == stream.stats.samples


async def test_a_refused_monitored_item_is_one_bad_sample(sim: Any, make_server: Start) -> None:
    m = sim.machine("meter")
    server = await make_server(m)
    device = sim.device_for(m, server.url, mode="subscribe", groups=False).model_dump(mode="json")
    device["groups"][0]["tags"].append(
        {"name": "ghost", "address": "ns=2;s=NoSuchNode", "type": "float64"}
    )
    stream = SampleStream()
    wanted = {t["name"] for t in device["groups"][0]["tags"]}
    async with OpcUaDriver([Device.model_validate(device)], stream):
        items = await collect(
            stream, 60,
            until=lambda got: {s.tag for i in got if isinstance(i, Batch) for s in i.samples}
            == wanted,
        )  # fmt: skip
    samples = [s for i in items if isinstance(i, Batch) for s in i.samples]
    ghosts = [s for s in samples if s.tag == "ghost"]
    assert len(ghosts) == 1
    assert ghosts[0].quality is Quality.BAD
    others = {s.tag: s.value for s in samples if s.tag != "ghost"}
    assert others == sim.expected(m)


async def test_max_silence_resends_a_value_the_server_does_not(
    sim: Any, make_server: Start
) -> None:
    m = sim.machine("cnc", live=True)
    server = await make_server(m)
    device = sim.device_for(
        m, server.url, mode="subscribe", groups=False, interval="250ms"
    ).model_dump(mode="json")
    for tag in device["groups"][0]["tags"]:
        if tag["name"] == "feed_override":  # a setpoint: it never changes by itself
            tag["max_silence"] = "1s"
    stream = SampleStream()
    async with OpcUaDriver([Device.model_validate(device)], stream):
        items = await collect(stream, 3.6)
    sent = [s for i in items if isinstance(i, Batch) for s in i.samples if s.tag == "feed_override"]
    assert [s.value for s in sent] == [sim.expected(m)["feed_override"]] * len(sent)
    assert all(s.quality is Quality.GOOD for s in sent)
    first, *again = sent
    assert first.source_ts is not None  # the subscription's initial value
    assert 2 <= len(again) <= 4
    # resent by the gateway, stamped when it did, a max_silence apart
    assert all(s.source_ts is None for s in again)
    gaps = [b.ts - a.ts for a, b in itertools.pairwise(again)]
    assert all(gap >= 1_000_000_000 for gap in gaps)
