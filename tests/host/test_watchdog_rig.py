"""The watchdog on the virtual rig: a firmware that hangs is reset, and resumes safely.

The hang comes from outside, with no hook in the firmware: the interpreter process is frozen
with SIGSTOP (a CPU that stops executing), then a request arrives on the serial line, so the
world wakes the firmware from its wait and expects it back within the watchdog time (8 s of
wall clock, boards/sim.json). It never comes back: the world's watchdog resets the board. The
new boot must resume the plan (same CRC, therapy running, RESET alarm), keep its account within
one segment of the pulses, and go on delivering at the plan's rate.
"""

import os
import signal
import sys
import time

import pytest

pytest.importorskip("serial")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HAVE_MPY = os.path.exists(os.path.join(os.path.dirname(sys.executable), "micropython"))
pytestmark = pytest.mark.skipif(not HAVE_MPY, reason="MicroPython unix port not installed")
sys.path.insert(0, os.path.join(ROOT, "bench"))
import campaign  # noqa: E402
from pumpcore import proto  # noqa: E402
from pumprig.virtual.link import connect as _vconnect  # noqa: E402
from pumprig.virtual.rig import open_rig  # noqa: E402

DAY = 86_400_000
P1 = {"drug": "baclofen", "conc_ng_ml": 2_000_000,
      "basal": {"kind": "continuous", "ng_day": 400_000}}  # 0.2 mL/day = 800 steps/day


def test_a_hung_firmware_is_reset_by_the_watchdog_and_resumes(tmp_path, monkeypatch):
    home = str(tmp_path / "home")
    monkeypatch.setenv("PUMPRIG_HOME", home)
    with open_rig(warp=True) as rig:
        w = rig.world
        c = _vconnect(rig.link, home=home)
        c.refill(20_000_000)
        c.plan_set(P1)
        crc = c.status()["plan_crc"]
        w.advance(by_ms=DAY // 2)
        assert w.wdt_resets == 0
        st = w.status()
        assert st["wdt_timeout_ms"] == 8000 and st["waiting"]
        pid = st["pid"]
        os.kill(pid, signal.SIGSTOP)
        try:
            c._write(proto.encode_request("hang-1", "status", {}))
            end = time.monotonic() + 30
            while w.wdt_resets == 0:
                assert time.monotonic() < end, "the watchdog never reset the hung firmware"
                time.sleep(0.05)
        finally:
            try:
                os.kill(pid, signal.SIGCONT)  # only if the reset did not already end it
            except ProcessLookupError:
                pass
        c.close()
        assert w.status()["pid"] != pid
        c = _vconnect(rig.link, home=home)
        st = c.status()
        pulsed = w.measure()["pulses_fwd"]
        assert st["therapy"] == "running" and st["plan_crc"] == crc
        assert "RESET" in st["alarms"]
        assert 0 <= st["delivered_steps"] - pulsed <= campaign.SEG_STEPS
        # it goes on at the plan's pace: 800 steps a day, within the segment it prepaid
        m = w.advance(by_ms=DAY)
        st = c.status()
        assert 0 <= st["delivered_steps"] - m["pulses_fwd"] <= campaign.SEG_STEPS
        assert 800 - campaign.SEG_STEPS - 1 <= m["pulses_fwd"] - pulsed <= 801
        assert w.wdt_resets == 1
        c.close()
