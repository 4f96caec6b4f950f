"""How a tag's engineering value follows the machine: small declarative signal kinds.

Each signal maps a :class:`~simulators._values.Context` (machine state and history at one
tick) and the tag's name to an engineering value. They hold no state, so a value depends on
nothing but (seed, machine, tag, t).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from simulators._values import Context, State


@dataclass(frozen=True, slots=True)
class Analog:
    """A process value: a level per state, a slow wave and per-tick noise around it.

    Levels not given for idle and alarm fall back to the running level; off is ``off``.
    """

    run: float
    idle: float | None = None
    alarm: float | None = None
    off: float = 0.0
    wave: float = 0.0
    period: float = 900.0
    noise: float = 0.0
    low: float | None = None

    def __call__(self, ctx: Context, tag: str) -> float:
        state = ctx.state
        if state is State.OFF:
            return self.off
        level = {
            State.RUNNING: self.run,
            State.IDLE: self.run if self.idle is None else self.idle,
            State.ALARM: self.run if self.alarm is None else self.alarm,
        }[state]
        x = level + self.wave * ctx.wave(tag, self.period) + self.noise * ctx.noise(tag)
        return x if self.low is None else max(x, self.low)


@dataclass(frozen=True, slots=True)
class Counter:
    """Pieces made: one per ``cycle`` seconds of running since the epoch, from a per-machine
    start so that machines differ. Never decreases."""

    cycle: float
    start: int = 10_000

    def __call__(self, ctx: Context, tag: str) -> int:
        offset = ctx.pick(tag, 0, self.start)
        return offset + int(ctx.seconds_in(State.RUNNING) // self.cycle)


@dataclass(frozen=True, slots=True)
class Hours:
    """Hours spent in the given states since the epoch (running hours, load hours)."""

    states: tuple[State, ...] = (State.RUNNING,)

    def __call__(self, ctx: Context, tag: str) -> float:
        return sum(ctx.seconds_in(s) for s in self.states) / 3600.0


@dataclass(frozen=True, slots=True)
class Integral:
    """A total of a rate given per state and per hour (kWh from kW, m³ from m³/h)."""

    rate: dict[State, float] = field(default_factory=dict)
    start: float = 0.0

    def __call__(self, ctx: Context, tag: str) -> float:
        total = sum(rate * ctx.seconds_in(state) for state, rate in self.rate.items())
        return self.start + total / 3600.0


@dataclass(frozen=True, slots=True)
class StateCode:
    """The machine state as a number; ``codes`` maps a state to another numbering."""

    codes: dict[State, int] | None = None

    def __call__(self, ctx: Context, tag: str) -> int:
        return int(ctx.state) if self.codes is None else self.codes[ctx.state]


@dataclass(frozen=True, slots=True)
class Flag:
    """True while the machine is in one of ``states``."""

    states: tuple[State, ...]
    invert: bool = False

    def __call__(self, ctx: Context, tag: str) -> bool:
        return (ctx.state in self.states) != self.invert


@dataclass(frozen=True, slots=True)
class AlarmCode:
    """0 unless in alarm; then one of ``codes``, drawn per state segment."""

    codes: tuple[int, ...]

    def __call__(self, ctx: Context, tag: str) -> int:
        if ctx.state is not State.ALARM:
            return 0
        return self.codes[ctx.pick(tag, ctx.t // 60, len(self.codes))]


@dataclass(frozen=True, slots=True)
class Text:
    """A program, recipe or batch name that changes every ``every`` seconds."""

    choices: tuple[str, ...]
    every: int = 3600

    def __call__(self, ctx: Context, tag: str) -> str:
        return self.choices[ctx.pick(tag, ctx.t // self.every, len(self.choices))]


@dataclass(frozen=True, slots=True)
class Const:
    """A fixed value: a setpoint's initial value, a firmware version."""

    value: float | int | bool | str

    def __call__(self, ctx: Context, tag: str) -> float | int | bool | str:
        return self.value


Signal = Analog | Counter | Hours | Integral | StateCode | Flag | AlarmCode | Text | Const
