"""Line PLCs with many tags: the ``plc-<N>`` profiles, generated rather than written out.

A line controller or data concentrator holds hundreds to thousands of values: process values
in input registers, status words, bits and counters in holding registers, I/O in coils and
discrete inputs. They sit in scattered blocks: tags one after the other or with a few unused
registers between them, and now and then a jump to the next block. Every type and byte order
the drivers know appears. The layout is drawn from a generator seeded with the profile's name,
so ``plc-1000`` is the same everywhere and its values are, as for every profile, a pure
function of (seed, profile, machine, tag, t).

Whether the unused registers between tags can be read depends on the endpoint
(``holes`` of :class:`simulators.ModbusEndpoint`), not on the profile: many PLCs answer a whole
register area, others refuse every address that holds no tag.
"""

from __future__ import annotations

import random
import re
from functools import lru_cache

from simulators._profiles import Profile, TagSpec
from simulators._signals import Analog, Counter, Flag, Integral, Signal, StateCode, Text
from simulators._values import State, StateMix

PATTERN = re.compile(r"plc-([1-9][0-9]{0,5})")
#: the largest ``N`` of ``plc-N``: the registers of one table must fit in 65,536 addresses
MAX_TAGS = 20_000

RUN, IDLE, ALARM = State.RUNNING, State.IDLE, State.ALARM

#: (weight, kind) of register tags in the input-register (process) area
_PROCESS = (
    (30, "int16"),
    (15, "uint16"),
    (25, "float32"),
    (10, "int32"),
    (8, "uint32"),
    (6, "float64"),
    (6, "int64"),
)
#: (weight, kind) in the holding-register (status) area
_STATUS = ((25, "bits"), (40, "uint16"), (20, "uint32"), (8, "uint64"), (7, "string"))
_ORDERS = {
    2: ("ABCD", "CDAB", "BADC", "DCBA"),
    4: ("ABCDEFGH", "GHEFCDAB", "HGFEDCBA", "BADCFEHG"),
}
_SIZES = {"int16": 1, "uint16": 1, "float32": 2, "int32": 2, "uint32": 2, "uint64": 4}
_SIZES |= {"float64": 4, "int64": 4}


def _pick(rng: random.Random, table: tuple[tuple[int, str], ...]) -> str:
    return rng.choices([k for _, k in table], weights=[w for w, _ in table])[0]


def _gap(rng: random.Random) -> int:
    """Unused registers before the next tag: mostly none or a few, sometimes a new block."""
    u = rng.random()
    if u < 0.5:
        return 0
    if u < 0.8:
        return 1
    if u < 0.99:
        return rng.randint(2, 6)
    return rng.randint(20, 200)


def _process_tag(rng: random.Random, index: int, address: int) -> TagSpec:
    kind = _pick(rng, _PROCESS)
    name = f"pv{index:05d}"
    level = rng.uniform(10, 900)
    signal: Signal = Analog(
        level, idle=level * 0.8, alarm=level * 0.5, off=0.0, wave=level * 0.05,
        period=rng.choice((60, 300, 900, 3600)), noise=level * 0.01,
    )  # fmt: skip
    size = _SIZES[kind]
    order = rng.choice(_ORDERS[size]) if size > 1 else None
    scale = {"int16": 0.1, "uint16": 0.1, "int32": 0.001}.get(kind, 1.0)
    if kind in ("uint32", "int64"):
        signal = Counter(rng.uniform(5, 120)) if kind == "uint32" else Integral({RUN: level})
        scale = 1.0 if kind == "uint32" else 0.01
    return TagSpec(name, kind, f"ir:{address}", signal, order=order, scale=scale, group="process")


def _status_tags(rng: random.Random, index: int, address: int, room: int) -> list[TagSpec]:
    """One status tag at ``address``, or several bits of the register there."""
    kind = _pick(rng, _STATUS)
    if kind == "bits":
        bits = sorted(rng.sample(range(16), min(room, rng.randint(2, 5))))
        return [
            TagSpec(f"st{index + i:05d}", "bool", f"hr:{address}.{bit}",
                    Flag(rng.choice(((RUN,), (IDLE,), (ALARM,), (RUN, IDLE)))), group="status")
            for i, bit in enumerate(bits)
        ]  # fmt: skip
    name = f"st{index:05d}"
    if kind == "uint16":
        return [TagSpec(name, "uint16", f"hr:{address}", StateCode(), group="status")]
    if kind == "string":
        choices = tuple(f"R{rng.randint(100, 999)}-{c}" for c in "ABC")
        return [TagSpec(name, "string", f"hr:{address}", Text(choices), length=8, group="status")]
    size = _SIZES[kind]
    order = rng.choice(_ORDERS[size])
    signal = Counter(rng.uniform(5, 120)) if kind == "uint32" else Integral({RUN: 50.0})
    return [TagSpec(name, kind, f"hr:{address}", signal, order=order, group="status")]


@lru_cache(maxsize=16)
def plc_profile(name: str) -> Profile | None:
    """The profile ``plc-<N>`` (N tags), or None if ``name`` is not of that form."""
    m = PATTERN.fullmatch(name)
    if m is None or int(m[1]) > MAX_TAGS:
        return None
    total = int(m[1])
    rng = random.Random(name)  # noqa: S311 - a reproducible layout, not a secret
    tags: list[TagSpec] = []
    cursor = {"ir": 0, "hr": 0, "co": 0, "di": 0}
    while len(tags) < total:
        room = total - len(tags)
        u = rng.random()
        if u < 0.1:  # a bit of I/O: coils and discrete inputs, a few unused bits apart
            table = "co" if u < 0.04 else "di"
            address = cursor[table] + rng.choice((0, 0, 1, 3))
            cursor[table] = address + 1
            tags.append(
                TagSpec(f"io{len(tags):05d}", "bool", f"{table}:{address}", Flag((RUN,)),
                        group="io")
            )  # fmt: skip
            continue
        table = "ir" if u < 0.6 else "hr"
        address = cursor[table] + _gap(rng)
        if table == "ir":
            new = [_process_tag(rng, len(tags), address)]
        else:
            new = _status_tags(rng, len(tags), address, room)
        cursor[table] = address + new[0].count
        tags += new
    return Profile(
        name,
        f"Line PLC with {total:,} tags",
        tuple(tags),
        mix=StateMix(running=0.75, idle=0.15, alarm=0.03, off=0.07),
        manufacturer="generic",
        model="line controller",
        stages=("equipment", "production"),
    )
