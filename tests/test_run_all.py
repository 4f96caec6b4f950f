"""``bench/run_all --quick``: the performance run's machinery, end to end.

Every benchmark runs briefly against real servers (the suite's PostgreSQL, each benchmark's
own Mosquitto, Tansu and simulators) under py-spy, and ``BENCHMARKS.md`` is written into a
temporary directory. The figures of a quick run say nothing, so only the file's structure is
checked: a section per benchmark with its figures, a verdict on every target line, the
machine, and the profile of a missed target.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_all_module():
    spec = importlib.util.spec_from_file_location("_run_all", ROOT / "bench" / "_run_all.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def section(text: str, heading: str) -> str:
    """The text under ``heading`` up to the next heading of the same or a higher level."""
    level = heading.split(" ", 1)[0]
    start = text.index(heading + "\n")
    rest = text[start + len(heading) + 1 :]
    match = re.search(rf"^#{{1,{len(level)}}} ", rest, flags=re.MULTILINE)
    return rest[: match.start()] if match else rest


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_quick_run_writes_every_section(pg_server, tmp_path):
    run_all = run_all_module()
    output, work = tmp_path / "BENCHMARKS.md", tmp_path / "work"
    done = subprocess.run(
        [str(ROOT / "bench" / "run_all"), "--quick", "--output", str(output),
         "--dsn", pg_server.admin_dsn, "--work", str(work)],
        capture_output=True, text=True, timeout=1100, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    text = output.read_text(encoding="utf-8")
    assert text.startswith("# Benchmarks\n")
    assert "Quick mode" in text

    # every target has its row, with a verdict
    targets = section(text, "## Targets")
    rows = [line for line in targets.splitlines() if line.startswith("| ") and "`" in line]
    assert len(rows) == len(run_all.TARGETS)
    for target, row in zip(run_all.TARGETS, rows, strict=True):
        assert f"(`{target.key}`)" in row
        assert re.search(r"\| \*\*(met|MISSING)\*\* \|$", row), row
        assert "no figure" not in row, row

    # the machine it ran on
    machine = section(text, "## Machine")
    for field in ("CPU", "cores", "RAM", "Python", "PostgreSQL", "Mosquitto", "git commit",
                  "load average before", "load average during", "date"):  # fmt: skip
        assert re.search(rf"^\| {field} \| \S", machine, flags=re.MULTILINE), field
    assert "mosquitto version" in machine

    # every benchmark: its section, its figures, its JSON, no failure
    benches = section(text, "## Benchmarks")
    for bench in run_all.BENCHES:
        heading = next(h for h in benches.splitlines() if h.startswith(f"### {bench.name} ("))
        body = section(benches, heading)
        assert "FAILED" not in body
        assert f"(`{bench.name}." in body, f"{bench.name} has no figures"
        doc = json.loads((work / f"{bench.name}.json").read_text(encoding="utf-8"))
        assert doc["figures"], bench.name
        assert all(f["key"].startswith(f"{bench.name}.") for f in doc["figures"])

    # a quick end-to-end run lasts seconds, not 5 minutes: that target is always missed, so
    # its profile must be there, with the gateway's process among the busiest
    where = section(text, "## Where the time goes, for the targets missed")
    e2e = section(where, next(h for h in where.splitlines() if h.startswith("### e2e:")))
    assert "`e2e.duration`" in where
    assert "--role gateway`" in e2e
    assert re.search(r"^  \| \d+% \| `\w", e2e, flags=re.MULTILINE)

    # the checkout's path is not published; the file can be written again from the work files
    assert str(ROOT) not in text
    again = tmp_path / "again.md"
    subprocess.run(
        [sys.executable, str(ROOT / "bench" / "_run_all.py"), "--render", str(work),
         "--output", str(again)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    assert again.read_text(encoding="utf-8") == text
