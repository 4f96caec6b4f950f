"""The verifier's judgement on reports built by hand: late counts, declared losses, coverage.

The pipeline test (test_report.py) shows a real report verifying and changed ones failing;
these cases need a gateway that lost data or committed samples late, which is easier to
write down than to provoke.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import evidence
import gateway.protocol as p
from evidence._report import FORMAT, signed_bytes

GW = "88.709.911/gw.1"
DEV = "88.709.911/dev.kiln"
T0 = 1_764_000_000_000_000  # a whole minute
MIN = 60_000_000
GW_KEY = Ed25519PrivateKey.generate()
PLATFORM = Ed25519PrivateKey.generate()


def iso(us: int) -> str:
    return (dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=us)).isoformat()


def checkpoints(*periods: list[tuple[int, int]]) -> list[dict[str, Any]]:
    """One checkpoint a minute from T0; ``periods[i]`` are (period start, samples) counts of
    tag ``t`` that checkpoint i attests."""
    out, prev, prev_hash = [], 0, p.GENESIS
    for i, counts in enumerate(periods):
        cp = p.Checkpoint(
            T0 + i * MIN, T0 + (i + 1) * MIN, prev, prev_hash, i == 0,
            tuple(p.Period(s, s + MIN, (p.Count(DEV, "t", n),)) for s, n in counts),
        )  # fmt: skip
        env = p.Envelope(GW, 10 * (i + 1), bytes(32), T0 + (i + 1) * MIN + 5, checkpoint=cp)
        prev, prev_hash = env.seq, env.digest
        out.append(json.loads(p.encode_json(p.sign(env, GW_KEY))))
    return out


def report(
    stored: dict[int, int],
    cps: list[dict[str, Any]],
    minutes: int,
    losses: list[list[Any]] | None = None,
) -> evidence.Report:
    """A signed report of the window [T0, T0 + minutes) whose platform stored ``stored``
    (period start → samples) and counts their sum in the window."""
    in_window = sum(n for s, n in stored.items() if s < T0 + minutes * MIN)
    spans = {(s, s + MIN) for s in stored} | {
        (c["checkpoint"]["from"], c["checkpoint"]["to"]) for c in cps
    }
    doc = {
        "format": FORMAT,
        "firm": "88.709.911/firm",
        "window": {"from": iso(T0), "to": iso(T0 + minutes * MIN)},
        "generated": iso(T0 + 10 * MIN),
        "platform_key": base64.b64encode(p.public_key_bytes(PLATFORM)).decode(),
        "facts": {
            "devices": [{"identifier": DEV, "gateway": GW, "samples": in_window}],
            "tags": [{"device": DEV, "tag": "t", "samples": in_window}],
        },
        "assessment": {},
        "attestation": [
            {
                "gateway": GW,
                "checkpoints": cps,
                "stored": [[DEV, "t", f, e, stored.get(f, 0)] for f, e in sorted(spans)],
                "losses": losses or [],
            }
        ],
    }
    return evidence.Report(doc, PLATFORM.sign(signed_bytes(doc)))


KEYS: dict[str, bytes | str] = {GW: p.public_key_bytes(GW_KEY)}


def statuses(result: evidence.Verification, check: str) -> list[str]:
    return [f.status for f in result.findings if f.check == check]


def test_late_counts_in_a_later_checkpoint_add_up() -> None:
    # 55 samples of minute 0 attested at once, 5 more committed late and attested by the next
    cps = checkpoints([(T0, 55)], [(T0, 5), (T0 + MIN, 60)], [(T0 + 2 * MIN, 60)])
    result = evidence.verify_report(report({T0: 60, T0 + MIN: 60}, cps, 2), KEYS)
    assert result.ok, result.table()
    assert "exactly" in next(f.detail for f in result.findings if f.check == "window count")


def test_a_shortfall_is_unchecked_when_declared_losses_cover_it_and_fails_otherwise() -> None:
    cps = checkpoints([(T0, 60)], [(T0 + MIN, 60)])
    declared = [[3, 4, 10, "outbox full"]]
    covered = evidence.verify_report(report({T0: 50, T0 + MIN: 60}, cps, 2, declared), KEYS)
    assert covered.ok, covered.table()
    assert "unchecked" in statuses(covered, "count")
    short = evidence.verify_report(report({T0: 50, T0 + MIN: 60}, cps, 2), KEYS)
    assert [f.subject for f in short.failures if f.check == "count"] == [
        f"{DEV} t {iso(T0)[:19]}Z–{iso(T0 + MIN)[:19]}Z"
    ]
    # 5 of the declared samples arrived all the same: 5 declared and lost cannot excuse 10
    arrived = [[3, 4, 10, "outbox full", 5]]
    partly = evidence.verify_report(report({T0: 50, T0 + MIN: 60}, cps, 2, arrived), KEYS)
    assert [f.check for f in partly.failures] == ["count"], partly.table()


def test_samples_no_checkpoint_attests_fail() -> None:
    cps = checkpoints([(T0, 60)], [])  # the second minute attested empty
    result = evidence.verify_report(report({T0: 60, T0 + MIN: 7}, cps, 2), KEYS)
    assert any(f.check == "count" and "holds 7 samples" in f.detail for f in result.failures), (
        result.table()
    )


def test_a_window_beyond_the_last_checkpoint_is_said_to_be_uncovered() -> None:
    cps = checkpoints([(T0, 60)])
    result = evidence.verify_report(report({T0: 60}, cps, 3), KEYS)
    assert result.ok, result.table()
    assert "unchecked" in statuses(result, "coverage")


def verify_command(
    tmp: Path, signed: evidence.Report, *options: str, vouched: bool = True
) -> subprocess.CompletedProcess[str]:
    """``guantong evidence verify`` of ``signed`` with the gateway's key from a file, and the
    platform key's fingerprint if ``vouched``."""
    (tmp / "report.json").write_bytes(signed.to_json())
    (tmp / "keys.json").write_text(json.dumps({GW: base64.b64encode(KEYS[GW]).decode()}))  # type: ignore[arg-type]
    if vouched:
        options += ("--platform-key", p.fingerprint(p.public_key_bytes(PLATFORM)))
    return subprocess.run(
        [sys.executable, "-m", "guantong", "evidence", "verify", str(tmp / "report.json"),
         "--keys", str(tmp / "keys.json"), *options],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_strict_verification_exits_4_while_anything_but_the_assessment_is_unchecked(
    tmp_path: Path,
) -> None:
    # a gateway without checkpoints in the report: nothing of it can be checked
    uncovered = report({T0: 60}, [], 1)
    plain = verify_command(tmp_path, uncovered)
    assert plain.returncode == 0, plain.stdout  # without --strict: 0 unless a check failed
    assert "UNCHECKED  checkpoints" in plain.stdout
    strict = verify_command(tmp_path, uncovered, "--strict")
    assert strict.returncode == 4, strict.stdout + strict.stderr
    assert "strict: 1 findings could not be checked" in strict.stderr
    # the platform key not vouched for is not checked either
    cps = checkpoints([(T0, 60)], [(T0 + MIN, 60)])
    whole = report({T0: 60, T0 + MIN: 60}, cps, 2)
    assert verify_command(tmp_path, whole, "--strict", vouched=False).returncode == 4
    # everything checked: only the assessment, which is never recomputed, is left
    checked = verify_command(tmp_path, whole, "--strict")
    assert checked.returncode == 0, checked.stdout
    assert checked.stdout.count("UNCHECKED") == 1
    assert "UNCHECKED  assessment" in checked.stdout
    # a failure is 1, strict or not
    short = report({T0: 50, T0 + MIN: 60}, cps, 2)
    assert verify_command(tmp_path, short, "--strict").returncode == 1


# -- partial checkpoints: a period's counts in several checkpoints of the same end ------------

TAGS = ("t", "u", "v")


def split_chain(minutes: int) -> list[dict[str, Any]]:
    """Per minute from T0 (60 samples of each of ``TAGS``), as a gateway that holds two
    counts a checkpoint makes them: a partial checkpoint with ``t`` and ``u``, then the
    closing one with ``v``; the first closing one starts at T0."""
    out, prev, prev_hash, seq = [], 0, p.GENESIS, 0
    for i in range(minutes):
        start, end = T0 + i * MIN, T0 + (i + 1) * MIN
        for begin, tags in ((end, TAGS[:2]), (start, TAGS[2:])):
            counts = tuple(p.Count(DEV, tag, 60) for tag in tags)
            cp = p.Checkpoint(begin, end, prev, prev_hash, seq == 0,
                              (p.Period(start, end, counts),))  # fmt: skip
            seq += 1
            env = p.Envelope(GW, seq, bytes(32), end + seq, checkpoint=cp)
            prev, prev_hash = env.seq, env.digest
            out.append(json.loads(p.encode_json(p.sign(env, GW_KEY))))
    return out


def split_report(cps: list[dict[str, Any]], first: int, minutes: int) -> evidence.Report:
    """The report of the window of ``minutes`` from minute ``first``, every sample stored."""
    start, end = T0 + first * MIN, T0 + (first + minutes) * MIN
    n = 60 * minutes
    doc = {
        "format": FORMAT,
        "firm": "88.709.911/firm",
        "window": {"from": iso(start), "to": iso(end)},
        "generated": iso(end + MIN),
        "platform_key": base64.b64encode(p.public_key_bytes(PLATFORM)).decode(),
        "facts": {
            "devices": [{"identifier": DEV, "gateway": GW, "samples": n * len(TAGS)}],
            "tags": [{"device": DEV, "tag": tag, "samples": n} for tag in TAGS],
        },
        "assessment": {},
        "attestation": [
            {
                "gateway": GW,
                "checkpoints": cps,
                "stored": [
                    [DEV, tag, s, s + MIN, 60]
                    for tag in TAGS
                    for s in range(T0, T0 + (first + minutes) * MIN, MIN)
                ],
                "losses": [],
            }
        ],
    }
    return evidence.Report(doc, PLATFORM.sign(signed_bytes(doc)))


def test_partial_checkpoints_and_their_closing_one_add_up() -> None:
    result = evidence.verify_report(split_report(split_chain(3), 0, 3), KEYS)
    assert result.ok, result.table()
    sequence = next(f for f in result.findings if f.check == "checkpoint sequence")
    assert sequence.status == "ok"
    assert "#1…#6 unbroken" in sequence.detail
    assert "3 of them partial" in sequence.detail
    assert "exactly" in next(f.detail for f in result.findings if f.check == "window count")
    assert not [f for f in result.findings if f.check == "coverage"], result.table()


def test_the_checkpoint_before_the_window_anchors_its_first_partial_one() -> None:
    cps = split_chain(3)
    # minute 0's closing checkpoint (#2) is the one before the window of minutes 1 and 2
    result = evidence.verify_report(split_report(cps[1:], 1, 2), KEYS)
    assert result.ok, result.table()
    assert "unchecked" not in statuses(result, "checkpoint sequence")
    # without it, what came before cannot be checked, and the report says so
    bare = evidence.verify_report(split_report(cps[2:], 1, 2), KEYS)
    assert bare.ok, bare.table()
    assert "unchecked" in statuses(bare, "checkpoint sequence")


def sequence_failures(result: evidence.Verification) -> list[str]:
    return [f.subject for f in result.failures if f.check == "checkpoint sequence"]


def test_a_partial_checkpoint_left_out_is_seen() -> None:
    cps = split_chain(3)
    middle = evidence.verify_report(split_report(cps[:2] + cps[3:], 0, 3), KEYS)  # #3
    assert sequence_failures(middle) == [f"{GW} #4"], middle.table()
    # the first of the window, the checkpoint before the window kept
    first = evidence.verify_report(split_report(cps[1:2] + cps[3:], 1, 2), KEYS)
    assert sequence_failures(first) == [f"{GW} #4"], first.table()


def test_a_closing_checkpoint_left_out_is_seen() -> None:
    cps = split_chain(3)
    last = evidence.verify_report(split_report(cps[:-1], 0, 3), KEYS)  # #6
    assert sequence_failures(last) == [f"{GW} #5"], last.table()
    assert "lacks the closing checkpoint" in last.failures[0].detail
    middle = evidence.verify_report(split_report(cps[:3] + cps[4:], 0, 3), KEYS)  # #4
    assert sequence_failures(middle) == [f"{GW} #5"], middle.table()


def test_a_window_ending_inside_a_period_holds_its_partial_checkpoints() -> None:
    # minutes 0–2 and a window ending half-way through minute 2: its closing checkpoint (#6)
    # overlaps the window, and so belongs the partial one before it (#5), whose end (the end of
    # minute 2) lies beyond the window's
    doc = copy.deepcopy(split_report(split_chain(3), 0, 3).report)
    doc["window"]["to"] = iso(T0 + 2 * MIN + MIN // 2)
    for tag in doc["facts"]["tags"]:
        tag["samples"] = 150
    doc["facts"]["devices"][0]["samples"] = 150 * len(TAGS)
    result = evidence.verify_report(evidence.Report(doc, PLATFORM.sign(signed_bytes(doc))), KEYS)
    assert result.ok, result.table()
    sequence = next(f for f in result.findings if f.check == "checkpoint sequence")
    assert "#1…#6 unbroken" in sequence.detail, result.table()


def test_a_sample_in_a_period_only_partly_in_the_window_is_attested_by_it() -> None:
    # a tag sampled once, in minute 1, and a window ending half-way through minute 1: no period
    # lies wholly inside the window but minute 0, which holds nothing of the tag
    cps = checkpoints([], [(T0 + MIN, 1)])
    doc = copy.deepcopy(report({T0 + MIN: 1}, cps, 2).report)
    doc["window"]["to"] = iso(T0 + MIN + MIN // 2)
    result = evidence.verify_report(evidence.Report(doc, PLATFORM.sign(signed_bytes(doc))), KEYS)
    assert result.ok, result.table()
    assert statuses(result, "window count") == ["ok"], result.table()
    # a tag the gateway attested in no period touching the window is still refused
    doc["facts"]["tags"].append({"device": DEV, "tag": "u", "samples": 1})
    doc["facts"]["devices"][0]["samples"] += 1
    result = evidence.verify_report(evidence.Report(doc, PLATFORM.sign(signed_bytes(doc))), KEYS)
    assert [f.subject for f in result.failures] == [f"{DEV} u"], result.table()
