"""OEE in SQL against hand-made rows in a real PostgreSQL: every factor exactly as the rows say.

One device, a window of 600 s, state and counters sampled every 5 s (sample k at 5k s, k = -1
before the window up to 119): running for k < 60, idle for 60..83, alarm for 84..95, off
from 96; one part per running sample, a reject every 20 samples, the reject counter reset to
zero at k = 40. Samples 10..21 are missing (a 65 s silence, longer than ``outage_after``).
"""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import evidence
import identifiers
from ingest import Batch, Store, migrate

FIRM, GW, DEV = "88.709.911/firm", "88.709.911/gw.a", "88.709.911/dev.press"
START = dt.datetime(2026, 12, 1, 8, 0, tzinfo=dt.UTC)
SILENT = range(10, 22)
OFF, IDLE, RUNNING, ALARM = 0, 1, 2, 3
SIGNALS = identifiers.OeeSignals(
    state="state", running=(RUNNING,), planned=(IDLE, RUNNING, ALARM), total="parts",
    defects="rejects", ideal_cycle=5.0,
)  # fmt: skip


def state(k: int) -> int:
    if k < 60:
        return RUNNING
    if k < 84:
        return IDLE
    return ALARM if k < 96 else OFF


def parts(k: int) -> int:
    return 1000 + min(max(k, 0), 60)  # one part per running sample before k


def rejects(k: int) -> int:
    return 50 + max(k, 0) // 20 if k < 40 else (k - 40) // 20  # reset to 0 at k = 40


def _us(t: dt.datetime) -> int:
    return int(t.timestamp() * 1_000_000)


@pytest.fixture
def store(pg_dsn: str) -> str:
    migrate(pg_dsn)
    s = Store(pg_dsn, partitions_ahead=1)
    s.connect()
    try:
        firm = s.enterprise_id(FIRM)
        dev = s.device_id(DEV, firm, s.gateway_id(GW, firm))
        series = s.series_ids(dev, ["state", "parts", "rejects", "noise"])
        batch = Batch()
        for k in range(-1, 120):
            if k in SILENT:
                continue
            ts = _us(START + dt.timedelta(seconds=5 * k))
            rows = [("state", ts, state(k), 0), ("parts", ts, parts(k), 0),
                    ("rejects", ts, rejects(k), 0)]  # fmt: skip
            if k in (30, 31):  # a bad reading between good ones changes nothing
                rows += [("state", ts + 1000, OFF, 2), ("parts", ts + 1000, 0, 2)]
            batch.add_samples(rows, series)
        s.write(batch)
    finally:
        s.close()
    return pg_dsn


def collect(dsn: str, signals: identifiers.OeeSignals | None, **kw: Any) -> evidence.FirmEvidence:
    device = evidence.RegisteredDevice(DEV, GW, True, ("设备管理",), oee=signals)
    window = evidence.Window(START, START + dt.timedelta(seconds=600))
    kw.setdefault("params", evidence.Params(outage_after=30))
    with psycopg.connect(dsn) as conn:
        return evidence.collect(conn, FIRM, window, [device], **kw)


def test_each_factor_is_what_the_rows_say(store: str) -> None:
    got = collect(store, SIGNALS).device(DEV).oee
    assert got is not None
    # observed: the 600 s but the 65 s between samples 9 and 22
    assert got.observed_seconds == 600 - 65
    # running: samples 0..8 and 22..59, 5 s each
    assert got.running_seconds == (9 + 38) * 5
    assert got.planned_seconds == got.running_seconds + 24 * 5 + 12 * 5
    assert got.availability == pytest.approx(235 / 415)
    # one part per running stretch observed: the parts made in the silence are not counted,
    # as its running time is not
    assert got.total == 47
    assert got.performance == pytest.approx(5.0 * 47 / 235) == pytest.approx(1.0)
    # rejects at k = 20 (across the silence: not counted), then reset to 0 at k = 40 (no
    # negative count), then at 60, 80, 100
    assert got.good == 47 - 3
    assert got.counter_resets == 1
    assert got.quality == pytest.approx(44 / 47)
    assert got.oee == pytest.approx(235 / 415 * 1.0 * 44 / 47)
    assert got.missing == ()


def test_a_longer_hold_counts_the_silence(store: str) -> None:
    got = collect(store, SIGNALS, params=evidence.Params(outage_after=65)).device(DEV).oee
    assert got is not None
    assert got.observed_seconds == 600
    assert got.running_seconds == 60 * 5
    assert got.total == 60
    assert got.good == 60 - 4
    assert got.availability == pytest.approx(300 / 480)


def test_a_window_that_ends_early_is_cut_at_as_of(store: str) -> None:
    as_of = START + dt.timedelta(seconds=302)
    got = collect(store, SIGNALS, as_of=as_of, params=evidence.Params(outage_after=65))
    oee = got.device(DEV).oee
    assert oee is not None
    # samples 0..59 running (300 s), sample 60 (idle) holds until as_of: 2 s
    assert (oee.running_seconds, oee.planned_seconds) == (300, 302)


def test_what_is_not_declared_is_named_and_oee_stays_unknown(store: str) -> None:
    bare = identifiers.OeeSignals(state="state", running=(RUNNING,), planned=(IDLE, RUNNING))
    got = collect(store, bare).device(DEV).oee
    assert got is not None
    assert got.availability == pytest.approx(235 / (235 + 24 * 5))
    assert (got.performance, got.quality, got.oee, got.total) == (None, None, None, None)
    assert got.missing == (
        "total: no part counter declared",
        "quality: neither a good-part nor a reject counter declared",
        "performance: no ideal cycle time declared",
    )


def test_tags_without_data_are_named(store: str) -> None:
    wrong = SIGNALS.model_copy(update={"state": "status", "total": "count"})
    got = collect(store, wrong).device(DEV).oee
    assert got is not None
    assert got.oee is None
    assert got.availability is None
    assert "state: tag 'status' has no data in the store" in got.missing
    assert "total: tag 'count' has no data in the store" in got.missing


def test_a_device_without_a_declaration_has_no_oee(store: str) -> None:
    assert collect(store, None).device(DEV).oee is None


def test_oee_of_a_key_device_evidences_the_oee_part_of_equipment_management(store: str) -> None:
    item = evidence.assess(collect(store, SIGNALS)).item("scene.equipment_management.3")
    assert item.facts["oee"] == {DEV: pytest.approx(235 / 415 * 44 / 47)}
    assert item.not_evidenced == ("fault analysis", "remote diagnosis")
    assert "OEE computed for 1 of them" in item.basis
    assert item.strength in ("weak", "partial")  # never the whole level
    without = evidence.assess(collect(store, SIGNALS.model_copy(update={"ideal_cycle": None})))
    item = without.item("scene.equipment_management.3")
    assert item.facts["oee"] == {}
    assert "OEE statistics" in item.not_evidenced


def test_the_signed_report_carries_oee_and_a_changed_figure_fails_its_signature(
    store: str,
) -> None:
    device = evidence.RegisteredDevice(DEV, GW, True, ("设备管理",), oee=SIGNALS)
    window = evidence.Window(START, START + dt.timedelta(seconds=600))
    with psycopg.connect(store) as conn:
        report = evidence.build_report(conn, FIRM, window, [device], Ed25519PrivateKey.generate(),
                                       params=evidence.Params(outage_after=30))  # fmt: skip
    (facts,) = report.report["facts"]["devices"]
    assert facts["oee"]["total"] == 47
    assert facts["oee"]["availability"] == pytest.approx(235 / 415)
    assert facts["oee"]["missing"] == []
    result = evidence.verify_report(report, {GW: "no key in this test"})
    assert ("platform signature", "ok") in {(f.check, f.status) for f in result.findings}
    doc = copy.deepcopy(report.report)
    doc["facts"]["devices"][0]["oee"]["availability"] = 0.99
    changed = evidence.verify_report(evidence.Report(doc, report.signature), {GW: "no key"})
    assert ("platform signature", "report") in [(f.check, f.subject) for f in changed.failures]
    page = evidence.render_html(report, "sha256:test")
    assert "<h2>设备综合效率 OEE</h2>" in page
    assert f'<td>{DEV}</td><td class="num">56.6%</td>' in page  # 235 / 415


def test_a_stretch_may_last_one_and_a_half_expected_intervals_when_that_is_longer(
    store: str,
) -> None:
    """Samples 5 s apart (the tags' median spacing) with ``outage_after`` 4 s: stretches up to
    7.5 s count, so jitter around a slow poll does not lose them; the 65 s silence does not."""
    short = collect(store, SIGNALS, params=evidence.Params(outage_after=4)).device(DEV).oee
    usual = collect(store, SIGNALS).device(DEV).oee
    assert short == usual
    assert short is not None
    assert short.observed_seconds == 600 - 65
