"""Polling groups at their interval, on ticks aligned to the wall clock.

A group with a 1 s interval is polled at whole seconds, a 5 s group at multiples of 5 s since
the epoch: samples of different gateways and groups line up, which makes windows in the evidence
comparable. If a poll takes longer than the interval, the ticks it missed are counted as
overruns and skipped: polls are never stacked up or run back to back to catch up, which would
only hammer a device that is already slow.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass


@dataclass
class GroupStats:
    """Timing of one group's polls, for metrics and health."""

    polls: int = 0
    #: ticks skipped because the previous poll was still running
    overruns: int = 0
    last_duration: float = 0.0
    max_duration: float = 0.0
    total_duration: float = 0.0
    #: how late the last poll started after its tick
    last_lag: float = 0.0
    max_lag: float = 0.0

    @property
    def mean_duration(self) -> float:
        return self.total_duration / self.polls if self.polls else 0.0

    def record(self, duration: float, lag: float) -> None:
        self.polls += 1
        self.last_duration = duration
        self.max_duration = max(self.max_duration, duration)
        self.total_duration += duration
        self.last_lag = lag
        self.max_lag = max(self.max_lag, lag)


def next_tick(now: float, interval: float) -> float:
    """The first multiple of ``interval`` (in seconds since the epoch) strictly after ``now``."""
    return (math.floor(now / interval) + 1) * interval


async def run_every(
    interval: float,
    poll: Callable[[float], Awaitable[None]],
    stats: GroupStats,
    *,
    clock: Callable[[], float] = time.time,
    overruns_to: Sequence[GroupStats] = (),
) -> None:
    """Call ``poll(tick)`` on every aligned tick until cancelled; its errors propagate.

    ``stats`` gets the timing of every call; missed ticks are added to it and to each of
    ``overruns_to`` (the groups a poll covers, when it covers several).
    """
    tick = next_tick(clock(), interval)
    while True:
        now = clock()
        delay = tick - now
        if delay > interval:  # the wall clock was set back: align to it again
            tick = next_tick(now, interval)
            delay = tick - now
        if delay > 0:
            await asyncio.sleep(delay)
        started = clock()
        await poll(tick)
        finished = clock()
        stats.record(finished - started, max(0.0, started - tick))
        tick += interval
        if finished >= tick:
            missed = math.floor((finished - tick) / interval) + 1
            stats.overruns += missed
            for other in overruns_to:
                other.overruns += missed
            tick += missed * interval
