"""Benchmark: 90 days of the richest example plan (P9: flex, periodic and patient boluses) on
a virtual rig, and where the time goes.

    .venv/bin/python bench/bench_simulate.py [--runs 5]

Prints the median wall time and the ratio of simulated to wall time, then a breakdown of one
run: time spent advancing the world (the firmware computing + the world's round trips), the
protocol requests of the host, and the host's own checking; and the firmware's share measured
by running its loop on the unix port without the rig. Writes the figures to docs/benchmarks.md.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from _report import write_section  # noqa: E402
from pumprig import simulate as S  # noqa: E402
from pumprig.client import Client  # noqa: E402
from pumprig.plans import load_plan_file  # noqa: E402
from pumprig.virtual.control import WorldClient  # noqa: E402

PLAN = ROOT / "examples" / "p9-morphine-rich.toml"
DAYS = 90
START = 1798761600  # 2027-01-01T00:00Z

FIRMWARE_ONLY = r"""
import sys, time
sys.path[:0] = ['board', 'tests/board']
from fakeboard import FakeBoard
from pumpcore.app import App
from _util import tmpdir
import json
plan = json.loads(open(sys.argv[-1]).read())
b = FakeBoard(root=tmpdir() + '/')
app = App(b, keys={})
app.call('clock.set', {'epoch_s': 1798761600, 'offset_s': 0}, 'clinician', 'a', 0)
app.call('refill', {'volume_nl': 20000000}, 'clinician', 'b', 0)
app.call('plan.set', {'plan': plan}, 'clinician', 'c', 0)
t0 = time.ticks_us(); n = 0
while app.deadline_ms < 90 * 86400000:
    b.t_ms = app.deadline_ms
    app.step(b.t_ms); n += 1
dt = time.ticks_diff(time.ticks_us(), t0)
print(n, dt)
"""


class Timed:
    """Wraps a method to add up the wall time spent in it."""

    def __init__(self):
        self.t = {}

    def wrap(self, obj, name, label):
        fn = getattr(obj, name)

        def timed(*a, **kw):
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                self.t[label] = self.t.get(label, 0.0) + time.perf_counter() - t

        setattr(obj, name, timed)


def one_run(plan, meta, breakdown=False):
    timer = Timed()
    if breakdown:
        timer.wrap(WorldClient, "advance", "world advance (firmware + world)")
        timer.wrap(Client, "request", "protocol requests (status, log, boluses)")
        timer.wrap(S.StepError, "run_until", "host: step-error check against the ideal")
    try:
        r = S.simulate(plan, DAYS, meta.get("fill_nl", 20_000_000), START,
                       scenario=meta.get("scenario"))
    finally:
        if breakdown:
            import importlib

            import pumprig.client
            import pumprig.virtual.control
            importlib.reload(pumprig.virtual.control)
            importlib.reload(pumprig.client)
    return r, timer.t


def firmware_only(plan):
    import json

    mpy = ROOT / ".venv" / "bin" / "micropython"
    with tempfile.TemporaryDirectory() as d:
        script, pj = Path(d) / "fw.py", Path(d) / "plan.json"
        script.write_text(FIRMWARE_ONLY)
        pj.write_text(json.dumps(plan))
        out = subprocess.run([str(mpy), "-X", "heapsize=384k", str(script), str(pj)],
                             cwd=ROOT, capture_output=True, text=True, timeout=300)
    n, us = (int(x) for x in out.stdout.split())
    return n, us / 1e6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    os.environ.setdefault("PUMPRIG_HOME", tempfile.mkdtemp(prefix="pumprig-bench-"))
    plan, meta = load_plan_file(PLAN)
    walls = []
    last = None
    for i in range(args.runs):
        t = time.perf_counter()
        last, _ = one_run(plan, meta)
        walls.append(time.perf_counter() - t)
        print(f"run {i + 1}: {walls[-1]:.2f} s (max_step_error {last['max_step_error']})")
    med = statistics.median(walls)
    ratio = DAYS * 86_400 / med
    t = time.perf_counter()
    r, parts = one_run(plan, meta, breakdown=True)
    total = time.perf_counter() - t
    wakes, fw_s = firmware_only(plan)
    print(f"median {med:.2f} s for {DAYS} days: {ratio:,.0f} x real time")
    lines = [
        f"Plan `examples/{PLAN.name}` (flex 13 segments, periodic boluses, patient boluses with",
        f"lockout refusals), {DAYS} days, {args.runs} runs. Each run starts a blank virtual rig,",
        "installs the firmware, programs the plan over the protocol and checks every pulse",
        "against the ideal.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| median wall time, {DAYS} days | {med:.2f} s (runs: "
        + ", ".join(f"{w:.2f}" for w in walls) + ") |",
        f"| simulated time / wall time | {ratio:,.0f} |",
        f"| target | under 2 s ({DAYS * 86_400 / 2:,.0f} x real time) |",
        f"| max_step_error | {last['max_step_error']} step |",
        "",
        f"Where the time goes (one more run, {total:.2f} s, wrapped with timers):",
        "",
        "| part | s | share |",
        "|---|---|---|",
    ]
    accounted = 0.0
    for k, v in sorted(parts.items(), key=lambda kv: -kv[1]):
        lines.append(f"| {k} | {v:.2f} | {100 * v / total:.0f} % |")
        accounted += v
    lines.append(f"| rig start, firmware boot, plotting data, the rest | {total - accounted:.2f} "
                 f"| {100 * (total - accounted) / total:.0f} % |")
    lines += [
        "",
        f"The firmware alone (its loop on the unix port with a fake board, no rig, no I/O but "
        f"its records) wakes {wakes} times in {DAYS} days and needs {fw_s:.2f} s: "
        f"{1e6 * fw_s / wakes:.0f} µs a wake-up. The rest of the world-advance time is the "
        "round trips between the interpreter and the world process (a wait, the DIAG pin and "
        "the pressure ADC after a segment, the battery ADC every hour) and the world's own "
        "Python. What bounds the speed is the number of firmware wake-ups: one per motor "
        "segment (at most 10 µL), per rate change (flex segments, bolus starts and ends) and "
        "per hourly battery sample; nothing is per step and nothing waits on a wall clock.",
    ]
    body = "\n".join(lines)
    print(body)
    write_section("simulate", "Simulation speed: 90 days of therapy",
                  ".venv/bin/python bench/bench_simulate.py", body)


if __name__ == "__main__":
    main()
