"""The deterministic value function: every served value is a pure function of
(seed, profile, machine, tag, t).

Time is cut into whole-second ticks (:data:`TICK`): all values are computed from
``floor(t)``, so a value changes only on a second boundary and a test that reads within one
second knows exactly what it must get. A machine's state (running, idle, alarm, off) is drawn
per minute (:data:`SEGMENT`) and the pattern repeats every day (:data:`PERIOD_SEGMENTS`), which
lets counters and energy totals, integrals over the running time since :data:`EPOCH`, be
computed in constant time from per-day prefix sums instead of by summing since the epoch.

Hashing is splitmix64 over integers (names are hashed once with BLAKE2b): fast enough to
compute thousands of values per request.
"""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass
from enum import IntEnum
from functools import lru_cache

#: values change once per tick (seconds)
TICK = 1.0
#: a machine keeps its state for at least one segment (seconds)
SEGMENT = 60
#: the state pattern repeats after this many segments (one day)
PERIOD_SEGMENTS = 1440
#: counters, running hours and energy totals integrate from this instant (2026-01-01 UTC)
EPOCH = 1_767_225_600

_MASK = (1 << 64) - 1


class State(IntEnum):
    """Machine states; the numbers are what the ``state`` register of every profile holds."""

    OFF = 0
    IDLE = 1
    RUNNING = 2
    ALARM = 3


def _mix(x: int) -> int:
    """splitmix64 finaliser: a well-spread 64-bit hash of a 64-bit integer."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


@lru_cache(maxsize=65536)
def name_hash(*parts: str | int) -> int:
    """64-bit hash of names (seed, machine, tag...), stable across runs and platforms."""
    text = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


def unit(h: int, k: int) -> float:
    """Uniform in [0, 1) from hash ``h`` and integer ``k``."""
    return (_mix(h ^ (k * 0xD1B54A32D192ED03 & _MASK)) >> 11) / float(1 << 53)


@dataclass(frozen=True, slots=True)
class StateMix:
    """Share of time in each state and how sticky a state is from one minute to the next."""

    running: float = 0.70
    idle: float = 0.15
    alarm: float = 0.05
    off: float = 0.10
    stay: float = 0.85

    def pick(self, u: float) -> State:
        total = self.running + self.idle + self.alarm + self.off
        u *= total
        for state, share in (
            (State.RUNNING, self.running),
            (State.IDLE, self.idle),
            (State.ALARM, self.alarm),
        ):
            if u < share:
                return state
            u -= share
        return State.OFF


class Timeline:
    """One machine's daily state pattern: one byte per segment, so that the seconds spent in a
    state are a count of bytes (done in C) and a simulator with thousands of machines stays
    small (≈1.5 kB each)."""

    __slots__ = ("per_day", "states")

    def __init__(self, h: int, mix: StateMix) -> None:
        states = bytearray(PERIOD_SEGMENTS)
        current = mix.pick(unit(h, -1))
        for i in range(PERIOD_SEGMENTS):
            if unit(h, 2 * i) >= mix.stay:
                current = mix.pick(unit(h, 2 * i + 1))
            states[i] = current
        self.states = bytes(states)
        self.per_day = {state: self.states.count(state) * SEGMENT for state in State}

    def state_at(self, t: int) -> State:
        return State(self.states[(t // SEGMENT) % PERIOD_SEGMENTS])

    def seconds_in(self, state: State, t: int) -> int:
        """Seconds spent in ``state`` between :data:`EPOCH` and ``t`` (0 before the epoch)."""
        if t <= EPOCH:
            return 0
        elapsed = t - EPOCH
        segment, into = divmod(elapsed, SEGMENT)
        days, index = divmod(segment, PERIOD_SEGMENTS)
        total = days * self.per_day[state] + self.states.count(state, 0, index) * SEGMENT
        if self.states[index] == state:
            total += into
        return total


@lru_cache(maxsize=65536)
def timeline(seed: int, machine: str, mix: StateMix) -> Timeline:
    return Timeline(name_hash(seed, machine, "state"), mix)


class Forced:
    """States forced on a machine (the ``state`` fault): while one is on, the machine is in it
    whatever its timeline says, and its history follows, so counters and running hours stop
    while it is forced idle and run while it is forced running. ``adjust`` holds, per state,
    the seconds the periods forced so far added to (or took from) the timeline's."""

    __slots__ = ("adjust", "since", "state")

    def __init__(self) -> None:
        self.adjust = dict.fromkeys(State, 0)
        self.state: State | None = None
        self.since = 0

    def _period(self, line: Timeline, until: int) -> dict[State, int]:
        if self.state is None:
            return self.adjust
        span = until - self.since
        return {
            s: self.adjust[s] + (span if s is self.state else 0)
            - (line.seconds_in(s, until) - line.seconds_in(s, self.since))
            for s in State
        }  # fmt: skip

    @property
    def touched(self) -> bool:
        """A state is forced now, or was: the machine's history differs from its timeline."""
        return self.state is not None or any(self.adjust.values())

    def force(self, line: Timeline, state: State | None, t: int) -> None:
        """Force ``state`` from ``t`` on (None: back to the timeline)."""
        self.adjust = self._period(line, t)
        self.state, self.since = state, t

    def at(self, line: Timeline, t: int) -> tuple[State, dict[State, int]]:
        if self.state is not None and t >= self.since:
            return self.state, self._period(line, t)
        return line.state_at(t - EPOCH), self.adjust


class Context:
    """What a tag's signal sees at one tick: the machine's state and its history."""

    __slots__ = ("adjust", "machine_hash", "seed", "state", "t", "timeline")

    def __init__(
        self, seed: int, machine: str, mix: StateMix, t: int, forced: Forced | None = None
    ) -> None:
        self.seed = seed
        self.t = t
        self.timeline = timeline(seed, machine, mix)
        self.machine_hash = name_hash(seed, machine)
        if forced is None:
            self.state = self.timeline.state_at(t - EPOCH)
            self.adjust: dict[State, int] | None = None
        else:
            self.state, self.adjust = forced.at(self.timeline, t)

    def seconds_in(self, state: State) -> int:
        base = self.timeline.seconds_in(state, self.t)
        return base if self.adjust is None else base + self.adjust[state]

    def noise(self, tag: str) -> float:
        """Uniform in [-1, 1), new every tick."""
        return 2.0 * unit(name_hash(self.seed, self.machine_hash, tag), self.t) - 1.0

    def wave(self, tag: str, period: float) -> float:
        """A slow sine in [-1, 1] with a phase of its own per machine and tag."""
        phase = unit(name_hash(self.seed, self.machine_hash, tag, "phase"), 0)
        return math.sin(2.0 * math.pi * (self.t / period + phase))

    def pick(self, tag: str, k: int, n: int) -> int:
        """An index in ``range(n)`` drawn per (tag, k)."""
        return int(unit(name_hash(self.seed, self.machine_hash, tag, "pick"), k) * n)


def as_float32(x: float) -> float:
    """The nearest float32, as the Python float a client decodes from the wire."""
    if math.isnan(x):
        return x
    x = max(min(x, _F32_MAX), -_F32_MAX)
    return float(struct.unpack(">f", struct.pack(">f", x))[0])


_F32_MAX = struct.unpack(">f", bytes.fromhex("7f7fffff"))[0]
