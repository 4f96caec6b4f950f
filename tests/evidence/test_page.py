"""The evidence web page in headless Chromium, over a live pipeline: Modbus simulators →
gateway (drivers, outbox, signing) → Mosquitto → ingest → PostgreSQL, with the gateway and its
devices registered on an identifier node from the gateway's config.

The browser logs in with a token, watches a live value change, opens a chart, checks the
indicator table and the integrity panel against the API's own answer, and switches to English.
Screenshots are kept in ``var/test-artifacts/evidence-page/`` for a person to look at.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import yaml
from _services import MosquittoBroker, PostgresServer, free_port, ingest_config
from playwright.sync_api import Page, expect, sync_playwright

import evidence
import identifiers
import simulators
from gateway._keys import create_key
from gateway._runtime import running
from gateway.config import GatewayConfig
from guantong.cli.identifiers import gateway_records
from guantong.cli.sim import gateway_config
from ingest import Ingest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "var" / "test-artifacts" / "evidence-page"
CHROMIUM = "/usr/bin/chromium"
# the network is closed and the browser is Debian's: nothing may be fetched or updated
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]  # fmt: skip
PREFIX = "88.709.911"
FIRM, KILN = f"{PREFIX}/firm", f"{PREFIX}/dev.kiln-1"
SECRET, SHA256 = evidence.new_token()


def factory(port: int) -> dict[str, Any]:
    return {
        "kind": "factory", "name": "KilnWorks", "firm": {"name": "test firm", "prefix": PREFIX},
        "seed": 7,
        "endpoints": [{"name": "plc", "protocol": "modbus-tcp", "host": "127.0.0.1", "port": port}],
        "lines": [{"name": "Line1", "machines": [
            {"name": "kiln-1", "profile": "kiln", "endpoint": "plc", "unit_id": 1},
            {"name": "meter-1", "profile": "meter", "endpoint": "plc", "unit_id": 2},
        ]}],
    }  # fmt: skip


def pipeline(dsn: str, broker: MosquittoBroker, tmp: Path, kit: Any) -> Any:
    """``around`` for the service: registers the gateway and its devices, then runs ingest,
    the simulated PLCs and the gateway while the service serves."""

    @contextlib.asynccontextmanager
    async def run(node_url: str, node_token: str) -> AsyncIterator[None]:
        (tmp / "factory.yaml").write_text(yaml.safe_dump(factory(free_port())), encoding="utf-8")
        fac = simulators.load_factory(tmp / "factory.yaml")
        doc = gateway_config(fac, base_dir=tmp)
        doc["uplink"] = {"broker": broker.url}
        doc["envelope"] = {"max_samples": 200, "max_delay": "100ms"}
        doc["health"] = None
        config = GatewayConfig.model_validate(doc, context={"base_dir": tmp})
        create_key(config.gateway.key_file)
        async with identifiers.Client(node_url, token=node_token) as client:
            await client.register(gateway_records(config, None))
        settings = ingest_config(dsn, broker.port, node_url, tmp, health=None)
        async with Ingest(settings) as ingest, simulators.Simulator(fac, base_dir=tmp):
            # the broker keeps messages for ingest only once it has subscribed
            await kit.wait_until(lambda: ingest.consumer.stats.subscribed)
            async with running(config, drain_timeout=10):
                yield

    return run


@pytest.fixture
def served(pg_server: PostgresServer, kit: Any, tmp_path: Path) -> Iterator[Any]:
    tokens = [{"name": "evaluator-zhang", "role": "evaluator", "firms": [FIRM], "sha256": SHA256}]
    with (
        pg_server.database() as dsn,
        MosquittoBroker() as broker,
        kit.Served(dsn, tmp_path, tokens, around=pipeline(dsn, broker, tmp_path, kit)) as service,
    ):
        yield service


@pytest.fixture
def page() -> Iterator[Page]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: scripts/setup installs Debian's chromium")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            yield context.new_page()
        finally:
            browser.close()


def live_cell(page: Page, tag: str) -> Any:
    return page.locator(f'#live tbody tr[data-tag="{tag}"] td.value')


def test_the_page_shows_live_values_charts_and_the_indicator_table(served: Any, page: Page) -> None:
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # the page runs under its Content-Security-Policy: a violation is logged to the console
    page.on(
        "console", lambda msg: "Content Security Policy" in msg.text and errors.append(msg.text)
    )
    page.goto(served.url + "/")
    expect(page.locator("h1")).to_have_text("贯通 · 数据连通证据")
    page.fill("#token", "not-the-token")
    page.click("#login button[type=submit]")
    expect(page.locator("#login-error")).to_have_text("令牌无效或已过期")

    page.fill("#token", SECRET)
    page.click("#login button[type=submit]")
    expect(page.locator("#who")).to_have_text("evaluator-zhang (evaluator)")
    expect(page.locator("#firm")).to_have_value(FIRM)
    kiln = page.locator(f'#devices tbody tr[data-device="{KILN}"]')
    expect(kiln).to_have_attribute("data-status", "live", timeout=30_000)
    expect(kiln.locator("td.status")).to_have_text("在线")
    # the kiln's profile declares its OEE signals, but no reject counter: OEE itself cannot be
    # said, its availability and performance can; the meter declares none
    expect(kiln.locator("td.oee")).to_have_text(
        re.compile(r"^— \(A (\d+\.\d%|—) · P (\d+\.\d%|—) · Q —\)$"), timeout=30_000
    )
    meter = page.locator(f'#devices tbody tr[data-device="{PREFIX}/dev.meter-1"]')
    expect(meter.locator("td").last).to_have_text("—")

    kiln.click()
    expect(page.locator("#device-id")).to_have_text(KILN)
    cell = live_cell(page, "zone1_temp")
    expect(cell).not_to_be_empty(timeout=15_000)
    first = cell.inner_text()
    # the simulated kiln's temperature carries noise: the next polls show another reading
    expect(cell).not_to_have_text(first, timeout=20_000)
    assert float(cell.inner_text()) > 0
    chart = page.locator('#charts .chart[data-tag="zone1_temp"]')
    expect(chart.locator("canvas")).to_be_visible(timeout=15_000)
    # a chart polls its series: points are added as the gateway delivers them
    expect(chart).to_have_attribute("data-points", re.compile(r"^([2-9]|\d\d+)$"), timeout=20_000)

    # the indicator table shows what the API assesses, in the page's words
    expect(page.locator("#indicators tbody tr")).to_have_count(7, timeout=30_000)
    # the answer the page itself renders: asked anew (as a change of window does), since the
    # data keeps arriving and a strength may change between two requests
    with page.expect_response(lambda r: "/api/v1/evidence" in r.url and r.ok) as shown:
        page.dispatch_event("#span", "change")
    answer = shown.value.json()
    words = {"none": "无", "weak": "弱", "partial": "部分", "strong": "强"}
    kiln_facts = next(d for d in answer["evidence"]["devices"] if d["identifier"] == KILN)
    assert kiln_facts["oee"]["missing"][-1:] == [
        "quality: neither a good-part nor a reject counter declared"
    ]
    listed = httpx.get(f"{served.url}/api/v1/devices", params={"firm": FIRM}, timeout=30,
                       headers={"Authorization": f"Bearer {SECRET}"}).json()  # fmt: skip
    declared = {d["identifier"]: d["oee"] for d in listed["devices"]}
    assert declared == {
        KILN: {"state": "state", "running": [2.0], "planned": [1.0, 2.0, 3.0],
               "total": "car_count", "good": None, "defects": None, "ideal_cycle": 1800.0},
        f"{PREFIX}/dev.meter-1": None,
    }  # fmt: skip
    networking = answer["assessment"]["items"][0]
    assert networking["id"] == "basis.device_networking"
    # the kiln is the only key equipment (a meter is not production equipment) and it is live
    assert (networking["strength"], networking["points"]) == ("strong", 6.0)
    for item in answer["assessment"]["items"]:
        row = page.locator(f'#indicators tbody tr[data-item="{item["id"]}"]')
        expect(row.locator("td.strength")).to_have_text(words[item["strength"]])
    row = page.locator('#indicators tbody tr[data-item="basis.device_networking"]')
    expect(row.locator("td.points")).to_have_text("6 / 6")
    # the basis and what is left to check, in the page's language
    assert networking["basis_zh"].startswith("已登记关键设备1台，其中1台")
    expect(row.locator("td.basis")).to_have_text(networking["basis_zh"])
    expect(row.locator("td.to-check")).to_have_text("设备台账包含全部生产设备（现场核实）")
    expect(page.locator("#networking")).to_contain_text("100.0% (1 / 1")
    expect(page.locator("#doubts li")).to_have_text("未发现可信度问题")
    expect(page.locator('#integrity dd[data-fact="chainBreaks"]')).to_have_text("0")
    envelopes = page.locator('#integrity dd[data-fact="envelopes"]')
    assert int(envelopes.inner_text()) > 0
    page.screenshot(path=ARTIFACTS / "zh.png", full_page=True)

    with page.expect_request(lambda r: "/api/v1/evidence" in r.url) as asked:
        page.select_option("#span", "86400")  # the evidence of the last 24 h
    query = parse_qs(urlsplit(asked.value.url).query)
    start, end = (dt.datetime.fromisoformat(query[k][0]) for k in ("start", "end"))
    assert end - start == dt.timedelta(days=1)
    page.click("#lang")
    expect(page.locator("h1")).to_have_text("Guantong · connectivity evidence")
    expect(kiln.locator("td.status")).to_have_text("live")
    expect(row.locator("td.strength")).to_have_text("strong")
    expect(page.locator("#indicators th").first).to_have_text("Item")
    expect(row.locator("td.basis")).to_have_text(
        re.compile(r"^1 of 1 registered key devices sent fresh good data")
    )
    expect(row.locator("td.to-check")).to_have_text(
        "the register holds every production device (checked on site)"
    )
    page.screenshot(path=ARTIFACTS / "en.png", full_page=True)

    # the address names firm and device: a reload (the token stays with the tab) or a link
    # that names only the device (as an identifier record may) opens them again
    assert page.url.endswith("#firm=88.709.911%2Ffirm&device=88.709.911%2Fdev.kiln-1")
    page.reload()
    expect(page.locator("#device-id")).to_have_text(KILN)
    page.goto(f"{served.url}/#device={KILN}")
    page.reload()
    expect(page.locator("#device-id")).to_have_text(KILN)
    expect(page.locator("#firm")).to_have_value(FIRM)
    expect(page.locator("h1")).to_have_text("Guantong · connectivity evidence")  # kept

    page.click("#logout")
    expect(page.locator("#login")).to_be_visible()
    expect(page.locator("#app")).to_be_hidden()
    page.reload()  # the token is gone with the logout
    expect(page.locator("#login")).to_be_visible()
    assert errors == []


def test_a_provider_switches_firms_and_sees_the_faulty_ones_doubts(
    plant: Any, kit: Any, page: Page, tmp_path: Path
) -> None:
    """Over the plant of conftest.py: the faulty firm's forged envelope, undeclared gap and
    silent devices show on the page, its healthy twin's do not."""
    healthy, faulty = f"{kit.HEALTHY}/firm", f"{kit.FAULTY}/firm"
    secret, sha256 = evidence.new_token()
    tokens = [{"name": "provider-acme", "role": "provider", "firms": [healthy, faulty],
               "sha256": sha256}]  # fmt: skip
    metrics = {"fresh_within": 60, "outage_after": 30}
    with kit.Served(plant.dsn, tmp_path, tokens, metrics=metrics) as served:
        page.goto(served.url + "/")
        page.fill("#token", secret)
        page.click("#login button[type=submit]")
        expect(page.locator("#firm option")).to_have_count(2)
        expect(page.locator("#firm")).to_have_value(healthy)
        expect(page.locator("#doubts li")).to_have_text("未发现可信度问题")

        page.select_option("#firm", faulty)
        spare = page.locator(f'#devices tbody tr[data-device="{kit.FAULTY}/dev.spare"]')
        expect(spare.locator("td.status")).to_have_text("无数据")
        kiln = page.locator(f'#devices tbody tr[data-device="{kit.FAULTY}/dev.kiln"]')
        # the plant's data is minutes old, older than fresh_within
        expect(kiln.locator("td.status")).to_have_text("数据过期")
        auth = {"Authorization": f"Bearer {secret}"}
        answer = httpx.get(
            f"{served.url}/api/v1/evidence", params={"firm": faulty}, headers=auth, timeout=30
        ).json()
        doubts = answer["assessment"]["doubts"]
        assert doubts == [
            "1 envelopes with an invalid signature",
            "1 envelopes missing without a declared loss",
        ]
        assert answer["assessment"]["doubts_zh"] == [
            "1个数据包签名无效",
            "1个数据包缺失，且网关未声明丢失",
        ]
        # the Chinese page gives the reasons in Chinese
        expect(page.locator("#doubts li")).to_have_text(answer["assessment"]["doubts_zh"])
        expect(page.locator('#integrity dd[data-fact="badSignatures"]')).to_have_text("1")
        expect(page.locator('#integrity dd[data-fact="undeclaredMissing"]')).to_have_text("1")
        expect(page.locator('#integrity dd[data-fact="quarantined"]')).to_have_text(
            "bad_signature: 1"
        )
        # every item is capped at weak while the evidence is in doubt
        strengths = page.locator("#indicators tbody td.strength")
        expect(strengths).to_have_count(7)
        assert set(strengths.all_inner_texts()) <= {"弱", "无"}
        page.screenshot(path=ARTIFACTS / "faulty-firm.png", full_page=True)
