"""The signed report through the real pipeline, and the verifier against a changed report.

Modbus simulators → the gateway (1 s checkpoints) → Mosquitto → ingest (verifies against a
real identifier node) → PostgreSQL; then ``guantong evidence report`` and ``verify`` as
commands, and ``evidence.verify_report`` on copies of the report with one thing changed each.
Twice: with whole checkpoints, and with a gateway that holds only a few counts a checkpoint
(so that every period takes partial checkpoints before the closing one).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import datetime as dt
import html
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from _services import (
    MosquittoBroker,
    PostgresServer,
    fetch,
    free_port,
    ingest_config,
    kiln_works,
    wait_until,
)
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import evidence
import gateway.protocol as p
import identifiers
import simulators
from evidence._report import signed_bytes, us
from gateway._keys import create_key
from gateway._runtime import running
from gateway.config import GatewayConfig
from guantong.cli.sim import gateway_config
from ingest import Ingest

pytestmark = pytest.mark.slow
FIRM = "88.709.911"
#: checkpoints the gateway makes before it stops (1 s each)
CHECKPOINTS = 6
#: counts a checkpoint holds in the second run: the two machines have some 30 tags
PARTIAL_LIMIT = 8


@dataclass
class Run:
    report: evidence.Report
    keys: dict[str, bytes | str]
    gateway: str
    window: evidence.Window
    cli_report: subprocess.CompletedProcess[str]
    cli_verify: subprocess.CompletedProcess[str]
    files: Path
    samples_in_window: int
    platform: Ed25519PrivateKey
    partial: bool
    dsn: str
    registered: Any


def guantong(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "guantong", "evidence", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def pipeline(dsn: str, broker: MosquittoBroker, tmp: Path, *, partial: bool) -> Run:
    node_config = identifiers.NodeConfig.model_validate(
        {"kind": "identifiers", "listen": {"host": "127.0.0.1", "port": 0},
         "database": {"dsn": dsn, "pool_max": 2}, "authoritative": ["88.709"]}
    )  # fmt: skip
    fac_file = tmp / "factory.yaml"
    fac_file.write_text(yaml.safe_dump(kiln_works(free_port())), encoding="utf-8")
    fac = simulators.load_factory(fac_file)
    doc = gateway_config(fac, base_dir=tmp)
    doc["uplink"] = {"broker": broker.url, "checkpoint_interval": "1s"}
    doc["envelope"] = {"max_samples": 100, "max_delay": "100ms"}
    doc["health"] = None
    config = GatewayConfig.model_validate(doc, context={"base_dir": tmp})
    gw_key = create_key(config.gateway.key_file)
    firm = config.gateway.enterprise
    async with identifiers.Node(node_config) as node:
        _, token = await node.registry.create_token("88.709", days=1, label="report tests")
        (tmp / "token").write_text(token, encoding="utf-8")
        async with identifiers.Client(node.url, token=token) as client:
            await client.register(
                [(config.gateway.id, identifiers.GatewayRecord(
                    enterprise=firm, public_key=p.public_key_bytes(gw_key)).to_values())]
                + [(d.id, identifiers.DeviceRecord(
                    enterprise=firm, gateway=config.gateway.id, key_equipment=True,
                    stages=("设备管理",), name=d.name).to_values()) for d in config.devices]
            )  # fmt: skip
            registered = await evidence.registered_devices(client, firm)
        settings = ingest_config(dsn, broker.port, node.url, tmp, health=None)
        async with Ingest(settings) as ingest, simulators.Simulator(fac, base_dir=tmp):
            await wait_until(lambda: ingest.consumer.stats.subscribed)
            async with running(config, drain_timeout=20) as gw:
                await wait_until(lambda: closing(dsn) >= CHECKPOINTS)
            sent = gw.writer.stats.envelopes + gw.writer.stats.checkpoints
            await wait_until(lambda: fetch(dsn, "SELECT count(*) FROM receipt") == [(sent,)])
        # ingest stored every checkpoint, the partial ones too
        stored = fetch(dsn, "SELECT count(*), count(*) FILTER (WHERE period_from = period_to) "
                       "FROM checkpoint")[0]  # fmt: skip
        assert stored[0] == gw.writer.stats.checkpoints
        assert bool(stored[1]) == partial
        # whole checkpoint periods, leaving out the first (the gateway started in it) and the
        # last (a sample committed late would be attested after it, by a checkpoint never made)
        periods = fetch(
            dsn,
            "SELECT period_from, period_to FROM checkpoint WHERE period_from < period_to "
            "ORDER BY seq",
        )
        window = evidence.Window(periods[1][0], periods[-2][1])
        samples = fetch(
            dsn,
            f"SELECT count(*) FROM sample WHERE ts >= '{window.start.isoformat()}' "  # noqa: S608
            f"AND ts < '{window.end.isoformat()}'",
        )[0][0]
        platform = Ed25519PrivateKey.generate()
        with psycopg.connect(dsn) as conn:
            report = evidence.build_report(conn, firm, window, registered, platform)
        when = {"--from": window.start.isoformat(), "--to": window.end.isoformat()}
        cli_report = await asyncio.to_thread(
            guantong, "report", "--firm", firm, *[x for kv in when.items() for x in kv],
            "--store", dsn, "--node", node.url, "--token-file", str(tmp / "token"),
            "--key", str(tmp / "platform.key"), "-o", str(tmp / "report.json"),
        )  # fmt: skip
        cli_verify = await asyncio.to_thread(
            guantong, "verify", str(tmp / "report.json"), "--node", node.url
        )
    keys: dict[str, bytes | str] = {config.gateway.id: p.public_key_bytes(gw_key)}
    return Run(
        report,
        keys,
        config.gateway.id,
        window,
        cli_report,
        cli_verify,
        tmp,
        samples,
        platform,
        partial,
        dsn,
        registered,
    )


def closing(dsn: str) -> int:
    """The closing checkpoints ingest stored."""
    return int(fetch(dsn, "SELECT count(*) FROM checkpoint WHERE period_from < period_to")[0][0])


@pytest.fixture(scope="module", params=["whole", "partial"])
def run(
    request: pytest.FixtureRequest,
    pg_server: PostgresServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Run]:
    partial = request.param == "partial"
    with (
        pytest.MonkeyPatch.context() as patch,
        pg_server.database() as dsn,
        MosquittoBroker() as broker,
    ):
        if partial:  # what the gateway puts in one checkpoint, not what a decoder accepts
            patch.setattr(p, "MAX_SAMPLES", PARTIAL_LIMIT)
        tmp = tmp_path_factory.mktemp("report")
        yield asyncio.run(pipeline(dsn, broker, tmp, partial=partial))


def changed(run: Run, edit: Any) -> evidence.Report:
    """A copy of the report with ``edit`` applied to its content, the signature kept."""
    doc = copy.deepcopy(run.report.report)
    edit(doc)
    return evidence.Report(doc, run.report.signature)


def failed(result: evidence.Verification) -> list[tuple[str, str]]:
    return [(f.check, f.subject) for f in result.failures]


def test_the_pipelines_report_verifies_exactly(run: Run) -> None:
    result = evidence.verify_report(run.report, run.keys)
    assert result.ok, result.table()
    by_check = {(f.check, f.status): f for f in result.findings}
    assert ("platform signature", "ok") in by_check
    assert "unbroken" in by_check["checkpoint sequence", "ok"].detail
    assert "exactly" in by_check["window count", "ok"].detail
    unchecked = {f.check for f in result.findings if f.status == "unchecked"}
    assert unchecked == {"platform key", "assessment"}, result.table()
    facts = run.report.report["facts"]
    assert sum(t["samples"] for t in facts["tags"]) == run.samples_in_window > 0
    attestation = run.report.report["attestation"]
    assert [a["gateway"] for a in attestation] == [run.gateway]
    assert len(attestation[0]["checkpoints"]) >= CHECKPOINTS - 3
    partial = [c for c in attestation[0]["checkpoints"] if is_partial(c)]
    assert bool(partial) == run.partial
    if run.partial:
        assert "of them partial" in by_check["checkpoint sequence", "ok"].detail
    # the fingerprint the evaluator compares turns the key from "unvouched" into checked
    key = base64.b64decode(run.report.report["platform_key"])
    vouched = evidence.verify_report(run.report, run.keys, platform_key=p.fingerprint(key))
    assert vouched.ok
    assert "platform key" not in {f.check for f in vouched.findings if f.status == "unchecked"}


def test_the_commands_write_sign_render_and_verify(run: Run) -> None:
    assert run.cli_report.returncode == 0, run.cli_report.stderr
    assert "made the platform key" in run.cli_report.stderr
    assert run.cli_verify.returncode == 0, run.cli_verify.stdout + run.cli_verify.stderr
    assert "0 failed" in run.cli_verify.stdout
    page = (run.files / "report.html").read_text(encoding="utf-8")
    assert "数据连通性证据报告" in page
    assert f"{FIRM}/dev.kiln-1" in page
    cover = run.report.report["facts"]["identifier_coverage"]
    assert cover["matched"] == cover["delivering"] > 0
    assert f"{cover['matched']} / {cover['delivering']}</td>" in page


def test_a_changed_count_fails_and_is_named(run: Run) -> None:
    def edit(doc: dict[str, Any]) -> None:
        doc["facts"]["tags"][0]["samples"] += 1

    tag = run.report.report["facts"]["tags"][0]
    assert tag["device"] in {d["identifier"] for d in run.report.report["facts"]["devices"]}
    result = evidence.verify_report(changed(run, edit), run.keys)
    assert ("platform signature", "report") in failed(result)
    assert ("count", f"{tag['device']} {tag['tag']}") in failed(result), result.table()
    assert ("report", tag["device"]) in failed(result), "the device total no longer adds up"


def test_a_changed_stored_count_fails_and_is_named(run: Run) -> None:
    def edit(doc: dict[str, Any]) -> None:
        doc["attestation"][0]["stored"][0][4] -= 1

    device, tag = run.report.report["attestation"][0]["stored"][0][:2]
    result = evidence.verify_report(changed(run, edit), run.keys)
    assert any(c == "count" and s.startswith(f"{device} {tag} ") for c, s in failed(result))


def test_a_device_left_out_fails_and_is_named(run: Run) -> None:
    gone = run.report.report["facts"]["devices"][0]["identifier"]

    def edit(doc: dict[str, Any]) -> None:
        facts = doc["facts"]
        facts["devices"] = [d for d in facts["devices"] if d["identifier"] != gone]
        facts["tags"] = [t for t in facts["tags"] if t["device"] != gone]

    result = evidence.verify_report(changed(run, edit), run.keys)
    named = [(c, s) for c, s in failed(result) if c == "device list"]
    assert named, result.table()
    assert all(s.startswith(gone + " ") for _, s in named)


def test_a_device_added_fails_and_is_named(run: Run) -> None:
    fake = f"{FIRM}/dev.fake-1"

    def edit(doc: dict[str, Any]) -> None:
        facts = doc["facts"]
        device = copy.deepcopy(facts["devices"][0])
        tag = copy.deepcopy(
            next(t for t in facts["tags"] if t["device"] == device["identifier"] and t["samples"])
        )
        device.update(identifier=fake, samples=tag["samples"])
        tag["device"] = fake
        facts["devices"].append(device)
        facts["tags"].append(tag)

    result = evidence.verify_report(changed(run, edit), run.keys)
    assert any(s.startswith(fake + " ") for _, s in failed(result)), result.table()


def test_a_flipped_checkpoint_signature_byte_fails_and_is_named(run: Run) -> None:
    checkpoints = run.report.report["attestation"][0]["checkpoints"]

    def attests_samples(item: dict[str, Any]) -> bool:
        cp = p.decode_json(json.dumps(item).encode()).envelope.checkpoint
        return cp is not None and any(c.samples for period in cp.periods for c in period.counts)

    # one that counted samples (on a loaded machine a 1 s period can pass with none read)
    index = next(i for i, item in enumerate(checkpoints) if i > 0 and attests_samples(item))
    checkpoint = checkpoints[index]

    def edit(doc: dict[str, Any]) -> None:
        item = doc["attestation"][0]["checkpoints"][index]
        sig = bytearray(base64.b64decode(item["sig"]))
        sig[10] ^= 0x01
        item["sig"] = base64.b64encode(bytes(sig)).decode()

    result = evidence.verify_report(changed(run, edit), run.keys)
    assert ("checkpoint", f"{run.gateway} #{checkpoint['seq']}") in failed(result)
    # its counts are no longer trusted: the periods it alone attested now disagree
    assert any(c == "count" for c, _ in failed(result))


def test_a_checkpoint_left_out_breaks_the_sequence(run: Run) -> None:
    after = run.report.report["attestation"][0]["checkpoints"][2]

    def edit(doc: dict[str, Any]) -> None:
        del doc["attestation"][0]["checkpoints"][1]

    result = evidence.verify_report(changed(run, edit), run.keys)
    assert ("checkpoint sequence", f"{run.gateway} #{after['seq']}") in failed(result)


def is_partial(item: dict[str, Any]) -> bool:
    return bool(item["checkpoint"]["from"] == item["checkpoint"]["to"])


def test_a_partial_checkpoint_left_out_breaks_the_sequence(run: Run) -> None:
    checkpoints = run.report.report["attestation"][0]["checkpoints"]
    if not run.partial:
        assert not any(is_partial(c) for c in checkpoints)
        return
    end = us(run.window.end)
    # the first partial one in the window, the one after it, and the window's last closing
    # one after a partial one (which then announces a closing checkpoint the report lacks)
    first = next(i for i, c in enumerate(checkpoints) if i > 0 and is_partial(c))
    last = max(
        i
        for i, c in enumerate(checkpoints)
        if i > 0 and is_partial(checkpoints[i - 1]) and not is_partial(c)
        and c["checkpoint"]["to"] <= end
    )  # fmt: skip
    for gone, named in ((first, first + 1), (first + 1, first + 2), (last, last - 1)):

        def edit(doc: dict[str, Any], gone: int = gone) -> None:
            del doc["attestation"][0]["checkpoints"][gone]

        result = evidence.verify_report(changed(run, edit), run.keys)
        subject = f"{run.gateway} #{checkpoints[named]['seq']}"
        assert ("checkpoint sequence", subject) in failed(result), (gone, result.table())


def test_a_window_ending_inside_a_period_verifies(run: Run) -> None:
    # the last closing checkpoint overlaps the window and ends after it; its partial ones
    # (their end is its end) belong to the report as much as it does
    window = evidence.Window(run.window.start, run.window.end - dt.timedelta(milliseconds=500))
    with psycopg.connect(run.dsn) as conn:
        report = evidence.build_report(
            conn, run.report.report["firm"], window, run.registered, run.platform
        )
    result = evidence.verify_report(report, run.keys)
    assert result.ok, result.table()
    checkpoints = report.report["attestation"][0]["checkpoints"]
    beyond = [c for c in checkpoints if c["checkpoint"]["to"] > us(window.end)]
    assert any(is_partial(c) for c in beyond) == run.partial


def test_only_the_platform_signature_fails_when_only_it_changed(run: Run) -> None:
    sig = bytearray(run.report.signature)
    sig[0] ^= 0x80
    result = evidence.verify_report(evidence.Report(run.report.report, bytes(sig)), run.keys)
    assert failed(result) == [("platform signature", "report")]
    other = p.fingerprint(bytes(32))
    assert ("platform key", p.fingerprint(base64.b64decode(run.report.report["platform_key"]))) in (
        failed(evidence.verify_report(run.report, run.keys, platform_key=other))
    )


def test_without_a_gateway_key_nothing_of_it_is_taken_as_checked(run: Run) -> None:
    result = evidence.verify_report(run.report, {})
    skipped = [f for f in result.findings if f.status == "unchecked" and f.check == "checkpoints"]
    assert [f.subject for f in skipped] == [run.gateway]
    assert not any(f.status == "ok" and f.check == "count" for f in result.findings)
    wrong = evidence.verify_report(run.report, {run.gateway: p.public_key_bytes(
        Ed25519PrivateKey.generate())})  # fmt: skip
    assert any(c == "checkpoint" for c, _ in failed(wrong))


def test_verify_command_offline_names_the_change_and_exits_1(run: Run, tmp_path: Path) -> None:
    doc = json.loads((run.files / "report.json").read_bytes())
    doc["report"]["facts"]["tags"][0]["samples"] += 5
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    keys = tmp_path / "keys.json"
    keys.write_text(
        json.dumps({g: base64.b64encode(k).decode() for g, k in run.keys.items()  # type: ignore[arg-type]
                    }), encoding="utf-8",
    )  # fmt: skip
    result = guantong("verify", str(tampered), "--keys", str(keys))
    assert result.returncode == 1
    tag = doc["report"]["facts"]["tags"][0]
    assert "FAIL       count" in result.stdout
    assert f"{tag['device']} {tag['tag']}: the report counts" in result.stdout
    assert guantong("verify", str(tampered)).returncode == 2
    keys.write_text('{"gw": "not base64!"}', encoding="utf-8")
    bad_keys = guantong("verify", str(tampered), "--keys", str(keys))
    assert bad_keys.returncode == 1
    assert "base64" in bad_keys.stderr


def test_a_report_changed_into_nonsense_fails_instead_of_crashing(run: Run) -> None:
    def edit(doc: dict[str, Any]) -> None:
        doc["facts"]["devices"][0]["samples"] = "many"

    result = evidence.verify_report(changed(run, edit), run.keys)
    assert ("report", "content") in failed(result)


def test_the_html_gives_each_basis_in_chinese_then_english(run: Run) -> None:
    page = evidence.render_html(run.report, "sha256:test")
    for item in run.report.report["assessment"]["items"]:
        assert item["basis_zh"]
        assert item["basis_zh"] != item["basis"]
        assert html.escape(f"{item['basis_zh']}\n{item['basis']}") in page
        for zh, en in zip(item["not_evidenced_zh"], item["not_evidenced"], strict=True):
            assert html.escape(f"{zh}\n{en}") in page


def test_a_report_made_before_the_chinese_texts_still_verifies_and_renders(run: Run) -> None:
    """Reports signed before the assessment carried Chinese texts (indicator file 2024.2) have
    no ``basis_zh``, ``not_evidenced_zh`` or ``doubts_zh``: they verify as before, and their
    HTML gives the English texts."""
    old = copy.deepcopy(run.report.report)
    assessment = old["assessment"]
    assessment["version"] = "2024.2"
    del assessment["doubts_zh"]
    for item in assessment["items"]:
        del item["basis_zh"], item["not_evidenced_zh"]
    signed = evidence.Report(old, run.platform.sign(signed_bytes(old)))
    result = evidence.verify_report(signed, run.keys)
    now = evidence.verify_report(run.report, run.keys)
    assert result.ok, result.table()
    assert [(f.status, f.check) for f in result.findings] == [
        (f.status, f.check) for f in now.findings
    ]
    page = evidence.render_html(signed, "sha256:test")
    for item in assessment["items"]:
        assert f"<td>{html.escape(item['basis'])}</td>" in page
    assert "已登记关键设备" not in page
