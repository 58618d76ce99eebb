"""What the boot check costs: board/bootcheck.py's check() on the firmware as flashed.

    .venv/bin/python bench/bench_bootcheck.py [--runs 21] [--no-write]

The firmware is installed as a flash leaves it (.mpy modules, the manifest) into a temporary
board filesystem, and the MicroPython unix port (the virtual rig's interpreter, 128 KB heap)
times check() (SHA-256 of every listed file, as shipped) and the same loop with CRC32
(binascii.crc32) instead, the alternative the manifest could have used. Medians of `runs`.
The figures go to docs/benchmarks.md (section `bootcheck`).
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MPY = os.path.join(os.path.dirname(sys.executable), "micropython")

SCRIPT = r"""
import os, sys, time, gc
os.chdir(%(fs)r)
sys.path[:] = ['']
from binascii import crc32

def crc_check():
    import json
    with open('.pumprig-manifest.json') as f:
        d = json.load(f)['files']
    buf = bytearray(256)
    mv = memoryview(buf)
    for p in d:
        c = 0
        with open(p, 'rb') as f:
            while True:
                n = f.readinto(buf)
                if not n:
                    break
                c = crc32(mv[:n], c)

def med(fn, runs):
    ts = []
    for _ in range(runs):
        gc.collect()
        t = time.ticks_us()
        r = fn()
        ts.append(time.ticks_diff(time.ticks_us(), t))
    ts.sort()
    return ts[len(ts) // 2], r

import bootcheck
sha, bad = med(bootcheck.check, %(runs)d)
crc, _ = med(crc_check, %(runs)d)
print('RESULT', sha, crc, len(bad))
"""


def measure(runs=21):
    sys.path.insert(0, HERE)
    from campaign import install

    tmp = tempfile.mkdtemp(prefix="pumprig-bootcheck-")
    try:
        fs = os.path.join(tmp, "fs")
        os.makedirs(fs)
        install(fs)
        total = 0
        n = 0
        import json
        with open(os.path.join(fs, ".pumprig-manifest.json")) as f:
            for size, _ in json.load(f)["files"].values():
                total += size
                n += 1
        script = os.path.join(tmp, "b.py")
        with open(script, "w") as f:
            f.write(SCRIPT % {"fs": fs, "runs": runs})
        out = subprocess.run([MPY, "-X", "heapsize=128k", script], capture_output=True,
                             text=True, timeout=600).stdout
        line = [x for x in out.splitlines() if x.startswith("RESULT")]
        if not line:
            raise RuntimeError("bootcheck bench failed: %s" % out[-2000:])
        sha_us, crc_us, bad = (int(x) for x in line[0].split()[1:])
        if bad:
            raise RuntimeError("the check failed on a fresh install")
        return {"files": n, "bytes": total, "sha256_us": sha_us, "crc32_us": crc_us}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=21)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    r = measure(args.runs)
    body = (
        "board/bootcheck.py's check() over the firmware as flashed (%d files, %d bytes: .mpy "
        "modules, main.py, bootcheck.py, bootsafe.py, the board json), MicroPython unix port "
        "with a 128 KB heap, median of %d runs:\n\n"
        "| hash | check at boot |\n|---|---|\n"
        "| SHA-256 (shipped) | %.1f ms |\n| CRC32 (alternative) | %.1f ms |\n\n"
        "SHA-256 is kept: on the virtual rig it is not slower than CRC32 (the unix port's "
        "crc32 is the slower of the two here), the whole check costs a few ms, and it is the "
        "hash `pumprig flash` already computes to copy only what changed. On a Pico or an "
        "ESP32 the time is not measured here (a board flashes only its own hw module, fewer "
        "bytes than the rig's set above). "
        "It is an integrity check against torn or altered files, not an authenticity check: "
        "whoever can write the filesystem can write the manifest too (docs/architecture.md).\n"
        % (r["files"], r["bytes"], args.runs, r["sha256_us"] / 1000, r["crc32_us"] / 1000))
    print(body)
    if not args.no_write:
        from _report import write_section

        write_section("bootcheck", "Boot check (integrity of the flashed files)",
                      "python bench/bench_bootcheck.py", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
