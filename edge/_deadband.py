"""Report by exception: send a tag's sample only when it says something new.

A tag with ``deadband`` (absolute), ``deadband_percent`` (of the last value sent) or
``max_silence`` reports by exception; a tag with none of them reports every poll. A sample
passes when it is the tag's first, when its quality differs from the last one sent, when a
non-numeric value changed, when a number moved beyond the deadband (either one, when both are
set), or when the tag has been silent for ``max_silence``: so a steady value still shows, now
and then, that the tag is alive, and an outage (Bad) or a recovery is always sent at once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from edge._samples import Quality, Sample, Value


@dataclass(frozen=True, slots=True)
class Rule:
    deadband: float | None = None
    percent: float | None = None
    #: seconds
    max_silence: float | None = None

    @property
    def active(self) -> bool:
        return self.deadband is not None or self.percent is not None or self.max_silence is not None


class ExceptionFilter:
    """Remembers, per tag, the last sample sent; :meth:`select` returns what to send now."""

    def __init__(self, rules: dict[str, Rule]) -> None:
        self._rules = {tag: rule for tag, rule in rules.items() if rule.active}
        self._last: dict[str, Sample] = {}
        self.suppressed = 0

    def select(self, samples: Iterable[Sample]) -> list[Sample]:
        if not self._rules:
            return list(samples)
        out = []
        for sample in samples:
            rule = self._rules.get(sample.tag)
            if rule is None or self._passes(rule, sample):
                out.append(sample)
                self._last[sample.tag] = sample
            else:
                self.suppressed += 1
        return out

    def _passes(self, rule: Rule, sample: Sample) -> bool:
        last = self._last.get(sample.tag)
        if last is None or last.quality is not sample.quality:
            return True
        if rule.max_silence is not None and sample.ts - last.ts >= rule.max_silence * 1e9:
            return True
        if sample.quality is Quality.BAD:
            return False  # still down: the Bad sample that began it was sent
        return _moved(rule, last.value, sample.value)


def _moved(rule: Rule, old: Value, new: Value) -> bool:
    numbers = (int, float)
    if (
        not isinstance(old, numbers)
        or not isinstance(new, numbers)
        or isinstance(old, bool)
        or isinstance(new, bool)
    ):
        return old != new
    if old != old or new != new:  # NaN: a change unless both are NaN  # noqa: PLR0124
        return not (old != old and new != new)  # noqa: PLR0124
    change = abs(new - old)
    if rule.deadband is None and rule.percent is None:
        return change > 0
    if rule.deadband is not None and change > rule.deadband:
        return True
    return rule.percent is not None and change > abs(old) * rule.percent / 100
