"""`make bench`: run every benchmark; each writes its own section of docs/benchmarks.md.

The long campaigns (200 power cuts, the brute force, power cuts during flash) are `make
campaign` (bench/campaign.py, bench/campaign_flash.py); the 100,000-frame protocol fuzz on the
virtual rig (bench/fuzz_rig.py, about 4 minutes) runs here.
"""

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ["bench_protocol.py", "bench_simulate.py", "bench_memory.py", "bench_hil.py",
           "bench_plan_check.py", "bench_bootcheck.py", "bench_watchdog.py", "fuzz_rig.py"]


def main():
    failed = []
    for name in SCRIPTS:
        path = HERE / name
        if not path.exists():
            print(f"== {name}: missing, skipped")
            continue
        print(f"== {name}", flush=True)
        t = time.monotonic()
        rc = subprocess.call([sys.executable, str(path)], cwd=HERE.parent)
        print(f"== {name}: exit {rc} after {time.monotonic() - t:.0f} s", flush=True)
        if rc:
            failed.append(name)
    if failed:
        print("failed: " + ", ".join(failed))
        return 1
    print("docs/benchmarks.md updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
