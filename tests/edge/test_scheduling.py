"""Aligned ticks and overrun counting, backoff, and report by exception."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time

import pytest

from edge import Quality, Sample
from edge._backoff import Backoff
from edge._deadband import ExceptionFilter, Rule
from edge._scheduler import GroupStats, next_tick, run_every

S = 1_000_000_000  # nanoseconds per second


def test_ticks_are_aligned_to_multiples_of_the_interval() -> None:
    assert next_tick(1000.3, 1.0) == 1001.0
    assert next_tick(1000.0, 1.0) == 1001.0
    assert next_tick(1003.2, 5.0) == 1005.0
    assert next_tick(12.34, 0.1) == pytest.approx(12.4)


async def test_polls_run_on_aligned_ticks() -> None:
    calls: list[tuple[float, float]] = []
    stats = GroupStats()

    async def poll(tick: float) -> None:
        calls.append((tick, time.time()))

    task = asyncio.create_task(run_every(0.05, poll, stats))
    await asyncio.sleep(0.32)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert 3 <= stats.polls <= 7
    assert stats.polls == len(calls)
    ticks = [tick for tick, _ in calls]
    for tick, started in calls:
        assert round(tick / 0.05) * 0.05 == pytest.approx(tick)  # a multiple of the interval
        assert started >= tick - 0.002  # never early (the loop's clock is not the wall clock)
    for before, after in itertools.pairwise(ticks):
        assert after - before == pytest.approx(0.05 * round((after - before) / 0.05))
        assert after > before


async def test_a_slow_poll_counts_overruns_and_never_stacks() -> None:
    running = 0
    most = 0
    stats = GroupStats()

    async def poll(tick: float) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.125)  # 2.5 intervals
        running -= 1

    task = asyncio.create_task(run_every(0.05, poll, stats))
    await asyncio.sleep(0.6)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert most == 1
    assert 2 <= stats.polls <= 5
    assert stats.overruns >= 2 * stats.polls - 2
    assert stats.max_duration >= 0.12
    assert stats.mean_duration >= 0.12


def test_backoff_grows_with_jitter_and_resets() -> None:
    backoff = Backoff(initial=1.0, maximum=8.0)
    delays = [backoff.next_delay() for _ in range(6)]
    for delay, ceiling in zip(delays, [1, 2, 4, 8, 8, 8], strict=True):
        assert ceiling / 2 <= delay <= ceiling
    assert len(set(delays)) > 1
    backoff.reset()
    assert backoff.next_delay() <= 1.0
    with pytest.raises(ValueError, match="initial <= maximum"):
        Backoff(initial=5, maximum=1)


def sample(value: object, ts: float, quality: Quality = Quality.GOOD) -> Sample:
    return Sample("t", value, quality, int(ts * S))  # type: ignore[arg-type]


def values(f: ExceptionFilter, samples: list[Sample]) -> list[object]:
    return [s.value for s in f.select(samples)]


def test_without_rules_every_sample_passes() -> None:
    f = ExceptionFilter({"t": Rule()})
    assert values(f, [sample(1, 0), sample(1, 1)]) == [1, 1]


def test_absolute_deadband() -> None:
    f = ExceptionFilter({"t": Rule(deadband=0.5)})
    got = values(f, [sample(10.0, t) for t in range(1)] + [sample(10.4, 1), sample(10.6, 2),
                 sample(10.2, 3), sample(10.0, 4)])  # fmt: skip
    assert got == [10.0, 10.6, 10.0]
    assert f.suppressed == 2


def test_percent_deadband_is_of_the_last_value_sent() -> None:
    f = ExceptionFilter({"t": Rule(percent=10)})
    got = values(f, [sample(100, 0), sample(109, 1), sample(111, 2), sample(121, 3),
                     sample(123, 4)])  # fmt: skip
    assert got == [100, 111, 123]


def test_max_silence_sends_a_steady_value_now_and_then() -> None:
    f = ExceptionFilter({"t": Rule(deadband=1, max_silence=5)})
    got = [s.ts // S for s in f.select([sample(7, t) for t in range(12)])]
    assert got == [0, 5, 10]


def test_max_silence_alone_reports_changes_and_heartbeats() -> None:
    f = ExceptionFilter({"t": Rule(max_silence=60)})
    assert values(f, [sample("idle", 0), sample("idle", 1), sample("run", 2)]) == ["idle", "run"]


def test_quality_changes_always_pass_and_bad_is_not_repeated() -> None:
    f = ExceptionFilter({"t": Rule(deadband=100, max_silence=30)})
    stream = [
        sample(1.0, 0),
        sample(None, 1, Quality.BAD),
        sample(None, 2, Quality.BAD),
        sample(None, 40, Quality.BAD),
        sample(1.0, 41),
        sample(float("nan"), 42, Quality.UNCERTAIN),
        sample(float("nan"), 43, Quality.UNCERTAIN),
    ]
    got = [(s.ts // S, s.quality) for s in f.select(stream)]
    assert got == [
        (0, Quality.GOOD),
        (1, Quality.BAD),
        (40, Quality.BAD),  # max silence: still down, and said so
        (41, Quality.GOOD),
        (42, Quality.UNCERTAIN),
    ]


def test_tags_without_a_rule_pass_next_to_tags_with_one() -> None:
    f = ExceptionFilter({"t": Rule(deadband=5)})
    other = Sample("u", 1, Quality.GOOD, 0)
    assert f.select([sample(1, 0), other, sample(2, 1), other]) == [sample(1, 0), other, other]


async def test_a_clock_set_back_does_not_stall_the_polls() -> None:
    now = [1000.0]
    polls: list[float] = []
    stats = GroupStats()

    def clock() -> float:
        return now[0]

    async def poll(tick: float) -> None:
        polls.append(now[0])
        now[0] = now[0] - 3600.0 if len(polls) == 2 else now[0] + 0.001

    async def sleep_advance() -> None:
        while len(polls) < 4:
            now[0] += 0.01
            await asyncio.sleep(0)

    task = asyncio.create_task(run_every(0.01, poll, stats, clock=clock))
    await asyncio.wait_for(sleep_advance(), 5)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert len(polls) >= 4
    assert polls[2] < polls[1]  # polled on, an hour earlier by the clock
