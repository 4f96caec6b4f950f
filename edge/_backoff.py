"""The one jittered exponential backoff every reconnect loop of the edge uses."""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delays of ``initial · factor^n``, capped at ``maximum``, each drawn uniformly from its
    upper half ("equal jitter"): devices that failed together do not retry in lockstep, and a
    delay never collapses to nothing.
    """

    initial: float = 0.5
    maximum: float = 30.0
    factor: float = 2.0
    failures: int = 0
    _rng: random.Random = field(default_factory=random.Random, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum or self.factor < 1:
            raise ValueError("backoff needs 0 < initial <= maximum and factor >= 1")

    def next_delay(self) -> float:
        """The wait before the next attempt; counts one more failure."""
        ceiling = min(self.maximum, self.initial * self.factor ** min(self.failures, 64))
        self.failures += 1
        return self._rng.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self.failures = 0
