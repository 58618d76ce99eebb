#!/usr/bin/env python3
"""Type-check the firmware against the MicroPython stubs of each real board.

    .venv/bin/python tools/typecheck_board.py [rp2|esp32 ...]

Installs micropython-rp2-rpi-pico-stubs and micropython-esp32-esp32-generic-stubs, each into
its own folder under .venv/stubs/ (pip install --target, only when missing), then runs mypy
with that folder as both the typeshed (its stdlib/ is MicroPython's) and the search path:

  rp2:   board/hw/rp2.py   + hw/common.py + hw/pio_step.py + boot modules + board/pumpcore
  esp32: board/hw/esp32.py + hw/common.py + boot modules + board/pumpcore

Exit status 0 when every target is clean.
"""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BOARD = ROOT / "board"
STUBS = ROOT / ".venv" / "stubs"

TARGETS = {
    "rp2": ("micropython-rp2-rpi-pico-stubs",
            ["hw/rp2.py", "hw/common.py", "hw/pio_step.py", "bootcheck.py", "bootsafe.py"]),
    "esp32": ("micropython-esp32-esp32-generic-stubs",
              ["hw/esp32.py", "hw/common.py", "bootcheck.py", "bootsafe.py"]),
}


def ensure_stubs(name, package):
    target = STUBS / name
    if (target / "machine.pyi").exists():
        return target
    target.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--target", str(target), package],
        check=True,
    )
    return target


def const_override(name, stubs):
    """micropython.pyi with ``const`` typed as the CPython fallback every module defines.

    Board modules do ``try: from micropython import const`` / ``except ImportError: def
    const(x): return x`` so they import on CPython. The stub's generic ``const(expr: T, /) -> T``
    makes mypy reject that fallback as a differing conditional definition; giving the stub the
    fallback's own signature ``const(x: Any) -> Any`` keeps the pattern checkable without an
    ignore in every file. Everything else in the stub is unchanged.
    """
    out = STUBS / (name + "-override")
    out.mkdir(parents=True, exist_ok=True)
    text = (stubs / "micropython.pyi").read_text()
    old = "def const(expr: Const_T, /) -> Const_T:"
    if old not in text:
        raise SystemExit("typecheck_board: micropython.pyi const signature changed: " + old)
    (out / "micropython.pyi").write_text(text.replace(old, "def const(x: Any) -> Any:"))
    return out


def check(name):
    package, files = TARGETS[name]
    stubs = ensure_stubs(name, package)
    override = const_override(name, stubs)
    env = dict(os.environ, MYPYPATH=os.pathsep.join([str(override), str(stubs)]))
    cmd = [
        sys.executable, "-m", "mypy",
        "--custom-typeshed-dir", str(stubs),
        "--cache-dir", str(ROOT / ".mypy_cache" / name),
        "--config-file", str(ROOT / "tools" / "mypy_board.ini"),
        *files, "pumpcore",
    ]
    print("typecheck_board: %s" % name, flush=True)
    return subprocess.run(cmd, cwd=BOARD, env=env).returncode


def main(argv):
    names = argv or list(TARGETS)
    bad = [n for n in names if n not in TARGETS]
    if bad:
        print("typecheck_board: unknown target %s (rp2, esp32)" % ", ".join(bad), file=sys.stderr)
        return 2
    status = 0
    for n in names:
        status |= check(n)
    return 1 if status else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
