"""The HIL suite on virtual rigs: wall time with 1 rig and with 4 rigs (pytest-xdist, one rig
per worker), run side by side (interleaved) and repeated; medians go to docs/benchmarks.md.

    .venv/bin/python bench/bench_hil.py [--reps 3] [--rigs 1,4]
"""

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run_suite(rigs):
    argv = [str(BIN / "pytest"), "-q", "hil", "-n", str(rigs), "--rig", "sim",
            "-p", "no:cacheprovider"]
    t = time.monotonic()
    p = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    wall = time.monotonic() - t
    tail = (p.stdout.strip().splitlines() or ["?"])[-1]
    if p.returncode != 0:
        raise SystemExit("bench_hil: the suite failed with %d rig(s):\n%s" % (rigs, p.stdout[-3000:]))
    return wall, tail


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--rigs", default="1,4")
    a = ap.parse_args(argv)
    counts = [int(x) for x in a.rigs.split(",")]
    walls = {n: [] for n in counts}
    summary = {}
    for rep in range(a.reps):
        for n in counts:                      # interleaved: both see the same machine load
            w, tail = run_suite(n)
            walls[n].append(w)
            summary[n] = tail
            sys.stdout.write("rep %d, %d rig(s): %.2f s (%s)\n" % (rep + 1, n, w, tail))
    base = statistics.median(walls[counts[0]])
    lines = ["| virtual rigs | median wall time | runs | speed-up vs %d | result |" % counts[0],
             "|---|---|---|---|---|"]
    for n in counts:
        med = statistics.median(walls[n])
        lines.append("| %d | %.2f s | %s | %.2f x | %s |" % (
            n, med, ", ".join("%.2f" % w for w in walls[n]), base / med, summary[n]))
    body = "\n".join(lines) + (
        "\n\nThe whole HIL suite (`pytest hil --rig sim`), each worker with its own virtual rig "
        "in warp mode. The suite is CPU-bound (MicroPython interpreters and the launchers), so "
        "more rigs than cores do not run faster.")
    sys.stdout.write(body + "\n")
    cmd = ".venv/bin/python bench/bench_hil.py --reps %d --rigs %s" % (a.reps, a.rigs)
    path = write_section("hil", "HIL suite on 1 and 4 virtual rigs", cmd, body)
    sys.stdout.write("written to %s\n" % path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
