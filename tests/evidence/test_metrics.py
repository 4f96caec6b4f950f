"""Every metric of the faulty firm moves exactly as its faults say, against the healthy twin.

The plant and its faults are described in conftest.py: 180 s of 1 Hz data, window = those
180 s (three whole minutes), ``fresh_within`` 60 s, ``outage_after`` 30 s, ``as_of`` the end.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import statistics
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

import evidence
import identifiers

HEALTHY, FAULTY = "88.709.911", "88.709.912"


def tag(ev: evidence.FirmEvidence, device: str, name: str) -> evidence.TagEvidence:
    return next(t for t in ev.tags if t.device == f"{ev.firm.split('/')[0]}/{device}"
                and t.tag == name)  # fmt: skip


def dev(ev: evidence.FirmEvidence, name: str) -> evidence.DeviceEvidence:
    return ev.device(f"{ev.firm.split('/')[0]}/{name}")


def gw(ev: evidence.FirmEvidence, name: str) -> evidence.GatewayEvidence:
    return ev.gateway(f"{ev.firm.split('/')[0]}/{name}")


@pytest.fixture(scope="module")
def healthy(plant: Any) -> evidence.FirmEvidence:
    return plant.collect(HEALTHY)


@pytest.fixture(scope="module")
def faulty(plant: Any) -> evidence.FirmEvidence:
    return plant.collect(FAULTY)


def test_the_registry_is_read_through_the_identifier_node(plant: Any) -> None:
    for firm in (HEALTHY, FAULTY):
        got = {d.identifier: (d.gateway, d.key_equipment, d.stages)
               for d in plant.registered[firm]}  # fmt: skip
        assert got == {
            f"{firm}/dev.fan": (f"{firm}/gw.line1", False, ("安全生产",)),
            f"{firm}/dev.kiln": (f"{firm}/gw.line1", True, ("设备管理", "能耗管理")),
            f"{firm}/dev.meter": (f"{firm}/gw.line2", True, ("能耗管理",)),
            f"{firm}/dev.press": (f"{firm}/gw.line1", True, ("设备管理", "质量管理")),
            f"{firm}/dev.spare": (f"{firm}/gw.line1", True, ("生产管控",)),
        }


def test_networking_rate_counts_key_devices_with_fresh_good_data(
    healthy: evidence.FirmEvidence, faulty: evidence.FirmEvidence
) -> None:
    # spare never sends; the fan is not key equipment
    assert healthy.networking == evidence.Networking(4, 3, 0.75)
    # press offline for 90 s, meter silent for 120 s: older than fresh_within
    assert faulty.networking == evidence.Networking(4, 1, 0.25)
    assert [d.networked for d in healthy.devices] == [True, True, True, True, False]
    # fan, kiln, meter, press, spare: the fan sends, but nothing good
    assert [d.networked for d in faulty.devices] == [False, True, False, False, False]
    assert dev(faulty, "dev.fan").last_good is None
    # it arrives (but for the declared loss): completeness is arrival, whatever the quality
    assert dev(faulty, "dev.fan").completeness == 170 / 180


def test_completeness_per_tag_and_device_against_the_median_spacing(
    healthy: evidence.FirmEvidence, faulty: evidence.FirmEvidence
) -> None:
    for ev in (healthy, faulty):
        for t in ev.tags:
            assert (t.expected_interval, t.interval_source) == (1.0, "median")
            assert t.expected_samples == 180.0
    assert {(t.device, t.tag): t.samples for t in healthy.tags} == {
        (f"{HEALTHY}/{d}", name): 180
        for d, names in {"dev.fan": ["rpm"], "dev.kiln": ["power", "temp"],
                         "dev.meter": ["kwh"], "dev.press": ["force"]}.items()
        for name in names
    }  # fmt: skip
    assert all(t.completeness == 1.0 for t in healthy.tags)
    # kiln: 10 s declared lost, 5 s in the gap; press 90 s; meter 60 s
    assert tag(faulty, "dev.kiln", "temp").samples == 165
    assert tag(faulty, "dev.kiln", "temp").completeness == 165 / 180
    assert tag(faulty, "dev.press", "force").completeness == 0.5
    assert tag(faulty, "dev.meter", "kwh").completeness == 60 / 180
    assert dev(faulty, "dev.kiln").samples == 330
    assert dev(faulty, "dev.kiln").expected_samples == 360.0
    assert dev(faulty, "dev.kiln").completeness == 330 / 360
    # registered, never sent a sample: no tags known, nothing arrived
    for ev in (healthy, faulty):
        spare = dev(ev, "dev.spare")
        assert (spare.tags, spare.samples, spare.completeness) == (0, 0, 0.0)
        assert (spare.last_sample, spare.age, spare.expected_samples) == (None, None, None)


def test_an_expected_interval_given_as_a_parameter_replaces_the_median(plant: Any) -> None:
    ev = plant.collect(FAULTY, params=evidence.Params(expected_interval=2.0, fresh_within=60))
    kiln = tag(ev, "dev.kiln", "temp")
    assert (kiln.expected_interval, kiln.interval_source) == (2.0, "parameter")
    assert kiln.expected_samples == 90.0
    assert kiln.completeness == 1.0  # capped: 165 samples against 90 expected
    assert tag(ev, "dev.meter", "kwh").completeness == 60 / 90


def test_freshness_is_the_age_of_the_newest_sample(
    plant: Any, healthy: evidence.FirmEvidence, faulty: evidence.FirmEvidence
) -> None:
    assert all(t.age == 1.0 for t in healthy.tags)  # newest at t = 179 s, as_of 180 s
    assert tag(faulty, "dev.press", "force").last_sample == plant.at(89)
    assert dev(faulty, "dev.press").age == 91.0
    assert dev(faulty, "dev.meter").age == 121.0
    assert dev(faulty, "dev.kiln").age == 1.0
    # measured at another moment: everything ages by the same amount
    later = plant.collect(FAULTY, as_of=plant.at(170))
    assert dev(later, "dev.press").age == 81.0
    assert dev(later, "dev.kiln").age == -9.0  # newer than as_of: not hidden


def test_gateway_online_time_and_outages(
    plant: Any, healthy: evidence.FirmEvidence, faulty: evidence.FirmEvidence
) -> None:
    for name in ("gw.line1", "gw.line2"):
        assert gw(healthy, name).outages == ()
        assert gw(healthy, name).online_seconds == 180.0
    line2 = gw(faulty, "gw.line2")
    # its last envelope was created at t = 59.5 s (+ the meter's 4 ms)
    last = plant.at(59.504)
    assert line2.last_created == last
    assert line2.outages == (evidence.Outage(last, plant.at(180)),)
    assert line2.online_seconds == pytest.approx(59.504)
    assert gw(faulty, "gw.line1").outages == ()  # the kiln's losses are short


def test_a_gateway_silent_for_the_whole_window_was_out_all_of_it(plant: Any) -> None:
    ev = plant.collect(FAULTY, plant.window(120, 180))
    line2 = gw(ev, "gw.line2")
    assert line2.envelopes == 0
    assert line2.outages == (evidence.Outage(plant.at(120), plant.at(180)),)
    assert line2.online_seconds == 0.0
    assert line2.latency == evidence.Latency(0, None, None, None)


def test_envelope_counts_and_integrity(
    healthy: evidence.FirmEvidence, faulty: evidence.FirmEvidence
) -> None:
    # 36 slots: line1 carries kiln, press and fan, line2 the meter
    assert healthy.integrity == evidence.Integrity(
        envelopes=144, data_envelopes=144, valid_signatures=144, bad_signatures=0,
        signature_share=1.0, gaps=0, missing_envelopes=0, declared_losses=0,
        declared_lost_envelopes=0, declared_lost_samples=0, undeclared_missing=0,
        chain_breaks=0, quarantined={},
    )  # fmt: skip
    # line1: kiln 36 - 3, press 18, fan 36 - 2, one loss envelope; line2: 12
    assert faulty.integrity == evidence.Integrity(
        envelopes=98, data_envelopes=97, valid_signatures=98, bad_signatures=0,
        signature_share=1.0, gaps=1, missing_envelopes=5, declared_losses=1,
        declared_lost_envelopes=4, declared_lost_samples=30, undeclared_missing=1,
        chain_breaks=0, quarantined={},
    )  # fmt: skip
    assert gw(faulty, "gw.line2").integrity.envelopes == 12
    assert gw(faulty, "gw.line1").integrity.missing_envelopes == 5


def test_quarantine_is_windowed_by_receipt_time(plant: Any) -> None:
    """The forged envelope claims t = 0, but its claim is not trusted: it counts when it came."""
    wide = evidence.Window(plant.start, plant.stored_before + dt.timedelta(minutes=1))
    ev = plant.collect(FAULTY, wide, as_of=plant.at(180))
    assert ev.integrity.quarantined == {"bad_signature": 1}
    assert ev.integrity.bad_signatures == 1
    assert ev.integrity.signature_share == 98 / 99
    assert gw(ev, "gw.line1").integrity.bad_signatures == 1
    assert plant.collect(HEALTHY, wide, as_of=plant.at(180)).integrity.quarantined == {}


def test_latency_percentiles_of_creation_to_receipt(
    plant: Any, healthy: evidence.FirmEvidence
) -> None:
    rows = plant.fetch(
        "SELECT extract(epoch FROM r.received - r.created)::float8 FROM receipt r "
        "JOIN gateway g ON g.id = r.gateway_id WHERE g.identifier LIKE %s AND r.kind = 1",
        f"{HEALTHY}/%",
    )
    seconds = sorted(s for (s,) in rows)
    assert healthy.latency.envelopes == len(seconds) == 144
    p50, p99 = (statistics.quantiles(seconds, n=100, method="inclusive")[i] for i in (49, 98))
    assert healthy.latency.p50 == pytest.approx(p50)
    assert healthy.latency.p99 == pytest.approx(p99)
    assert healthy.latency.max == seconds[-1]
    # every envelope was received between the first publish and the last commit
    first_created = plant.at(4.5)
    assert (plant.sent_after - first_created).total_seconds() <= healthy.latency.max
    assert healthy.latency.max <= (plant.stored_before - first_created).total_seconds()


def test_stage_coverage_comes_from_networked_devices(
    healthy: evidence.FirmEvidence, faulty: evidence.FirmEvidence
) -> None:
    def cover(ev: evidence.FirmEvidence) -> dict[str, tuple[int, int]]:
        return {s.stage: (s.devices, s.networked) for s in ev.stages}

    assert cover(healthy) == {"安全生产": (1, 1), "生产管控": (1, 0), "能耗管理": (2, 2),
                              "设备管理": (2, 2), "质量管理": (1, 1)}  # fmt: skip
    assert cover(faulty) == {"安全生产": (1, 0), "生产管控": (1, 0), "能耗管理": (2, 1),
                             "设备管理": (2, 1), "质量管理": (1, 0)}  # fmt: skip


@pytest.mark.parametrize(("begin", "end"), [(30.5, 150.25), (10.5, 40.5), (0, 120), (59.9, 61)])
def test_rollup_and_raw_edges_count_like_the_raw_table(
    plant: Any, begin: float, end: float
) -> None:
    ev = plant.collect(FAULTY, plant.window(begin, end))
    with psycopg.connect(plant.dsn) as conn:
        rows = conn.execute(
            "SELECT d.identifier, s.tag, count(x.ts) FROM series s "
            "JOIN device d ON d.id = s.device_id "
            "LEFT JOIN sample x ON x.series_id = s.id AND x.ts >= %s AND x.ts < %s "
            "WHERE d.identifier LIKE %s GROUP BY 1, 2",
            (plant.at(begin), plant.at(end), f"{FAULTY}/%"),
        ).fetchall()
    assert {(t.device, t.tag): t.samples for t in ev.tags} == {(d, t): n for d, t, n in rows}
    assert sum(n for *_, n in rows) > 0


def test_bad_windows_are_refused(plant: Any) -> None:
    with pytest.raises(evidence.InvalidWindow):
        evidence.Window(plant.at(10), plant.at(10))
    with pytest.raises(evidence.InvalidWindow):
        evidence.Window(dt.datetime(2026, 1, 1), dt.datetime(2026, 1, 2))
    with pytest.raises(evidence.InvalidWindow):
        plant.collect(FAULTY, as_of=plant.at(200))


def test_a_database_without_the_ingest_schema_is_unavailable(pg_dsn: str) -> None:
    window = evidence.Window(dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
                             dt.datetime(2026, 1, 2, tzinfo=dt.UTC))  # fmt: skip
    with psycopg.connect(pg_dsn) as conn, pytest.raises(evidence.StoreUnavailable):
        evidence.collect(conn, f"{HEALTHY}/firm", window, [])


def test_the_registry_decides_what_counts(plant: Any) -> None:
    """A device the registry no longer lists is shown but not counted; a registered gateway
    that never sent anything was out for the whole window."""
    records = [d for d in plant.registered[HEALTHY] if not d.identifier.endswith("dev.press")]
    records.append(
        evidence.RegisteredDevice(f"{HEALTHY}/dev.new", f"{HEALTHY}/gw.line3", True, ("设备管理",))
    )
    with psycopg.connect(plant.dsn) as conn:
        ev = evidence.collect(
            conn, f"{HEALTHY}/firm", plant.window(), records, as_of=plant.at(180),
            params=evidence.Params(fresh_within=60, outage_after=30),
        )  # fmt: skip
    press = dev(ev, "dev.press")
    assert (press.registered, press.key_equipment, press.networked) == (False, False, True)
    assert press.gateway == f"{HEALTHY}/gw.line1"  # from the store
    new = dev(ev, "dev.new")
    assert (new.registered, new.networked, new.completeness) == (True, False, 0.0)
    # key devices: kiln, meter, spare, new; networked: kiln, meter
    assert ev.networking == evidence.Networking(4, 2, 0.5)
    line3 = gw(ev, "gw.line3")
    assert line3.envelopes == 0
    assert line3.outages == (evidence.Outage(plant.at(0), plant.at(180)),)
    assert line3.online_seconds == 0.0
    assert ev.stage("设备管理") == evidence.StageCoverage("设备管理", 2, 1)


@pytest.mark.parametrize("state", ["autocommit", "in-transaction"])
def test_collect_gives_the_same_answer_whatever_the_connection_state(
    plant: Any, faulty: evidence.FirmEvidence, state: str
) -> None:
    with psycopg.connect(plant.dsn, autocommit=state == "autocommit") as conn:
        if state == "in-transaction":
            conn.execute("SELECT 1")  # a caller's transaction: evidence reads inside it
        again = evidence.collect(
            conn, faulty.firm, faulty.window, plant.registered[FAULTY], as_of=faulty.as_of,
            params=faulty.params,
        )  # fmt: skip
    assert again == faulty


def test_identifier_coverage_of_a_plant_whose_records_match(
    healthy: evidence.FirmEvidence, faulty: evidence.FirmEvidence
) -> None:
    # kiln, press, fan and meter delivered (the faulty ones less, but something); spare never
    for ev in (healthy, faulty):
        assert ev.identifier_coverage == evidence.IdentifierCoverage(4, 4, 1.0, ())


def test_identifier_coverage_counts_only_devices_that_delivered(plant: Any) -> None:
    # the last minute: the faulty press and meter are silent, so they are not asked about
    ev = plant.collect(FAULTY, plant.window(120, 180))
    assert ev.identifier_coverage == evidence.IdentifierCoverage(2, 2, 1.0, ())
    assert plant.collect(HEALTHY, plant.window(120, 180)).identifier_coverage.delivering == 4


@contextlib.asynccontextmanager
async def records_changed(
    plant: Any, firm: str, put: dict[str, identifiers.DeviceRecord], deleted: tuple[str, ...] = ()
) -> AsyncIterator[list[evidence.RegisteredDevice]]:
    """``firm``'s device records read through a node after ``put`` and ``deleted`` changed
    them on it; the plant's records are put back on leaving."""
    node_config = identifiers.NodeConfig.model_validate(
        {"kind": "identifiers", "listen": {"host": "127.0.0.1", "port": 0},
         "database": {"dsn": plant.dsn, "pool_max": 2}, "authoritative": ["88.709"]}
    )  # fmt: skip
    async with identifiers.Node(node_config) as node:
        _, token = await node.registry.create_token("88.709", days=1, label="evidence test")
        async with identifiers.Client(node.url, token=token) as client:
            before = {h: await client.resolve(h) for h in (*put, *deleted)}
            try:
                await client.register([(h, r.to_values()) for h, r in put.items()])
                for handle in deleted:
                    await client.delete(handle)
                yield await evidence.registered_devices(client, f"{firm}/firm")
            finally:
                await client.register([(h, r.values) for h, r in before.items()])


def collect_with(plant: Any, firm: str, registered: list[evidence.RegisteredDevice]) -> Any:
    with psycopg.connect(plant.dsn) as conn:
        return evidence.collect(
            conn, f"{firm}/firm", plant.window(), registered, as_of=plant.at(180),
            params=evidence.Params(fresh_within=60, outage_after=30),
        )  # fmt: skip


async def test_identifier_coverage_lists_devices_the_registry_no_longer_vouches_for(
    plant: Any,
) -> None:
    """After the data arrived, the faulty firm's records change on the node: the fan is moved
    to gw.line2, the press's record is deleted, the kiln is re-registered to the healthy firm.
    Read again through the client, only the meter still matches what the store holds."""
    firm, other = f"{FAULTY}/firm", f"{HEALTHY}/firm"
    fan, press, kiln = (f"{FAULTY}/dev.{d}" for d in ("fan", "press", "kiln"))
    line1, line2 = f"{FAULTY}/gw.line1", f"{FAULTY}/gw.line2"
    put = {
        fan: identifiers.DeviceRecord(enterprise=firm, gateway=line2),
        kiln: identifiers.DeviceRecord(enterprise=other, gateway=f"{HEALTHY}/gw.line1"),
    }
    async with records_changed(plant, FAULTY, put, deleted=(press,)) as registered:
        assert [d.identifier for d in registered] == [
            fan, f"{FAULTY}/dev.meter", f"{FAULTY}/dev.spare"
        ]  # fmt: skip
        ev = collect_with(plant, FAULTY, registered)
    assert ev.identifier_coverage == evidence.IdentifierCoverage(
        delivering=4,
        matched=1,
        rate=0.25,
        unmatched=(
            evidence.Unmatched(fan, "other_gateway", (line1,), line2),
            evidence.Unmatched(kiln, "no_record", (line1,), None),
            evidence.Unmatched(press, "no_record", (line1,), None),
        ),
    )


async def test_a_stage_served_by_tags_is_automatic_when_one_of_them_is_fresh(
    plant: Any, kit: Any
) -> None:
    """Per-tag stages (``GT_TAG_STAGE``) read through the node: a stage only some tags serve
    counts the device once, networked when one of those tags has fresh good data."""

    def device(firm: str, name: str, **kw: Any) -> tuple[str, identifiers.DeviceRecord]:
        gateway, key, stages, _tags = kit.PLANT[name]
        record = identifiers.DeviceRecord(
            enterprise=f"{firm}/firm", gateway=f"{firm}/{gateway}", key_equipment=key,
            stages=stages, name=name, **kw,
        )  # fmt: skip
        return f"{firm}/{name}", record

    healthy_fan = device(
        HEALTHY, "dev.fan", tag_stages={"设备管理": ("rpm",), "仓储物流": ("rpm",)}
    )
    async with records_changed(plant, HEALTHY, dict([healthy_fan])) as registered:
        fan = next(d for d in registered if d.identifier == healthy_fan[0])
        assert fan.tag_stages == {"设备管理": ("rpm",), "仓储物流": ("rpm",)}
        healthy = collect_with(plant, HEALTHY, registered)
    assert dev(healthy, "dev.fan").tag_stages == fan.tag_stages
    assert healthy.stage("设备管理") == evidence.StageCoverage("设备管理", 3, 3)
    assert healthy.stage("仓储物流") == evidence.StageCoverage("仓储物流", 1, 1)
    assert healthy.stage("安全生产") == evidence.StageCoverage("安全生产", 1, 1)

    put = dict([
        # the fan's samples are all BAD: its tag serves the stage, but not automatically
        device(FAULTY, "dev.fan", tag_stages={"仓储物流": ("rpm",)}),
        # the kiln is networked, but its tag "level" never sent anything; 设备管理 it serves
        # as a whole already, so its tag does not count it twice
        device(FAULTY, "dev.kiln", tag_stages={"计划排程": ("level",), "设备管理": ("temp",)}),
    ])  # fmt: skip
    async with records_changed(plant, FAULTY, put) as registered:
        faulty = collect_with(plant, FAULTY, registered)
    assert faulty.stage("仓储物流") == evidence.StageCoverage("仓储物流", 1, 0)
    assert faulty.stage("计划排程") == evidence.StageCoverage("计划排程", 1, 0)
    assert faulty.stage("设备管理") == evidence.StageCoverage("设备管理", 2, 1)
