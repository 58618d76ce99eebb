"""Issue 12 on the virtual rig (MicroPython unix port, the firmware as flashed): the loop cannot
die, Ctrl-C is data while therapy runs, `maintenance` opens the REPL, faults are handled.

Faults come from outside the firmware: the world answers the firmware's next waits with a
garbled time line (WorldClient.fault(garble_waits=n)), so reading the clock raises inside the
firmware's loop, as a failing peripheral would. Nothing in the firmware is there for the test.
"""

import os
import subprocess
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
from pumprig.errors import DeviceError  # noqa: E402
from pumprig.virtual.link import connect as _vconnect  # noqa: E402
from pumprig.virtual.rig import VirtualRig  # noqa: E402

DAY = 86_400_000
HOUR = 3_600_000
P1 = {"drug": "baclofen", "conc_ng_ml": 2_000_000,
      "basal": {"kind": "continuous", "ng_day": 400_000}}  # 800 steps a day


def _running_rig(rig, home):
    w = rig.world
    campaign.install(rig.fs)
    w.reset()
    c = _vconnect(rig.link, home=home)
    c.clock_set(1_767_225_600, 0)
    c.refill(20_000_000)
    c.plan_set(P1)
    w.advance(by_ms=HOUR)
    return c


def _raw(c, line, req_id, timeout_s=5.0):
    c._write(line)
    return c._wait_response(req_id, time.monotonic() + timeout_s)


def _until(cond, what, timeout_s=20.0):
    end = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < end, what
        time.sleep(0.02)


@pytest.fixture
def home(tmp_path, monkeypatch):
    d = str(tmp_path / "home")
    monkeypatch.setenv("PUMPRIG_HOME", d)
    return d


def test_oversized_hello_and_bad_integers_leave_the_rig_running(home):
    """Findings 1 and 8: a `hello` with a 990-character argument name (before: the firmware
    fell to the REPL) and out-of-range integers are refused with bounded BAD_ARGS answers;
    therapy runs on, no reset."""
    with VirtualRig(blank=True, warp=True) as rig:
        w = rig.world
        c = _running_rig(rig, home)
        before = c.status()
        boots = w.status()["boots"]
        # a hello is never signed; written by hand, as Client.frame("hello") would end the
        # client's session (the rig keeps it: a refused hello ends nothing)
        f = _raw(c, proto.encode_request("big-1", "hello", {"x" * 990: 1}), "big-1")
        assert f is not None and f.name == "err" and f.body["code"] == proto.BAD_ARGS
        assert len(f.body["message"]) <= proto.MAX_MESSAGE
        for rid, cmd, args in (("l-1", "log", {"since": -1}),
                               ("r-1", "refill", {"volume_nl": 1000, "refill_by_epoch_s": 10**17}),
                               ("0", "status", {})):
            rid, line = c.frame(cmd, args, rid)  # signed: the role's argument checks run
            f = _raw(c, line, rid)
            assert f is not None and f.body["code"] == proto.BAD_ARGS, (cmd, f)
        st = w.status()
        assert st["state"] == "running" and st["boots"] == boots
        after = c.status()
        assert after["therapy"] == "running" and after["plan_crc"] == before["plan_crc"]
        assert after["refill_by_epoch_s"] is None
        c.close()


def test_ctrl_c_is_data_while_therapy_runs_maintenance_opens_the_repl(home):
    """Finding 3: a bare Ctrl-C does not stop a running plan or open the REPL; the clinician's
    `maintenance` stops therapy (event, MAINTENANCE alarm) and then Ctrl-C opens the REPL,
    where stock mpremote works."""
    with VirtualRig(blank=True, warp=True) as rig:
        w = rig.world
        c = _running_rig(rig, home)
        boots = w.status()["boots"]
        c._write(b"\x03\x03\r\x03")
        st = c.status()
        assert st["therapy"] == "running" and w.status()["state"] == "running"
        m = w.advance(by_ms=DAY)
        st = c.status()
        assert st["therapy"] == "running" and w.status()["boots"] == boots
        assert 0 <= st["delivered_steps"] - m["pulses_fwd"] <= campaign.SEG_STEPS
        res = c.request("maintenance")
        assert res["therapy"] == "stopped"
        st = c.status()
        assert st["therapy"] == "stopped" and "MAINTENANCE" in st["alarms"]
        assert [e for e in c.log_all() if e["kind"] == "maintenance"]
        c._write(b"\r\x03")
        _until(lambda: w.status()["state"] == "repl", "Ctrl-C did not open the REPL")
        c.close()
        # left on purpose: a timer keeps the watchdog fed at the REPL (a minute of it here)
        boots = w.status()["boots"]
        w.advance(by_ms=60_000)
        assert w.status()["state"] == "repl" and w.status()["boots"] == boots
        out = subprocess.run([sys.executable, "-m", "mpremote", "connect", rig.link, "exec",
                              "print(6 * 7)"], capture_output=True, text=True, timeout=60)
        assert out.stdout.strip().splitlines()[-1] == "42", out


def test_flash_stops_a_running_firmware_with_maintenance(home):
    """Finding 3: `pumprig flash` on a firmware that runs therapy asks it for `maintenance`
    (with the clinician key) and then flashes through the REPL as before."""
    from pumprig.flash import flash

    with VirtualRig(blank=True, warp=True) as rig:
        c = _running_rig(rig, home)
        c.close()
        seen = []
        flash(rig.link, progress=seen.append)
        assert any("maintenance" in s for s in seen), seen
        c = _vconnect(rig.link, home=home)
        st = c.status()
        assert st["therapy"] == "stopped" and "MAINTENANCE" in st["alarms"]
        c.therapy_resume()
        assert c.status()["therapy"] == "running"
        c.close()


def test_a_fault_in_the_loop_resets_cleanly_and_resumes_then_the_guard_holds(home):
    """Finding 1, fault injection: an exception inside the loop gives the FAULT event and
    alarm, the motor stopped, a clean reset (not the watchdog, never the REPL), and therapy
    resumed from the account; three in a row reach the boot-loop guard: safe state (motor
    off, FAULT sounding, status and log answered, other commands refused) until a clinician
    leaves it."""
    with VirtualRig(blank=True, warp=True) as rig:
        w = rig.world
        c = _running_rig(rig, home)
        crc = c.status()["plan_crc"]
        w.advance(by_ms=DAY // 2)
        boots = w.status()["boots"]
        c.close()
        w.fault(garble_waits=1)
        m = w.advance(by_ms=HOUR)
        st = w.status()
        assert st["boots"] == boots + 1 and st["state"] == "running"
        assert st["resets"].get("machine", 0) == 1 and w.wdt_resets == 0
        c = _vconnect(rig.link, home=home)
        s = c.status()
        pulsed = m["pulses_fwd"]
        assert s["therapy"] == "running" and s["plan_crc"] == crc and "FAULT" in s["alarms"]
        # the motor was stopped with an exact account; the segment the boot started is ahead
        assert 0 <= s["delivered_steps"] - pulsed <= campaign.SEG_STEPS
        faults = [e for e in c.log_all() if e["kind"] == "fault"]
        assert len(faults) == 1 and faults[0]["data"]["type"] == "ValueError"
        assert faults[0]["data"]["where"], faults[0]
        m2 = w.advance(by_ms=DAY)
        assert 800 - campaign.SEG_STEPS - 1 <= m2["pulses_fwd"] - pulsed <= 801
        # three crashes within minutes: the guard
        c.close()
        w.fault(garble_waits=3)
        w.advance(by_ms=HOUR)
        c = _vconnect(rig.link, home=home)
        s = c.status()
        assert s["therapy"] == "safe" and s["safe_reason"].startswith("boot loop"), s
        assert "FAULT" in s["alarms"] and s["rate_nl_day"] == 0
        assert len([e for e in c.log_all() if e["kind"] == "fault"]) == 4
        p0 = w.measure()["pulses_fwd"]
        m3 = w.advance(by_ms=DAY)
        assert m3["pulses_fwd"] == p0 and not m3["enabled"]
        assert any(h[1] for h in w.history())  # the buzzer sounded
        assert w.status()["boots"] == boots + 4 and w.wdt_resets == 0
        with pytest.raises(DeviceError) as e:
            c.plan_set(P1)
        assert e.value.code == proto.SAFE_STATE
        c.ack("FAULT")
        assert c.status()["therapy"] == "stopped"
        c.therapy_resume()
        assert c.status()["therapy"] == "running"
        c.close()


def test_the_watchdog_is_armed_before_the_app_is_imported(home):
    """Finding 1 (and 5): an import of the app that never returns (here an app module that
    spins) is reset by the watchdog; before, the watchdog was armed after the imports and such
    a boot hung forever."""
    with VirtualRig(blank=True) as rig:
        w = rig.world
        campaign.install(rig.fs)
        os.remove(os.path.join(rig.fs, "pumpcore", "app.mpy"))
        with open(os.path.join(rig.fs, "pumpcore", "app.py"), "w") as f:
            f.write("while True:\n    pass\n")
        from pumprig.flash import write_manifest

        write_manifest(rig.fs)  # flashed as such: the boot check passes, the import spins
        w.reset()
        _until(lambda: w.status()["wdt_timeout_ms"] == 8000, "the watchdog was not armed")
        assert w.status()["state"] == "booting"
        _until(lambda: w.wdt_resets >= 1, "the hung import was never reset", timeout_s=40)


def test_ctrl_c_during_boot_does_not_open_the_repl(home):
    """Finding 3: Ctrl-C bytes sent while the board boots (an ESP32 resets when its port is
    opened) neither open the REPL nor keep therapy from resuming: Ctrl-C is data from the
    first line of main.py on."""
    import serial

    with VirtualRig(blank=True, warp=True) as rig:
        w = rig.world
        c = _running_rig(rig, home)
        crc = c.status()["plan_crc"]
        c.close()
        boots = w.status()["boots"]
        s = serial.Serial(rig.link, timeout=0.01)
        try:
            w.reset()
            end = time.monotonic() + 2.0
            while time.monotonic() < end:
                s.write(b"\x03" * 16)
                s.read(4096)
                time.sleep(0.002)
        finally:
            s.close()
        st = w.status()
        assert st["state"] == "running" and st["boots"] == boots + 1
        c = _vconnect(rig.link, home=home)
        s2 = c.status()
        assert s2["therapy"] == "running" and s2["plan_crc"] == crc
        c.close()


def test_a_boot_that_keeps_failing_reaches_a_minimal_safe_state(home):
    """Finding 1: an App that cannot be built at power-on (here the board config lost an entry
    the app needs: a fault from the filesystem, no hook in the firmware) is counted like a
    crash of the loop and reset; the third within minutes stays in a minimal safe state (motor
    off, alarm tones, no reset loop, no REPL until Ctrl-C, which it then allows)."""
    import json

    with VirtualRig(blank=True, warp=True) as rig:
        w = rig.world
        campaign.install(rig.fs)
        path = os.path.join(rig.fs, "boards", "sim.json")
        with open(path) as f:
            cfg = json.load(f)
        del cfg["reservoir_nl"]
        with open(path, "w") as f:
            json.dump(cfg, f)
        from pumprig.flash import write_manifest

        write_manifest(rig.fs)  # a bad config flashed as such: the boot check passes
        boots = w.status()["boots"]
        w.reset()
        _until(lambda: w.status()["boots"] >= boots + 3 and w.status()["waiting"],
               "the boot failures did not settle")
        w.advance(by_ms=60_000)
        st = w.status()
        assert st["boots"] == boots + 3 and st["state"] == "running"
        assert st["resets"].get("machine", 0) == 2 and w.wdt_resets == 0
        assert any(h[1] for h in w.history()) and not w.measure()["enabled"]
        import serial

        with serial.Serial(rig.link, timeout=5) as s:
            s.write(b"\r\x03")
            assert b">>> " in s.read_until(b">>> ")
