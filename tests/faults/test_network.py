"""A network cut between gateway and broker: packets vanish, nobody says so.

The uplink outage of ``test_backlog.py`` closes the gateway's connection: the gateway sees a
reset at once. A cable or cellular cut is silent: TCP connections stay half-open, the gateway
must find out itself (MQTT keepalive), reconnect once the path is back and send again what was
in flight, while the broker keeps the old session until its own keepalive expires.

This test makes a network namespace of its own (with a PID namespace, so that every process of
the scenario dies with it) and runs ``netns_scenario.py`` inside it: the whole plant on that
namespace's loopback, the gateway's path to the broker cut by a ``tc`` filter for longer than
the keepalive, under load. It records the reconciliation the scenario writes. Root only; it
skips when namespaces or the ``tc`` classifiers it needs are missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from _services import BOOTSTRAP_ENV, DSN_ENV, URL_ENV
from faults._harness import Outcome
from faults.netns_scenario import CUT_SECONDS, RESULT_ENV

Record = Callable[[Outcome], Outcome]
ROOT = Path(__file__).parents[2]
#: a network, PID and mount namespace (for its own /proc), killed with everything in it when
#: this process goes away, whatever way it goes
UNSHARE = ["unshare", "--net", "--pid", "--fork", "--kill-child", "--mount-proc", "--"]
#: what the scenario needs of the kernel: loopback up, an htb qdisc and a u32 classifier
PROBE = (
    "ip link set lo up && tc qdisc add dev lo root handle 1: htb && "
    "tc filter add dev lo parent 1: protocol ip prio 1 u32 match ip dport 1 0xffff flowid 1:2"
)


def namespace_or_skip() -> None:
    if os.geteuid() != 0:
        pytest.skip("making a network namespace and a tc filter needs root")
    missing = [tool for tool in ("unshare", "ip", "tc") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (util-linux, iproute2)")
    probe = subprocess.run([*UNSHARE, "sh", "-c", PROBE], capture_output=True, text=True,
                           timeout=30, check=False)  # fmt: skip
    if probe.returncode != 0:
        pytest.skip(f"cannot make a network namespace with a tc filter: {probe.stderr.strip()}")


def test_network_cut_between_gateway_and_broker(outcome: Record, tmp_path: Path) -> None:
    """The gateway's path to the broker drops every packet for ``CUT_SECONDS`` (25 s; the
    keepalive is 2 s) while the simulators are polled; then it is mended. The gateway must
    notice, reconnect and resend; every sample is stored once."""
    namespace_or_skip()
    result = tmp_path / "outcome.json"
    # the machine's servers are not reachable from inside: the scenario starts its own
    env = {k: v for k, v in os.environ.items() if k not in (DSN_ENV, URL_ENV, BOOTSTRAP_ENV)}
    env[RESULT_ENV] = str(result)
    argv = [
        *UNSHARE, "sh", "-c", 'ip link set lo up && exec "$@"', "sh",
        sys.executable, "-m", "pytest", str(Path(__file__).with_name("netns_scenario.py")),
        "-q", "-x", "-p", "no:cacheprovider", f"--basetemp={tmp_path / 'inside'}",
        "-o", f"timeout={CUT_SECONDS + 215}",
    ]  # fmt: skip
    within = CUT_SECONDS + 245
    try:
        done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=within, check=False)  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the scenario did not end within {within} s:\n{_tail(exc.stdout)}")
    if not result.exists():
        pytest.fail(f"the scenario wrote no outcome (exit {done.returncode}):\n"
                    f"{_tail(done.stdout)}\n{_tail(done.stderr)}")  # fmt: skip
    row = outcome(Outcome(**json.loads(result.read_text(encoding="utf-8"))))
    assert row.passed, f"{row.scenario}: {row.verdict} ({'; '.join(row.notes)})"
    assert done.returncode == 0, f"the scenario failed:\n{_tail(done.stdout)}"


def _tail(text: str | bytes | None, lines: int = 40) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return "\n".join((text or "").splitlines()[-lines:])
