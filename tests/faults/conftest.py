"""The fault suite's fixtures and the reconciliation table printed at the end of the run.

The identifier node and ``register`` are those of ``tests/ingest/conftest.py``, loaded from
its file (a conftest cannot be imported by name), as the attack suite does. ``plant`` builds
the pipeline of ``_harness.Plant`` in the test's own directory; every scenario ends with
``outcome(plant.reconcile(...))``, which records the row and returns it for the test to
assert (docs/testing.md, "Fault suite").
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from _services import load_conftest
from faults._harness import Outcome, Plant, load_average

_ingest = load_conftest("_fault_ingest_fixtures", "ingest/conftest.py")
node = _ingest.node
register = _ingest.register
kit = _ingest.kit

_OUTCOMES = pytest.StashKey[list[Outcome]]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_OUTCOMES] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.fault)


@pytest.fixture
def outcome(pytestconfig: pytest.Config) -> Callable[[Outcome], Outcome]:
    """Record a scenario's reconciliation as a row of the table; returns it."""

    def record(row: Outcome) -> Outcome:
        pytestconfig.stash[_OUTCOMES].append(row)
        return row

    return record


@pytest.fixture
async def plant_factory(
    tmp_path: Path, node: Any, register: Any, kit: Any
) -> AsyncIterator[Callable[..., Any]]:
    """``await plant_factory(dsn=…, **options)``: a started :class:`Plant`, stopped after."""
    made: list[Plant] = []

    async def make(dsn: str, **options: Any) -> Plant:
        directory = tmp_path / f"plant{len(made)}"
        directory.mkdir()
        plant = Plant(directory, dsn=dsn, node_url=node.url, register=register, **options)
        made.append(plant)
        await plant.start(kit.Chain)
        return plant

    yield make
    for plant in made:
        await plant.close()


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    rows = config.stash.get(_OUTCOMES, [])
    if not rows:
        return
    head = ("scenario", "samples expected", "stored", "duplicates", "declared losses", "verdict")
    table = [(r.scenario, str(r.expected), str(r.stored), str(r.duplicates), str(r.lost),
              r.verdict) for r in rows]  # fmt: skip
    widths = [max(len(line[i]) for line in [head, *table]) for i in range(len(head))]
    terminalreporter.write_sep("-", f"fault suite: {len(rows)} scenarios")
    for line in [head, tuple("-" * w for w in widths), *table]:
        terminalreporter.write_line(
            "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
        )
    for r in rows:
        if r.notes:
            terminalreporter.write_line(f"  {r.scenario}: {'; '.join(r.notes)}")
    failed = sum(not r.passed for r in rows)
    recorded = sum(r.passed and bool(r.missing) for r in rows)
    terminalreporter.write_line(
        f"{len(rows) - failed - recorded} passed, {recorded} with recorded losses, {failed} "
        f"failed (load average {load_average()})"
    )
