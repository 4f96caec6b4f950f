"""The attack suite's fixtures: the real pipeline of the ingest and evidence tests, and the
verdict table printed at the end of the run.

The pipeline fixtures (a private Mosquitto, an identifier node, ``register``, a publisher,
``kit``) are those of ``tests/ingest/conftest.py`` and the evidence service is the ``Served``
helper of ``tests/evidence/conftest.py``: both are loaded from their files (a conftest cannot
be imported by name), so an attack runs against exactly what the other tests run against.

Every attack test calls ``verdict(...)`` with what it expected and what it observed in the
store or on the wire; ``pytest_terminal_summary`` prints them as a table (docs/testing.md,
"Attack suite").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
from _services import load_conftest

_ingest = load_conftest("_attack_ingest_fixtures", "ingest/conftest.py")
_evidence = load_conftest("_attack_evidence_fixtures", "evidence/conftest.py")

# the ingest tests' fixtures, registered here under their own names
broker = _ingest.broker
publisher = _ingest.publisher
node = _ingest.node
register = _ingest.register
kit = _ingest.kit
#: the evidence tests' store of two firms, filled once per module through the real pipeline
plant = _evidence.plant


@pytest.fixture(scope="session")
def served() -> type:
    """The evidence tests' ``Served``: an evidence service and identifier node in a thread."""
    return _evidence.Served  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Verdict:
    attack: str
    expected: str
    observed: str
    leaked: int
    #: the observation is what was expected (the test asserts the same)
    as_expected: bool

    @property
    def held(self) -> bool:
        return self.as_expected and self.leaked == 0


_VERDICTS = pytest.StashKey[list[Verdict]]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_VERDICTS] = []


Record = Callable[..., Verdict]


@pytest.fixture
def verdict(pytestconfig: pytest.Config) -> Record:
    """``verdict(attack, expected, observed, leaked, as_expected=…)``: one row of the table
    (``as_expected`` defaults to ``observed == expected``), returned so the test can assert it
    held. ``leaked`` counts rows the attack got into the store, or records of another firm it
    got out of the API."""

    def record(
        attack: str, expected: str, observed: str, leaked: int, as_expected: bool | None = None
    ) -> Verdict:
        ok = observed == expected if as_expected is None else as_expected
        row = Verdict(attack, expected, observed, leaked, ok)
        pytestconfig.stash[_VERDICTS].append(row)
        return row

    return record


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    rows = config.stash.get(_VERDICTS, [])
    if not rows:
        return
    head = ("attack", "expected", "observed", "rows leaked", "verdict")
    table = [(r.attack, r.expected, r.observed, str(r.leaked), "held" if r.held else "BROKEN")
             for r in rows]  # fmt: skip
    widths = [max(len(line[i]) for line in [head, *table]) for i in range(len(head))]
    terminalreporter.write_sep("-", f"attack suite: {len(rows)} attacks")
    for line in [head, tuple("-" * w for w in widths), *table]:
        terminalreporter.write_line(
            "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True))
        )
    broken = sum(not r.held for r in rows)
    terminalreporter.write_line(f"{len(rows) - broken} held, {broken} broken")
