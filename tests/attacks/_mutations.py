"""Mutations of valid envelopes, as an adversary or a broken gateway would send them.

Each mutation takes the bytes of a valid JSON envelope and a ``random.Random``; hypothesis
drives that generator in the decoder fuzz (so failures shrink), a seeded one drives the batch
published into a running ingest. Every result says something else than its input.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

Mutation = Callable[[bytes, random.Random], bytes]


def bit_flips(raw: bytes, rnd: random.Random) -> bytes:
    out = bytearray(raw)
    for _ in range(rnd.randint(1, 4)):
        out[rnd.randrange(len(out))] ^= 1 << rnd.randrange(8)
    return bytes(out)


def truncation(raw: bytes, rnd: random.Random) -> bytes:
    return raw[: rnd.randrange(len(raw))]


def _fields(raw: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
    except RecursionError:
        raise ValueError("nested too deeply to mutate by field") from None
    if not isinstance(doc, dict) or len(doc) < 2:
        raise ValueError("not an envelope object any more")
    return doc


def _dump(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def field_swap(raw: bytes, rnd: random.Random) -> bytes:
    doc = _fields(raw)
    a, b = rnd.sample(sorted(doc), 2)
    doc[a], doc[b] = doc[b], doc[a]
    return _dump(doc)


#: replacements that change a value's JSON type, or stretch it past what the contract allows
ODD_VALUES: tuple[Any, ...] = (
    None, True, False, 0, -1, 1.5, "", "x" * 300, [], {}, [[]], {"a": 1}, 2**63, -(2**63) - 1,
    2**64, 10**30, 1e308, -1e-320, "88.709.911/gw.x", "\x00", "\ud800", "\u202e", "😀" * 70,
)  # fmt: skip


def type_change(raw: bytes, rnd: random.Random) -> bytes:
    doc = _fields(raw)
    key = rnd.choice(sorted(doc))
    samples = doc[key] if key == "samples" and isinstance(doc[key], list) else []
    sample = rnd.choice(samples) if samples else None
    if isinstance(sample, list) and sample and rnd.random() < 0.7:  # one item of one sample
        sample[rnd.randrange(len(sample))] = rnd.choice(ODD_VALUES)
    else:
        doc[key] = rnd.choice(ODD_VALUES)
    return _dump(doc)


#: number literals a JSON parser may choke on: over-long, overflowing, or not numbers at all
ODD_NUMBERS = (
    b"9" * 5000, b"-" + b"9" * 4301, b"1" + b"0" * 400, b"1e999", b"-1e999", b"1e-999",
    b"NaN", b"Infinity", b"-Infinity", b"0x10", b"1_000", b"01", b"1.", b".5", b"+1",
)  # fmt: skip


def odd_number(raw: bytes, rnd: random.Random) -> bytes:
    doc = _fields(raw)
    key = rnd.choice([k for k in ("seq", "created", "v") if k in doc])
    marker = "\x01marker\x01"
    doc[key] = marker
    return _dump(doc).replace(json.dumps(marker).encode(), rnd.choice(ODD_NUMBERS))


def duplicate_key(raw: bytes, rnd: random.Random) -> bytes:
    doc = _fields(raw)
    key = rnd.choice(sorted(doc))
    copy = _dump({key: doc[key] if rnd.random() < 0.5 else rnd.choice(ODD_VALUES)})
    return b"{" + copy[1:-1] + b"," + raw[1:]


def deep_nesting(raw: bytes, rnd: random.Random) -> bytes:
    depth = rnd.choice((100, 1000, 5000, 100_000))
    opener, closer = (b"[", b"]") if rnd.random() < 0.5 else (b'{"a":', b"}")
    nested = opener * depth + b"1" + closer * depth
    doc = _fields(raw)
    key = rnd.choice(sorted(doc))
    marker = "\x01marker\x01"
    doc[key] = marker
    return _dump(doc).replace(json.dumps(marker).encode(), nested)


INVALID_UTF8 = (b"\xff", b"\xfe\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80")


def invalid_utf8(raw: bytes, rnd: random.Random) -> bytes:
    at = rnd.randrange(len(raw))
    return raw[:at] + rnd.choice(INVALID_UTF8) + raw[at:]


def lone_surrogate(raw: bytes, rnd: random.Random) -> bytes:
    """Valid JSON, but text that is not Unicode (``\\ud800`` unpaired) in a string."""
    quotes = [i for i, c in enumerate(raw) if c == ord('"')]
    at = rnd.choice(quotes) + 1
    return raw[:at] + rnd.choice((b"\\ud800", b"\\udfff", b"\\u0000")) + raw[at:]


def splice(raw: bytes, rnd: random.Random) -> bytes:
    a, b = sorted(rnd.sample(range(len(raw)), 2))
    return raw[:a] + raw[b:] + raw[a:b]


MUTATIONS: tuple[Mutation, ...] = (
    bit_flips, truncation, field_swap, type_change, odd_number, duplicate_key, deep_nesting,
    invalid_utf8, lone_surrogate, splice,
)  # fmt: skip


def _same(a: bytes, b: bytes) -> bool:
    """Whether ``b`` is ``a`` again, perhaps with its fields in another order."""
    if a == b:
        return True
    try:  # objects as sorted pairs: the order does not count, a duplicate key does
        return bool(
            json.loads(a, object_pairs_hook=_pairs) == json.loads(b, object_pairs_hook=_pairs)
        )
    except (ValueError, RecursionError):
        return False


def _pairs(pairs: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    return sorted(pairs, key=repr)


def mutate(raw: bytes, rnd: random.Random) -> tuple[str, bytes]:
    """(the mutations' names, bytes that say something else than ``raw``): one to three
    mutations; swaps that undo each other, leaving the fields reordered, are tried again."""
    names, out = [], raw
    while _same(raw, out):
        names, out = [], raw
        for _ in range(rnd.randint(1, 3)):
            mutation = rnd.choice(MUTATIONS)
            try:
                out = mutation(out, rnd)
            except (ValueError, TypeError, IndexError):  # the previous one left no JSON
                out = bit_flips(out, rnd) if out else b"\xff"
                mutation = bit_flips
            names.append(mutation.__name__)
    return "+".join(names), out
