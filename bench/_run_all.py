"""The performance run: every benchmark of the project, then ``BENCHMARKS.md`` written from
their figures. Started by ``bench/run_all`` (which sets the machine up first); see
docs/testing.md, "Performance run".

    bench/run_all [--quick] [--output BENCHMARKS.md] [--dsn ADMIN_DSN] [--only NAME ...]
        [--profile-rate 25 | --no-profile]

Each benchmark runs as its own process with ``--json FILE`` (its figures, with the baseline
measured in the same run and the ratio) under the sampling profiler py-spy, attached to it and
every process it starts (``--subprocesses --nonblocking``: the processes are never paused),
so that a figure that misses its target is shown with where the time went in that very run.
The PostgreSQL the benchmarks use is a throwaway cluster this run starts (that of the test
suite, with commit timestamps kept for the end-to-end latency), unless ``--dsn`` names one.
``--quick`` runs each benchmark briefly with small loads: it tests the machinery, and its
figures say nothing about the targets.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"


@dataclass(frozen=True)
class Bench:
    name: str
    script: str
    issue: str
    what: str
    full: tuple[str, ...] = ()
    quick: tuple[str, ...] = ()
    dsn: bool = False  # takes --dsn


BENCHES = [
    Bench("identifiers", "identifiers_bench.py", "#4", "identifier resolution, with and "
          "without the client's cache", quick=("--seconds", "0.5", "--handles", "100"),
          dsn=True),
    Bench("modbus", "modbus_bench.py", "#5", "Modbus collection of 100,000 scattered tags: the "
          "driver, plain pymodbus, the driver scheduled at 1 s and the whole gateway",
          full=("--gateway",),
          quick=("--gateway", "--tags", "5000", "--seconds", "2", "--endpoints", "2",
                 "--plc-tags", "500")),
    Bench("opcua", "opcua_bench.py", "#5", "OPC UA subscriptions of 20,000 items at 1 s",
          quick=("--items", "1000", "--seconds", "4", "--warmup", "2", "--window", "2")),
    Bench("gateway", "gateway_bench.py", "#6", "gateway uplink: outbox, signing, MQTT",
          quick=("--seconds", "2", "--devices", "5", "--tags", "20")),
    Bench("outbox", "outbox_bench.py", "#6", "outbox throughput and disk overhead",
          quick=("--seconds", "0.5",)),
    Bench("sparkplug", "sparkplug_bench.py", "#6", "Sparkplug B cost per sample",
          quick=("--envelopes", "20")),
    Bench("ingest", "ingest_bench.py", "#7", "single-node ingest against raw binary COPY, and "
          "its latency at 10k and 100k samples/s",
          quick=("--samples", "60000", "--rates", "5000", "--seconds", "2", "--repeat", "1"),
          dsn=True),
    Bench("kafka", "kafka_bench.py", "#8", "Kafka sinks, one and two, against raw COPY",
          quick=("--samples", "40000", "--gateways", "2"), dsn=True),
    Bench("report", "report_bench.py", "#9", "signed report of one firm, 100 devices × 24 h "
          "at 1 Hz", quick=("--devices", "5", "--hours", "1"), dsn=True),
    Bench("evidence_api", "evidence_api_bench.py", "#9", "the evidence API's requests over a "
          "day of 1 Hz data", quick=("--tags", "1", "--seconds", "0.5"), dsn=True),
    Bench("sim_scale", "sim_scale.py", "#3", "simulators serving the 110,000-tag factory",
          quick=("--reads", "200",)),
    Bench("e2e", "e2e_bench.py", "#11", "end to end: simulators → gateway → Mosquitto → "
          "ingest → PostgreSQL at 100,000 samples/s for 5 minutes",
          quick=("--tags", "5000", "--seconds", "15", "--endpoints", "2", "--plc-tags", "500"),
          dsn=True),
]  # fmt: skip


@dataclass(frozen=True)
class Target:
    key: str
    text: str  # the target as the issue states it
    op: str  # ">=" or "<="
    limit: float
    unit: str
    why: str = ""  # how the stated target is read into this limit


TARGETS = [
    Target("e2e.stored_rate", "end to end 100k samples/s", ">=", 99_000, "samples/s",
           "100,000 tags read every second; 1 % allowance for the partial first and last "
           "second"),
    Target("e2e.duration", "… for 5 minutes", ">=", 300, "s"),
    Target("e2e.lost", "… with zero loss", "<=", 0, "samples",
           "committed by the gateway − stored − declared losses − left in the outbox"),
    Target("e2e.gap_envelopes", "… with zero loss (chain)", "<=", 0, "envelopes",
           "envelopes missing from the gateway's chain, as ingest records them"),
    Target("e2e.latency_p99", "… and p99 ≤ 1 s", "<=", 1.0, "s", "sample time to commit"),
    Target("ingest.ratio_w0", "ingest ≥ 0.7 × raw COPY", ">=", 0.7, "×",
           "median ratio of 3 rounds of 1,000,000 samples (≈3 s of ingest each), from starting "
           "ingest to the last commit, default decode_workers=0 (decoding in ingest's own "
           "process); each round against raw COPY of the same rows just before it"),
    Target("ingest.ratio_steady_w0", "… once running (after the first commit)", ">=", 0.7, "×",
           "the same runs counted from ingest's first commit: its start (process, identifier "
           "look-ups, subscription) left out, as for an ingest that runs for months"),
    Target("ingest.ratio_w1", "ingest ≥ 0.7 × raw COPY (decode_workers=1)", ">=", 0.7, "×",
           "as above, with one decode worker process"),
    Target("modbus.gateway_rate", "gateway ≥ 100k Modbus tags/s", ">=", 99_000, "tags/s",
           "the whole gateway, 100,000 tags at 1 s, samples committed to the outbox; 1 % "
           "allowance for the partial first second"),
    Target("modbus.gateway_steady_rate", "… once running (from its first commit)", ">=", 99_000,
           "tags/s", "the same run counted from the gateway's first commit: its start (config, "
           "connections, the first aligned tick) left out"),
    Target("modbus.gateway_peak_rss", "… at ≤ 150 MB RSS", "<=", 150, "MB",
           "the whole gateway's peak RSS, config loading included"),
    Target("modbus.driver_rate", "Modbus driver ≥ 100k tags/s from one process", ">=",
           100_000, "tags/s", "the driver reading back to back (issue #5)"),
    Target("modbus.driver_peak_rss", "… with RSS ≤ 150 MB", "<=", 150, "MB"),
    Target("opcua.items", "OPC UA 20k items", ">=", 20_000, "items", "monitored items"),
    Target("opcua.lag_p99_growth", "… without lag", "<=", 0.5, "s",
           "p99 lag of the last window minus the first: a client that falls behind grows it"),
]  # fmt: skip


# --- running --------------------------------------------------------------------------------


@dataclass
class Outcome:
    bench: Bench
    returncode: int
    seconds: float
    output: str
    doc: dict[str, Any] | None
    profile: Path | None
    figures: dict[str, dict[str, Any]] = field(default_factory=dict)


class LoadSampler:
    """The 1-minute load average every few seconds, while the run goes on."""

    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self.values: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.values.append(os.getloadavg()[0])

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_bench(bench: Bench, args: argparse.Namespace, dsn: str, work: Path) -> Outcome:
    out_json = work / f"{bench.name}.json"
    argv = [sys.executable, str(BENCH / bench.script), *(bench.quick if args.quick else bench.full)]
    if bench.dsn:
        argv += ["--dsn", dsn]
    argv += ["--json", str(out_json)]
    profile = None
    if args.profile_rate > 0:
        profile = work / f"{bench.name}.profile.txt"
        argv = [str(py_spy()), "record", "--subprocesses", "--nonblocking", "--rate",
                str(args.profile_rate), "--format", "raw", "--output", str(profile),
                "--", *argv]  # fmt: skip
    print(f"[run_all] {bench.name}: {' '.join(argv)}", file=sys.stderr, flush=True)
    started = time.perf_counter()
    done = subprocess.run(
        argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False
    )
    seconds = time.perf_counter() - started
    (work / f"{bench.name}.out").write_text(done.stdout, encoding="utf-8")
    outcome = load_outcome(bench, work, done.returncode, seconds)
    status = "ok" if done.returncode == 0 and outcome.doc else f"FAILED ({done.returncode})"
    print(f"[run_all] {bench.name}: {status} in {seconds:.0f} s", file=sys.stderr, flush=True)
    return outcome


def py_spy() -> Path:
    found = Path(sys.executable).parent / "py-spy"
    if found.exists():
        return found
    which = shutil.which("py-spy")
    if which is None:
        raise SystemExit("py-spy is not installed (scripts/setup installs it with the test extra)")
    return Path(which)


@contextmanager
def postgres(args: argparse.Namespace) -> Iterator[tuple[str, str]]:
    """(admin DSN, description) of the PostgreSQL the benchmarks use."""
    import psycopg  # noqa: PLC0415

    if args.dsn:
        with psycopg.connect(args.dsn) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
            commit_ts = conn.execute("SHOW track_commit_timestamp").fetchone()[0]  # type: ignore[index]
        yield args.dsn, (f"PostgreSQL {version}, given by --dsn "
                         f"(track_commit_timestamp {commit_ts})")  # fmt: skip
        return
    sys.path.insert(0, str(ROOT / "tests"))
    from _services import PostgresCluster  # noqa: PLC0415

    cluster = PostgresCluster()
    cluster.start()
    try:
        with psycopg.connect(cluster.admin_dsn, autocommit=True) as conn:
            # the end-to-end bench reads each row's commit time for its latency
            conn.execute("ALTER SYSTEM SET track_commit_timestamp = on")
        cluster.restart()
        yield (
            cluster.admin_dsn,
            (
                f"PostgreSQL {cluster.version}, a throwaway cluster started by the run (the test "
                "suite's settings: fsync and full_page_writes off, synchronous_commit on; "
                "track_commit_timestamp on)"
            ),
        )
    finally:
        cluster.stop()
        shutil.rmtree(cluster.directory, ignore_errors=True)


# --- the machine ----------------------------------------------------------------------------


def command_output(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (done.stdout or done.stderr).strip()


def machine() -> dict[str, str]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = "unknown"
    for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
        if line.startswith("MemTotal:"):
            mem = f"{int(line.split()[1]) / 1024**2:.1f} GiB"
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    mosquitto_version = command_output([mosquitto, "-h"]).splitlines()[0:1]
    commit = command_output(["git", "-C", str(ROOT), "rev-parse", "--short=12", "HEAD"])
    dirty = command_output(
        ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"]
    )
    return {
        "CPU": cpu,
        "cores": str(os.cpu_count()),
        "RAM": mem,
        "OS": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "Mosquitto": mosquitto_version[0] if mosquitto_version else "unknown",
        "git commit": commit + (" (with uncommitted changes)" if dirty else ""),
        "py-spy": command_output([str(py_spy()), "--version"]),
    }


# --- profiles -------------------------------------------------------------------------------

FRAME_LINE = re.compile(r" \(([^():]+):\d+\)$")


def process_name(frame: str) -> str:
    """``process 123:"…/python …/x.py --role gateway …"`` → ``x.py --role gateway``."""
    pid, _, cmdline = frame.removeprefix("process ").partition(":")
    cmd = cmdline.strip('"').split()
    if not cmd:  # the process ended before py-spy read its command line
        return f"process {pid}"
    if "--multiprocessing-fork" in cmd:  # a worker of multiprocessing's spawn start method
        return f"multiprocessing worker, pid {pid}"
    if "-m" in cmd:
        i = cmd.index("-m")
        return " ".join(cmd[i + 1 : i + 4])
    script = next((Path(c).name for c in cmd if c.endswith(".py")), Path(cmd[0]).name)
    if "--role" in cmd:
        return f"{script} --role {cmd[cmd.index('--role') + 1]}"
    return script


def function(frame: str) -> str:
    """``f (pkg/mod.py:12)`` → ``f (pkg/mod.py)``: lines of one function counted together."""
    return FRAME_LINE.sub(r" (\1)", frame)


#: leaf frames of a thread that waits (py-spy's non-blocking mode cannot always tell an idle
#: thread): counted as waiting, not as work
IDLE = re.compile(
    r"^(\w+Selector\.select|select|poll|_worker|sleep|\w*\.?wait|_wait_for_tstate_lock|"
    r"get|accept|recv|recv_into|read) \((selectors|threading|asyncio/\w+|concurrent/futures/"
    r"thread|queue|socket|ssl|multiprocessing/\w+|subprocess)\.py\)$"
)
#: frames under every stack of a process (interpreter start, event loop, CLI dispatch): left
#: out of the inclusive column, where they would fill the top rows
PLUMBING = re.compile(
    r"^(<module>|main|run_role|_run_code|_run_module_as_main) |"
    r"\((asyncio/\w+|runpy|<frozen runpy>|click/core|selectors|threading|concurrent/futures/"
    r"thread|concurrent/futures/process|multiprocessing/(spawn|process)|contextlib)\.py\)$|"
    r"\(<frozen (runpy|importlib\._bootstrap(_external)?)>\)$"
)


@dataclass
class ProcessProfile:
    samples: int = 0
    idle: int = 0
    self_time: Counter[str] = field(default_factory=Counter)
    total_time: Counter[str] = field(default_factory=Counter)


def split_frames(stack: str) -> list[str]:
    """The frames of a stack: split at ``;``, except inside a process's quoted command line
    (``python -c "from multiprocessing.spawn import spawn_main; spawn_main(…)"``)."""
    frames: list[str] = []
    for piece in stack.split(";"):
        if frames and frames[-1].startswith("process ") and not frames[-1].endswith('"'):
            frames[-1] += ";" + piece
        else:
            frames.append(piece)
    return frames


def read_profile(path: Path) -> dict[str, ProcessProfile]:
    """py-spy ``--format raw`` (a stack of ``;``-separated frames, then a count, per line),
    grouped by the innermost process, which names the process that ran the stack."""
    procs: dict[str, ProcessProfile] = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = split_frames(stack)
        proc_frames = [i for i, f in enumerate(frames) if f.startswith("process ")]
        name = process_name(frames[proc_frames[-1]]) if proc_frames else "?"
        code = [function(f) for f in frames[(proc_frames[-1] + 1 if proc_frames else 0) :]]
        if not code:
            continue
        p = procs.setdefault(name, ProcessProfile())
        n = int(count)
        if IDLE.match(code[-1]):
            p.idle += n
            continue
        p.samples += n
        p.self_time[code[-1]] += n
        for f in dict.fromkeys(code):  # each function once per stack, in a stable order
            p.total_time[f] += n
    return procs


def ranked(counts: Counter[str]) -> list[tuple[str, int]]:
    """Most samples first, ties by name: the same file from the same profile, every time."""
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def profile_summary(path: Path, rate: int, top: int = 8, processes: int = 4) -> list[str]:
    procs = read_profile(path)
    busiest = sorted(procs.items(), key=lambda kv: (-kv[1].samples, kv[0]))[:processes]
    lines = []
    for name, p in busiest:
        if not p.samples:
            continue
        lines.append(
            f"- `{name}`: {p.samples:,} samples at work ≈ {p.samples / rate:,.0f} "
            "thread-seconds on a core or waiting for one (py-spy cannot tell them apart; "
            f"{p.idle:,} more samples of threads waiting in select, locks or queues)"
        )
        lines.append("")
        lines.append("  | self | function | | total | function |")
        lines.append("  |---:|---|---|---:|---|")
        selfs = ranked(p.self_time)[:top]
        # inclusive time, without the frames every stack has (module, asyncio's loop)
        totals = [(f, n) for f, n in ranked(p.total_time) if not PLUMBING.search(f)]
        totals = totals[:top]
        for i in range(max(len(selfs), len(totals))):
            s = selfs[i] if i < len(selfs) else ("", 0)
            t = totals[i] if i < len(totals) else ("", 0)
            lines.append(
                f"  | {s[1] / p.samples:.0%} | `{s[0]}` | | "
                f"{t[1] / p.samples:.0%} | `{t[0]}` |".replace("``", "")
            )
        lines.append("")
    return lines


# --- the file -------------------------------------------------------------------------------


def number(value: Any, unit: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    v = float(value)
    if unit == "s" and 0 < abs(v) < 1e-3:
        return f"{v * 1e6:.3g} µs"
    if unit == "s" and abs(v) < 1:
        return f"{v * 1e3:.3g} ms"
    if abs(v) >= 1000:
        text = f"{v:,.0f}"
    elif abs(v) >= 10 or v == int(v):
        text = f"{v:,.1f}".removesuffix(".0")
    else:
        text = f"{v:.3g}"
    return f"{text} {unit}".strip()


def verdict(target: Target, figure: dict[str, Any] | None) -> tuple[str, str]:
    """(measured, verdict) of one target."""
    if figure is None:
        return "–", "MISSING (no figure: the benchmark did not produce it)"
    value = figure["value"]
    if value is None or math.isnan(value):
        return "n/a", "MISSING (not measured)"
    ok = value >= target.limit if target.op == ">=" else value <= target.limit
    return number(value, figure["unit"]), "met" if ok else "MISSING"


def render(
    outcomes: list[Outcome],
    args: argparse.Namespace,
    info: dict[str, str],
    loads: dict[str, Any],
    when: tuple[dt.datetime, float],
) -> str:
    started, seconds = when
    figures = {k: f for o in outcomes for k, f in o.figures.items()}
    lines = [
        "# Benchmarks",
        "",
        "Generated by `bench/run_all" + (" --quick" if args.quick else "") + "` on "
        f"{started:%Y-%m-%d %H:%M} UTC in {seconds / 60:.0f} min; do not edit by hand "
        '(docs/testing.md, "Performance run"). Every figure was measured in this run, each '
        "next to the baseline its benchmark measured in the same run.",
        "",
    ]
    if args.quick:
        lines += [
            "**Quick mode**: every benchmark ran briefly with a small load to test the run "
            "itself. The figures say nothing about the targets; the verdicts below are those "
            "of the small loads.",
            "",
        ]
    lines += ["## Targets", "", "| target | figure | limit | measured | verdict |"]
    lines += ["|---|---|---|---|---|"]
    missing: dict[str, list[Target]] = {}
    for t in TARGETS:
        measured, word = verdict(t, figures.get(t.key))
        limit = f"{t.op.replace('>=', '≥').replace('<=', '≤')} {number(t.limit, t.unit)}"
        label = figures[t.key]["label"] if t.key in figures else t.key
        lines.append(f"| {t.text} | {label} (`{t.key}`) | {limit} | {measured} | "
                     f"**{word}** |")  # fmt: skip
        if word != "met":
            missing.setdefault(t.key.split(".")[0], []).append(t)
    lines.append("")
    read = [f"- `{t.key}`: {t.why}" for t in TARGETS if t.why]
    lines += ["How each target is read:", "", *read, ""]
    lines += render_machine(args, info, loads, when)
    if missing:
        lines += render_profiles(outcomes, missing, args.profile_rate)
    lines += ["## Benchmarks", ""]
    for o in outcomes:
        lines += render_bench(o, args.quick)
    return "\n".join(lines).rstrip() + "\n"


def render_machine(
    args: argparse.Namespace,
    info: dict[str, str],
    loads: dict[str, Any],
    when: tuple[dt.datetime, float],
) -> list[str]:
    started, seconds = when
    lines = ["## Machine", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in info.items()]
    fmt = ", ".join
    profiler = (
        f"py-spy at {args.profile_rate} Hz on every benchmark process, non-blocking"
        if args.profile_rate > 0
        else "none (--no-profile)"
    )
    return [
        *lines,
        f"| load average before | {fmt(f'{x:.2f}' for x in loads['before'])} (1, 5, 15 min) |",
        f"| load average during | min {loads['min']:.2f}, mean {loads['mean']:.2f}, max "
        f"{loads['max']:.2f} (1 min, every {loads['every']:g} s) |",
        f"| load average after | {fmt(f'{x:.2f}' for x in loads['after'])} |",
        f"| date | {started:%Y-%m-%d %H:%M:%S} UTC, {seconds:.0f} s in all |",
        f"| profiler | {profiler} |",
        "",
        "The machine may be shared: the load average says how busy it was. Figures measured "
        "under load are low; the ratios to baselines measured in the same run are the "
        "steadier part.",
        "",
    ]


def render_profiles(
    outcomes: list[Outcome], missing: dict[str, list[Target]], rate: int
) -> list[str]:
    by_bench = {o.bench.name: o for o in outcomes}
    lines = ["## Where the time goes, for the targets missed", ""]
    for name, targets in missing.items():
        o = by_bench.get(name)
        lines += [f"### {name}: {', '.join(f'`{t.key}`' for t in targets)}", ""]
        if o is None or o.profile is None:
            lines += ["No profile was captured for this benchmark.", ""]
            continue
        try:
            summary = profile_summary(o.profile, rate)
        except (OSError, ValueError, IndexError) as exc:
            lines += [f"The profile could not be read: {exc!r} ({o.profile}).", ""]
            continue
        lines += [
            "The busiest processes of this benchmark's run, sampled by py-spy: *self* is "
            "the share of the process's samples spent in the function itself, *total* "
            "with what it calls.",
            "",
            *summary,
        ]
    return lines


def render_bench(o: Outcome, quick: bool) -> list[str]:
    b = o.bench
    lines = [f"### {b.name} ({b.issue}): {b.what}", ""]
    argv = " ".join(b.quick if quick else b.full)
    status = "" if o.returncode == 0 else f" — **FAILED** with exit code {o.returncode}"
    lines += [f"`bench/{b.script}{' ' + argv if argv else ''}`, {o.seconds:.0f} s{status}.", ""]
    if o.doc is not None:
        before = f"{o.doc['load_before'][0]:.2f}"
        after = f"{o.doc['load_after'][0]:.2f}"
        lines += [f"Load average {before} before, {after} after.", ""]
        lines += ["| figure | value | baseline (same run) | ratio |", "|---|---|---|---|"]
        for f in o.doc["figures"]:
            base = ""
            if "baseline" in f:
                unit = "" if f["unit"] == "×" else f["unit"]
                base = f"{number(f['baseline'], unit)}: {f['baseline_label']}"
            ratio = number(f.get("ratio")) + "×" if f.get("ratio") is not None else ""
            lines.append(f"| {f['label']} (`{f['key']}`) | {number(f['value'], f['unit'])} "
                         f"| {base} | {ratio} |")  # fmt: skip
        lines.append("")
        if o.doc["notes"]:
            lines += [*(f"- {n}" for n in o.doc["notes"]), ""]
    else:
        lines += ["No figures: the benchmark failed. The end of its output:", ""]
    shown = [
        line.replace(f"{ROOT}/", "").replace(str(ROOT), ".")
        for line in o.output.rstrip().splitlines()
        if not line.startswith("py-spy> ")  # the profiler's own report on its file
    ]
    tail = "\n".join(shown[-60:])
    return [*lines, "<details><summary>its output</summary>", "", "```", tail, "```", "",
            "</details>", ""]  # fmt: skip


def load_outcome(bench: Bench, work: Path, returncode: int, seconds: float) -> Outcome:
    """An outcome from its files in ``work`` (what ``--render`` reads back)."""
    out_json, profile = work / f"{bench.name}.json", work / f"{bench.name}.profile.txt"
    output = work / f"{bench.name}.out"
    doc = json.loads(out_json.read_text(encoding="utf-8")) if out_json.exists() else None
    outcome = Outcome(
        bench, returncode, seconds,
        output.read_text(encoding="utf-8") if output.exists() else "",
        doc, profile if profile.exists() else None,
    )  # fmt: skip
    if doc is not None:
        outcome.figures = {f["key"]: f for f in doc["figures"]}
    return outcome


def rerender(args: argparse.Namespace) -> None:
    """Write the file again from a run's work directory, measuring nothing."""
    work = Path(args.render)
    run = json.loads((work / "run.json").read_text(encoding="utf-8"))
    args.quick, args.profile_rate = run["quick"], run["profile_rate"]
    names = {b.name: b for b in BENCHES}
    outcomes = [load_outcome(names[n], work, rc, sec) for n, rc, sec in run["benches"]]
    started = dt.datetime.fromisoformat(run["started"])
    text = render(outcomes, args, run["machine"], run["loads"], (started, run["seconds"]))
    Path(args.output).write_text(text, encoding="utf-8")
    print(f"[run_all] wrote {args.output} from {work}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="brief runs: tests the machinery")
    parser.add_argument("--output", default=str(ROOT / "BENCHMARKS.md"))
    parser.add_argument("--dsn", help="an admin DSN of a PostgreSQL to use instead of a "
                        "throwaway cluster")  # fmt: skip
    parser.add_argument("--only", nargs="+", choices=[b.name for b in BENCHES],
                        help="run only these benchmarks")  # fmt: skip
    parser.add_argument("--profile-rate", type=int, default=25, help="py-spy samples/s")
    parser.add_argument("--no-profile", dest="profile_rate", action="store_const", const=0)
    parser.add_argument("--work", help="keep each benchmark's JSON, output and profile here "
                        "(default: var/bench/<date>)")  # fmt: skip
    parser.add_argument("--render", metavar="WORK", help="only write the file again from the "
                        "work directory of an earlier run")  # fmt: skip
    args = parser.parse_args()
    if args.render:
        rerender(args)
        return
    started = dt.datetime.now(dt.UTC)
    work = Path(args.work or ROOT / "var" / "bench" / f"{started:%Y%m%d-%H%M%S}")
    work.mkdir(parents=True, exist_ok=True)
    benches = [b for b in BENCHES if not args.only or b.name in args.only]
    load_before = os.getloadavg()
    clock = time.perf_counter()
    info = machine()
    with postgres(args) as (dsn, pg), LoadSampler() as sampler:
        info["PostgreSQL"] = pg
        outcomes = [run_bench(b, args, dsn, work) for b in benches]
    during = sampler.values or [os.getloadavg()[0]]
    loads = {
        "before": load_before, "after": os.getloadavg(), "every": sampler.every,
        "min": min(during), "max": max(during), "mean": sum(during) / len(during),
    }  # fmt: skip
    seconds = time.perf_counter() - clock
    run = {
        "started": started.isoformat(), "seconds": seconds, "quick": args.quick,
        "profile_rate": args.profile_rate, "machine": info, "loads": loads,
        "benches": [(o.bench.name, o.returncode, o.seconds) for o in outcomes],
    }  # fmt: skip
    (work / "run.json").write_text(json.dumps(run, indent=1), encoding="utf-8")
    text = render(outcomes, args, info, loads, (started, seconds))
    Path(args.output).write_text(text, encoding="utf-8")
    failed = [o.bench.name for o in outcomes if o.returncode != 0 or o.doc is None]
    print(f"[run_all] wrote {args.output} in {time.perf_counter() - clock:.0f} s; "
          f"work files in {work}" + (f"; FAILED: {', '.join(failed)}" if failed else ""),
          file=sys.stderr)  # fmt: skip
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
