"""``guantong demo`` brings data through the real pipeline and leaves nothing running."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_the_demo_verifies_data_of_every_device_and_stops_cleanly(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-m", "guantong", "demo", "--duration", "6", "--workdir", str(workdir)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    summary = re.fullmatch(
        r"verified (\d+) samples in (\d+) envelopes from (\d+) devices; (\d+) duplicates, "
        r"(\d+) rejected, (\d+) sequence numbers missing\n",
        result.stdout,
    )
    assert summary is not None, result.stdout
    samples, envelopes, devices, _, rejected, missing = map(int, summary.groups())
    assert samples > 0
    assert envelopes > 0
    assert devices == 7  # every machine of the demo factory, Modbus and OPC UA
    assert (rejected, missing) == (0, 0)
    assert "ready in" in result.stderr
    conf = str(workdir / "mosquitto.conf").encode()
    left = [p for p in Path("/proc").glob("[0-9]*") if conf in read_cmdline(p)]
    assert left == [], "the demo's broker is still running"


def read_cmdline(proc: Path) -> bytes:
    try:
        return (proc / "cmdline").read_bytes()
    except OSError:  # the process ended while we looked
        return b""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_stops_the_demo_cleanly(tmp_path: Path, sig: signal.Signals) -> None:
    workdir = tmp_path / "demo"
    proc = subprocess.Popen(
        [sys.executable, "-m", "guantong", "demo", "--workdir", str(workdir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:  # until the demo says it is ready
        if "ready in" in line:
            break
    else:
        pytest.fail(f"the demo stopped before it was ready: {proc.wait()}")
    time.sleep(2)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert out.startswith("verified ")
    conf = str(workdir / "mosquitto.conf").encode()
    assert [p for p in Path("/proc").glob("[0-9]*") if conf in read_cmdline(p)] == []
