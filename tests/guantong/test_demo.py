"""``guantong demo`` brings the factory's data into the store and leaves nothing running."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psycopg
import pytest
import yaml

pytestmark = pytest.mark.slow


#: samples stored per device identifier
PER_DEVICE = (
    "SELECT d.identifier, count(*) FROM sample s JOIN series r ON r.id = s.series_id"
    " JOIN device d ON d.id = r.device_id GROUP BY 1 ORDER BY 1"
)


def demo(workdir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "guantong", "demo", "--workdir", str(workdir), *args]


def left_running(workdir: Path) -> list[str]:
    """Command lines of processes that name the demo's work directory (broker, PostgreSQL)."""
    needle = str(workdir).encode()
    left = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:  # the process ended while we looked
            continue
        if needle in cmdline:
            left.append(cmdline.replace(b"\0", b" ").decode(errors="replace"))
    return left


def live_devices(url: str, token: str) -> dict[str, str]:
    """The evidence API's status of each device of the demo's one firm."""
    auth = {"Authorization": f"Bearer {token}"}
    firms = httpx.get(f"{url}api/v1/firms", headers=auth, timeout=10).raise_for_status().json()
    assert len(firms) == 1, firms
    answer = httpx.get(
        f"{url}api/v1/devices",
        params={"firm": firms[0]["identifier"]},
        headers=auth,
        timeout=10,
    ).raise_for_status()
    return {d["identifier"]: d["status"] for d in answer.json()["devices"]}


def all_live(url: str, token: str, within: float = 30) -> dict[str, str]:
    """The devices' status once all are live, or when ``within`` seconds have passed."""
    deadline = time.monotonic() + within
    status = live_devices(url, token)
    while set(status.values()) != {"live"} and time.monotonic() < deadline:
        time.sleep(0.5)  # the slowest group is polled every few seconds
        status = live_devices(url, token)
    return status


def oee_of(url: str, token: str) -> dict[str, dict[str, object]]:
    """The OEE of each device of the demo's firm that has one, in the last hour."""
    auth = {"Authorization": f"Bearer {token}"}
    firm = httpx.get(f"{url}api/v1/firms", headers=auth, timeout=10).json()[0]["identifier"]
    answer = httpx.get(
        f"{url}api/v1/evidence", params={"firm": firm}, headers=auth, timeout=30
    ).raise_for_status()
    return {d["identifier"]: d["oee"] for d in answer.json()["evidence"]["devices"] if d["oee"]}


@pytest.mark.parametrize("payload", ["json", "sparkplug"])
def test_the_evidence_api_reports_every_demo_device_online(
    workdir: Path, pg_dsn: str, payload: str
) -> None:
    proc, lines = started(workdir, "--database", pg_dsn, "--format", payload)
    assert "ready in" in "".join(lines)
    assert "(Mosquitto, MQTT 5, topics gt/v1/#)\n" in "".join(lines)  # auto: it is installed
    page = re.search(r"evidence page: (http://\S+/)  token: (\S+)\n", "".join(lines))
    assert page is not None, "".join(lines)
    gateway = yaml.safe_load((workdir / "gateway.yaml").read_text(encoding="utf-8"))
    assert gateway["uplink"]["format"] == payload
    expected = sorted(d["id"] for d in gateway["devices"])
    assert len(expected) == 7  # every machine of the demo factory, Modbus and OPC UA
    try:
        assert all_live(page[1], page[2]) == dict.fromkeys(expected, "live")
        # the production machines declare their OEE signals, so the evidence shows OEE
        machines = {d["id"]: d["info"].get("oee") for d in gateway["devices"]}
        # its state tag is observed once its group (every 5 s) has been polled;
        # availability stays None while a machine is off (not planned production time)
        deadline = time.monotonic() + 30
        oee = oee_of(page[1], page[2])
        while not all(o["observed_seconds"] for o in oee.values()) and time.monotonic() < deadline:
            time.sleep(1)
            oee = oee_of(page[1], page[2])
        assert (
            {d for d, o in machines.items() if o}
            == set(oee)
            == {d for d in expected if "cnc" in d or "imm" in d}
        )
        assert all(o["observed_seconds"] > 0 for o in oee.values()), [
            (d, o["missing"]) for d, o in oee.items()
        ]
        # the page is served to anyone; its data only with the token
        assert httpx.get(page[1], timeout=10).status_code == 200
        assert httpx.get(f"{page[1]}api/v1/firms", timeout=10).status_code == 401
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    with psycopg.connect(pg_dsn) as conn:
        stored = conn.execute(PER_DEVICE).fetchall()
        problems = conn.execute(
            "SELECT (SELECT count(*) FROM quarantine), (SELECT count(*) FROM connectivity_event)"
        ).fetchone()
        samples = conn.execute("SELECT count(*) FROM sample").fetchone()
    assert [d for d, _ in stored] == expected
    assert all(n > 0 for _, n in stored)
    assert problems == (0, 0)
    assert samples is not None
    summary = re.fullmatch(
        r"stored (\d+) samples in (\d+) envelopes from (\d+) devices; 0 quarantined, "
        r"0 connectivity events\n",
        out,
    )
    assert summary is not None, out
    assert int(summary[1]) == samples[0]
    assert int(summary[3]) == 7
    assert left_running(workdir) == []


def test_on_its_embedded_broker_the_demo_reports_every_device_online(
    workdir: Path, pg_dsn: str
) -> None:
    """``--broker embedded`` (what runs without Mosquitto): amqtt, and MQTT 3.1.1 from the
    gateway and ingest."""
    proc, lines = started(workdir, "--database", pg_dsn, "--broker", "embedded")
    said = "".join(lines)
    assert re.search(
        r"MQTT broker: mqtt://127\.0\.0\.1:\d+ \(embedded amqtt \S+, MQTT 3\.1\.1", said
    )
    assert "sessions in memory only" in said
    gateway = yaml.safe_load((workdir / "gateway.yaml").read_text(encoding="utf-8"))
    ingest = yaml.safe_load((workdir / "ingest.yaml").read_text(encoding="utf-8"))
    assert gateway["uplink"]["protocol"] == ingest["mqtt"]["protocol"] == "3.1.1"
    expected = sorted(d["id"] for d in gateway["devices"])
    page = re.search(r"evidence page: (http://\S+/)  token: (\S+)\n", said)
    assert page is not None, said
    try:
        assert all_live(page[1], page[2]) == dict.fromkeys(expected, "live")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    with psycopg.connect(pg_dsn) as conn:
        stored = conn.execute(PER_DEVICE).fetchall()
    assert [d for d, _ in stored] == expected
    assert all(n > 0 for _, n in stored)
    assert re.fullmatch(r"stored \d+ samples in \d+ envelopes from 7 devices; 0 quarantined, "
                        r"0 connectivity events\n", out), out  # fmt: skip
    assert left_running(workdir) == []
    assert not (workdir / "amqtt.pid").exists()


def started(workdir: Path, *args: str) -> tuple[subprocess.Popen[str], list[str]]:
    """The demo, once it has committed its first rows; and what it said until then."""
    proc = subprocess.Popen(
        demo(workdir, *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stderr is not None
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if "first samples committed" in line:
            return proc, lines
    pytest.fail(f"the demo stopped before data arrived: {proc.wait()}: {''.join(lines)}")


@pytest.mark.parametrize(
    "sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=["ctrl-c", "sigterm", "sighup"]
)
def test_a_signal_stops_the_demo_and_its_own_postgresql_cleanly(
    workdir: Path, sig: signal.Signals
) -> None:
    proc, lines = started(workdir, "--size", "12")
    assert f"(cluster in {workdir / 'postgres'})\n" in "".join(lines)
    time.sleep(2)  # every device has been polled
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    found = re.fullmatch(r"stored (\d+) samples in \d+ envelopes from (\d+) devices; .*\n", out)
    assert found is not None, out
    assert int(found[1]) > 0
    assert int(found[2]) == 12  # the demo factory's 7 machines and 5 generated ones
    assert left_running(workdir) == []
    assert not (workdir / "postgres" / "data" / "postmaster.pid").exists()


@pytest.mark.parametrize("broker", ["mosquitto", "embedded"])
def test_a_demo_started_after_one_was_killed_stops_the_servers_left_behind(
    workdir: Path, broker: str
) -> None:
    killed, _ = started(workdir, "--broker", broker)
    killed.kill()  # SIGKILL: no cleanup; broker and PostgreSQL stay, in sessions of their own
    killed.communicate(timeout=10)
    assert any(str(workdir / f"{broker.replace('embedded', 'amqtt')}.") in cmd
               for cmd in left_running(workdir))  # fmt: skip
    again, _ = started(workdir, "--duration", "3", "--broker", broker)
    out, err = again.communicate(timeout=60)
    assert again.returncode == 0, err
    assert out.startswith("stored ")
    assert left_running(workdir) == []
