"""Checking a signed report with nothing but the file and the gateways' public keys.

Every check runs, whatever the others found, so a changed report fails by name: the
platform signature says *that* something changed, the other checks say *what* (a checkpoint
whose signature fails, a broken checkpoint sequence, a series whose count disagrees with what
its gateway attested, a device added or left out). What cannot be checked is said as such,
never passed over: a gateway without a key, time no checkpoint covers, a shortfall that only
the platform's record of a declared loss explains.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

import gateway.protocol as wire
import identifiers
from evidence._report import Report, signed_bytes, us

Status = Literal["ok", "fail", "unchecked"]
Series = tuple[str, str]  # device, tag
Span = tuple[int, int]  # [from, to) in µs


@dataclass(frozen=True, slots=True)
class Finding:
    status: Status
    check: str
    subject: str
    detail: str


@dataclass
class Verification:
    """What was verified, what failed and what could not be checked, in the order found."""

    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def failures(self) -> list[Finding]:
        return [f for f in self.findings if f.status == "fail"]

    @property
    def unchecked(self) -> list[Finding]:
        """What could not be checked, but the assessment (never recomputed, always said)."""
        return [f for f in self.findings if f.status == "unchecked" and f.check != "assessment"]

    def add(self, status: Status, check: str, subject: str, detail: str) -> None:
        self.findings.append(Finding(status, check, subject, detail))

    def table(self) -> str:
        """One line per finding: status, check, subject, detail (what a person reads)."""
        label = {"ok": "OK", "fail": "FAIL", "unchecked": "UNCHECKED"}
        width = max((len(f.check) for f in self.findings), default=0)
        lines = [
            f"{label[f.status]:<9}  {f.check:<{width}}  {f.subject}: {f.detail}"
            for f in self.findings
        ]
        counts = {s: sum(f.status == s for f in self.findings) for s in label}
        lines.append(
            f"{counts['ok']} verified, {counts['fail']} failed, {counts['unchecked']} not checkable"
        )
        return "\n".join(lines)


async def gateway_keys(client: identifiers.Client, report: Report) -> dict[str, bytes | str]:
    """The raw public key of each gateway of ``report``, resolved from its identifier record,
    or why it could not be had. Raises ``identifiers.NodeUnavailable`` if no node answers."""
    out: dict[str, bytes | str] = {}
    for att in report.report.get("attestation") or []:
        gateway = str(att.get("gateway"))
        try:
            record = await client.resolve(gateway)
            out[gateway] = identifiers.GatewayRecord.from_record(record).public_key
        except identifiers.HandleError as exc:
            out[gateway] = f"its identifier record cannot be had: {exc}"
        except ValueError as exc:
            out[gateway] = f"its identifier record is not a gateway's: {exc}"
    return out


def verify_report(
    report: Report, keys: Mapping[str, bytes | str], *, platform_key: str | None = None
) -> Verification:
    """Check ``report`` against the gateways' raw public ``keys`` (a text: why there is none).

    ``platform_key``: the fingerprint (``sha256:…``) of the platform's key as the evaluator
    knows it; without it the report's own key is used and said to be unvouched.
    """
    out = Verification()
    _platform(out, report, platform_key)
    try:
        _content(out, report.report, keys)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        # a file changed by hand may hold anything: what cannot be read fails, by name
        out.add("fail", "report", "content", f"malformed: {exc!r}")
    out.add(
        "unchecked",
        "assessment",
        str(report.report.get("firm", "?")),
        "derived from the facts by the platform; not recomputed here",
    )
    return out


def _content(out: Verification, doc: dict[str, Any], keys: Mapping[str, bytes | str]) -> None:
    window = (_time(doc["window"]["from"]), _time(doc["window"]["to"]))
    facts = doc["facts"]
    tags = {(t["device"], t["tag"]): int(t["samples"]) for t in facts["tags"]}
    devices = {d["identifier"]: d for d in facts["devices"]}
    _device_totals(out, devices, tags)
    attested_gateways = set()
    for att in doc["attestation"]:
        gateway = str(att.get("gateway"))
        attested_gateways.add(gateway)
        key = keys.get(gateway, "no key was given for it")
        _Gateway(out, gateway, key, window, att).check(tags, devices)
    for device, d in sorted(devices.items()):
        if d.get("samples") and d.get("gateway") not in attested_gateways:
            out.add(
                "unchecked",
                "attestation",
                device,
                f"{d['samples']} samples, but its gateway {d.get('gateway')} has no checkpoints "
                "in the report",
            )


def _time(text: str) -> int:
    value = dt.datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError(f"{text!r} has no timezone")
    return us(value)


def _platform(out: Verification, report: Report, expected: str | None) -> None:
    try:
        public = base64.b64decode(report.report["platform_key"], validate=True)
        key = Ed25519PublicKey.from_public_bytes(public)
    except (KeyError, TypeError, ValueError) as exc:
        out.add("fail", "platform signature", "report", f"no usable platform key: {exc}")
        return
    fingerprint = wire.fingerprint(public)
    try:
        key.verify(report.signature, signed_bytes(report.report))
    except (InvalidSignature, ValueError):
        out.add(
            "fail",
            "platform signature",
            "report",
            f"does not verify under the report's key {fingerprint}: the report was changed "
            "after it was signed",
        )
    else:
        out.add("ok", "platform signature", "report", f"signed by {fingerprint}")
    if expected is None:
        out.add(
            "unchecked",
            "platform key",
            fingerprint,
            "not vouched for: compare it with the platform's published key (--platform-key)",
        )
    elif expected != fingerprint:
        out.add("fail", "platform key", fingerprint, f"is not the expected {expected}")
    else:
        out.add("ok", "platform key", fingerprint, "is the expected one")


def _device_totals(
    out: Verification, devices: Mapping[str, Any], tags: Mapping[Series, int]
) -> None:
    per_device: dict[str, int] = defaultdict(int)
    for (device, _tag), n in tags.items():
        per_device[device] += n
    for device in sorted(per_device.keys() - devices.keys()):
        out.add("fail", "report", device, "has tag counts but is not in the device list")
    for device, d in sorted(devices.items()):
        if int(d.get("samples") or 0) != per_device.get(device, 0):
            out.add(
                "fail",
                "report",
                device,
                f"device total {d.get('samples')} is not the sum of its tags, "
                f"{per_device.get(device, 0)}",
            )


class _Gateway:
    """The checks of one gateway's attestation."""

    def __init__(
        self,
        out: Verification,
        gateway: str,
        key: bytes | str,
        window: Span,
        att: Mapping[str, Any],
    ) -> None:
        self.out, self.gateway, self.key, self.window, self.att = out, gateway, key, window, att
        #: (device, tag) → period → samples, summed over the valid checkpoints
        self.attested: dict[Series, dict[Span, int]] = defaultdict(lambda: defaultdict(int))
        #: the valid checkpoints whose time overlaps the window (and the partial ones of the
        #: closing ones among them), by seq
        self.covering: list[tuple[wire.Envelope, wire.Checkpoint]] = []
        #: of them, the closing ones: the time the checkpoints cover
        self.closing: list[tuple[wire.Envelope, wire.Checkpoint]] = []
        #: the valid checkpoint before the first covering one (the report holds it so that a
        #: partial checkpoint left out at the start shows)
        self.anchor: tuple[wire.Envelope, wire.Checkpoint] | None = None

    def check(self, tags: Mapping[Series, int], devices: Mapping[str, Any]) -> None:
        checkpoints = self._checkpoints()
        if not checkpoints:
            return
        self._sequence()
        try:
            stored = {
                (str(d), str(t), (int(f), int(e))): int(n) for d, t, f, e, n in self.att["stored"]
            }
            # less what arrived of the declared envelopes (not in reports made before it)
            declared = sum(
                max(0, int(loss[2] or 0) - max(0, int(loss[4] if len(loss) > 4 else 0)))
                for loss in self.att["losses"]
            )
        except (KeyError, TypeError, ValueError) as exc:
            self.out.add("fail", "report", self.gateway, f"stored counts malformed: {exc!r}")
            return
        self._counts(stored, declared)
        self._facts(stored, tags, devices)

    # -- signatures and the sequence --------------------------------------------------------------

    def _checkpoints(self) -> list[wire.Envelope]:
        items = self.att.get("checkpoints") or []
        if not items:
            self.out.add("unchecked", "checkpoints", self.gateway, "none in the window")
            return []
        if isinstance(self.key, str):
            self.out.add(
                "unchecked",
                "checkpoints",
                self.gateway,
                f"{len(items)} checkpoints, but no public key for the gateway: {self.key}",
            )
            return []
        valid = []
        checked: list[tuple[wire.Envelope, wire.Checkpoint]] = []
        for i, item in enumerate(items):
            where = f"{self.gateway} checkpoint [{i}]"
            try:
                signed = wire.decode_json(json.dumps(item, ensure_ascii=False).encode())
            except wire.ProtocolError as exc:
                self.out.add("fail", "checkpoint", where, f"malformed: {exc}")
                continue
            env = signed.envelope
            where = f"{self.gateway} #{env.seq}"
            if env.checkpoint is None or env.gateway != self.gateway:
                self.out.add("fail", "checkpoint", where, "is not a checkpoint of this gateway")
                continue
            try:
                signed.verify(self.key)
            except wire.SignatureError:
                self.out.add("fail", "checkpoint", where, "the gateway's signature does not verify")
                continue
            valid.append(env)
            cp = env.checkpoint
            checked.append((env, cp))
            for period in cp.periods:
                for c in period.counts:
                    self.attested[c.device, c.tag][period.start, period.end] += c.samples
        # the closing checkpoints whose time overlaps the window, the partial ones ending in
        # it (a closing one must follow each), and those of the closing one the window ends
        # in (their end lies beyond the window's)
        w0, w1 = self.window
        ends = {cp.end for _, cp in checked if not cp.partial and cp.end > w0 and cp.start < w1}
        self.covering = sorted(
            (
                (env, cp)
                for env, cp in checked
                if cp.end in ends or (cp.partial and w0 < cp.end <= w1)
            ),
            key=lambda pair: pair[0].seq,
        )
        self.closing = [(env, cp) for env, cp in self.covering if not cp.partial]
        if self.covering:
            first = self.covering[0][0].seq
            earlier = [env for env in valid if env.seq < first and env.checkpoint is not None]
            if earlier:
                env = max(earlier, key=lambda e: e.seq)
                self.anchor = (env, env.checkpoint)  # type: ignore[assignment]
        if valid:
            self.out.add(
                "ok",
                "checkpoint",
                self.gateway,
                f"{len(valid)} signatures verify (#{valid[0].seq}…#{valid[-1].seq})",
            )
        return valid

    def _sequence(self) -> None:
        covering = self.covering
        if not covering:
            self.out.add("unchecked", "coverage", self.gateway, "no valid checkpoint in the window")
            return
        broken = not self._anchored()
        closed = None if self.anchor is None or broken else self.anchor[1].end
        before: tuple[wire.Envelope, wire.Checkpoint] | None = None
        pending = None  # the end of the closing checkpoint that partial ones announced
        for after, a in covering:
            linked = before is not None and (a.previous, a.previous_hash) == (
                before[0].seq,
                before[0].digest,
            )
            if pending is not None:
                timed = a.end == pending
            elif a.partial:
                timed = closed is None or a.end > closed
            else:
                timed = closed is None or a.start == closed
            if before is not None and not (linked and timed):
                broken = True
                b = before[1]
                self.out.add(
                    "fail",
                    "checkpoint sequence",
                    f"{self.gateway} #{after.seq}",
                    f"names #{a.previous} as its predecessor and {_spell(a)}; the report's "
                    f"previous one is #{before[0].seq}, {_spell(b)}: a checkpoint is missing "
                    "or was changed",
                )
            before = (after, a)
            pending = a.end if a.partial else None
            if not a.partial:
                closed = a.end
        if pending is not None:
            broken = True
            self.out.add(
                "fail",
                "checkpoint sequence",
                f"{self.gateway} #{covering[-1][0].seq}",
                f"is a partial checkpoint to {_iso(pending)}; the report lacks the closing "
                "checkpoint that follows it: a checkpoint is missing",
            )
        if not self.closing:
            self.out.add(
                "unchecked", "coverage", self.gateway, "no valid closing checkpoint in the window"
            )
            return
        first, last = self.closing[0][1], self.closing[-1][1]
        if not broken:
            restarts = [f"#{e.seq}" for e, cp in covering if cp.restarted]
            partial = sum(cp.partial for _, cp in covering)
            self.out.add(
                "ok",
                "checkpoint sequence",
                self.gateway,
                f"#{covering[0][0].seq}…#{covering[-1][0].seq} unbroken, {_iso(first.start)} to "
                f"{_iso(last.end)}"
                + (f" ({partial} of them partial)" if partial else "")
                + (f"; the gateway restarted at {', '.join(restarts)}" if restarts else ""),
            )
        start, end = self.window
        if first.start > start or last.end < end:
            self.out.add(
                "unchecked",
                "coverage",
                self.gateway,
                f"checkpoints cover {_iso(first.start)} to {_iso(last.end)}, not the whole "
                f"window {_iso(start)} to {_iso(end)}",
            )

    def _anchored(self) -> bool:
        """Whether the first covering checkpoint follows the one before it in the report, a
        closing checkpoint (else partial checkpoints may be left out before it); False if
        it fails."""
        env, cp = self.covering[0]
        if cp.previous == 0:
            return True
        if self.anchor is None:
            self.out.add(
                "unchecked",
                "checkpoint sequence",
                f"{self.gateway} #{env.seq}",
                f"the report does not hold #{cp.previous}, the checkpoint before it: partial "
                "checkpoints left out before it cannot be ruled out",
            )
            return True
        before, b = self.anchor
        linked = (cp.previous, cp.previous_hash) == (before.seq, before.digest)
        if linked and not b.partial and (cp.end > b.end if cp.partial else cp.start == b.end):
            return True
        self.out.add(
            "fail",
            "checkpoint sequence",
            f"{self.gateway} #{env.seq}",
            f"names #{cp.previous} as its predecessor; the report's checkpoint before it is "
            f"#{before.seq}, {_spell(b)}: a checkpoint is missing or was changed",
        )
        return False

    # -- counts -----------------------------------------------------------------------------------

    def _attested_in(self, series: Series, span: Span) -> int:
        spans = self.attested.get(series)
        if not spans:
            return 0
        return sum(n for (f, t), n in spans.items() if span[0] <= f and t <= span[1])

    def _counts(self, stored: Mapping[tuple[str, str, Span], int], declared: int) -> None:
        """Every period a checkpoint names, and each covering checkpoint's own time, for every
        series: the platform's count must be what the gateway attested."""
        own = [(cp.start, cp.end) for _, cp in self.closing]
        if not own:
            return
        # the time the covering checkpoints span: later periods of late checkpoints may have
        # counts in checkpoints the report need not hold
        low, high = own[0][0], own[-1][1]
        spans = {s for (_, _, s) in stored} | set(own)
        spans.update(span for per in self.attested.values() for span in per)
        spans = {s for s in spans if s[1] > low and s[0] < high}
        series = set(self.attested) | {(d, t) for d, t, _ in stored}
        agree, short = 0, []
        for ser in sorted(series):
            for span in sorted(spans):
                have = stored.get((*ser, span), 0)
                attested = self._attested_in(ser, span)
                if have == attested:
                    agree += have > 0
                elif have > attested:
                    self.out.add(
                        "fail",
                        "count",
                        f"{ser[0]} {ser[1]} {_iso(span[0])}–{_iso(span[1])}",
                        f"the platform holds {have} samples, the gateway {self.gateway} "
                        f"attested {attested}",
                    )
                else:
                    short.append((ser, span, have, attested))
        missing = sum(a - h for _, _, h, a in short)
        for ser, span, have, attested in short:
            subject = f"{ser[0]} {ser[1]} {_iso(span[0])}–{_iso(span[1])}"
            detail = f"the gateway {self.gateway} attested {attested}, the platform holds {have}"
            if missing <= declared:
                self.out.add(
                    "unchecked",
                    "count",
                    subject,
                    f"{detail}; within the {declared} samples of the losses the platform "
                    "recorded as declared (their envelopes are not in the report)",
                )
            else:
                self.out.add("fail", "count", subject, detail)
        if agree:
            self.out.add(
                "ok",
                "count",
                self.gateway,
                f"{agree} series × period counts agree with the gateway's checkpoints",
            )

    def _facts(
        self,
        stored: Mapping[tuple[str, str, Span], int],
        tags: Mapping[Series, int],
        devices: Mapping[str, Any],
    ) -> None:
        """The facts' count of each of the gateway's tags lies within what the checkpoints'
        time inside the window and overlapping it holds; attested series are in the facts."""
        if not self.closing:
            return
        start, end = self.window
        spans = [(cp.start, cp.end) for _, cp in self.closing]
        inside = [s for s in spans if start <= s[0] and s[1] <= end]
        exact = spans[0][0] >= start and spans[-1][1] <= end
        covered = spans[0][0] <= start and spans[-1][1] >= end
        mine = {d for d, info in devices.items() if info.get("gateway") == self.gateway}
        mine |= {d for d, _ in self.attested}
        agree = 0
        for ser in sorted({s for s in tags if s[0] in mine} | set(self.attested)):
            count = tags.get(ser)
            low = sum(stored.get((*ser, s), 0) for s in inside)
            high = sum(stored.get((*ser, s), 0) for s in spans)
            attested = sum(self._attested_in(ser, s) for s in inside)
            subject = f"{ser[0]} {ser[1]}"
            if count is None:
                if attested:
                    what = "device" if ser[0] not in devices else "series"
                    self.out.add(
                        "fail",
                        "device list",
                        subject,
                        f"the gateway {self.gateway} attested {attested} samples of this "
                        f"{what} in the window; the report leaves it out",
                    )
                continue
            if count < low or (covered and count > high):
                bound = f"{low}" if low == high else f"between {low} and {high}"
                self.out.add(
                    "fail",
                    "count",
                    subject,
                    f"the report counts {count} samples in the window; the periods the gateway "
                    f"attested hold {bound}",
                )
            elif count and not high and not any(self._attested_in(ser, s) for s in spans):
                # nothing of it in any period touching the window (a window that does not end
                # on a period's edge may hold a sample of a period only partly inside it)
                self.out.add(
                    "fail",
                    "device list",
                    subject,
                    f"{count} samples in the report, none attested by {self.gateway}",
                )
            else:
                agree += 1
        if agree:
            how = "exactly" if exact and covered else "within the checkpoints' periods"
            self.out.add(
                "ok",
                "window count",
                self.gateway,
                f"{agree} series match the attested counts {how}",
            )


def _spell(cp: wire.Checkpoint) -> str:
    if cp.partial:
        return f"partial to {_iso(cp.end)}"
    return f"{_iso(cp.start)} to {_iso(cp.end)}"


def _iso(micros: int) -> str:
    return (
        (dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=micros))
        .strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        .replace(".000000Z", "Z")
    )
