"""Memory target: the firmware as flashed (.mpy) runs the richest plan in a HEAP_K heap on the
64-bit virtual rig. Issue 7 set 128 KB (the scale of 64 KB on a 32-bit board) and it held at
126 KB; the dose-safety and robustness work of issues 11 and 12 (dose limiter, generation
records, signed sessions, loop guard, boot check) brought the smallest heap to 144 KB; the
seam of issue 16 (per-call code declared in pumpcore.loader, no trampolines, the command
dictionary per call, status and the log's pages in modules of their own, a login dropping the
decoder first) brought it to 134 KB, side by side with 3b6e8d5 (140 KB) in one run
(docs/benchmarks.md, memory-compare); the merges after it brought it back to 136-140 KB. The
heap work of 2026-12-05 (records and the count record written in pieces in a fragmented heap,
no copy of loader.RESIDENT at every drop, the decoder dropped before the command dictionary,
the log's pages without evlog, a collection every 4 KB allocated in a small heap) brought it
to 132 KB, side by side with main at 138 KB (the guard was 134 KB). At 128-130 KB the
restore crashed loading the schedule's code beside the restore's other per-call modules, and
after it paging the log found no room for the decoder. The restore now drops those modules
before the schedule's code loads, and integer arguments (`log`, `refill`) are decoded
resident (proto.decode_bare): 128 KB, the target (docs/architecture.md, Memory).

The check is the one bench/bench_memory.py bisects with: boot, clock, refill, plan.set, then
30 simulated days with a patient bolus asked for every 3 h through the protocol (about 240
requests, the event log compacted twice), the interpreter still answering at the end, no
MemoryError (no crash to the REPL, no INTERNAL "out of memory" answer). Then (issue 11,
finding 8) a power cut with the plan stored: the firmware restores it, takes a refill and
pages through its whole event log, still in HEAP_K.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

from bench_memory import restores_in, runs_in  # noqa: E402

# KB, as flashed (2026-12-05, branch heap2): at 128 KB the 30 days and restart passed 43 of 45
# runs with gc.threshold(4096), then 27 of 27 with gc.threshold(2048); p9's restore 9 of 9;
# 126 KB fails. No step of margin: near the boundary a fragmented heap's layout decides.
# Before (2197817): 132 KB. See docs/benchmarks.md, "memory-compare".
HEAP_K = 128


def test_flashed_firmware_runs_30_days_and_restarts_in_the_target_heap():
    """Finding 8: the restore after a power cut ran out of memory (a crash, the REPL, the
    watchdog, the same crash, forever) in the heap the plan ran in."""
    ok, why = runs_in(HEAP_K, True, 30, reboot=True)
    assert ok, why


def test_the_richest_plan_restores_in_the_target_heap():
    """Finding 8: examples/p9 (13 flex segments, periodic and patient boluses), programmed and
    run for two days, then a power cut: powered on with the target heap, the firmware restored
    it out of memory in schedule.load_dict (crash, REPL, watchdog, forever). It now restores
    it, runs, takes a refill and pages through its log. (p9's plan.set itself needs a larger
    heap, checked against the plan rules: it is programmed in 192 KB here.)"""
    from pumprig import plans

    p9 = plans.load_plan(ROOT / "examples" / "p9-morphine-rich.toml")
    ok, why = restores_in(HEAP_K, p9, days=2)
    assert ok, why


def test_the_check_fails_when_the_heap_is_too_small():
    ok, why = runs_in(64, True, 1)
    assert not ok and ("crashed" in why or "memory" in why or "did not boot" in why), why
