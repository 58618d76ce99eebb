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
# near the heap the memory test guards (tests/host/test_memory_rig.py, HEAP_K = 128): a boot
# that fails with every resident module loaded still compiles bootsafe.py in it (measured: 120
# KB passes). The flash repair's `ack FAULT` (a string argument: the decoder, pumpcore.parse,
# is loaded) after a reset with a crash record ran out of memory at 128 KB and passed 3 of 3
# at 130 KB (2026-12-05): one 2 KB step of margin above that
GUARD_HEAP = "132k"
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


def test_a_boot_that_keeps_failing_reaches_the_boot_loop_safe_state(home):
    """Finding 1: an App that cannot be built at power-on (here the board config lost an entry
    the app needs: a fault from the filesystem, no hook in the firmware) is counted like a
    crash of the loop and reset; the third within minutes stays in the boot-loop safe state
    (motor off, alarm tones, no reset loop, hello/status answered, no REPL until Ctrl-C, which
    it then allows with the watchdog fed from a timer)."""
    import json

    with VirtualRig(blank=True, warp=True, heap=GUARD_HEAP) as rig:
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
        info = _safe_hello(rig)
        assert info["alarms"] == ["FAULT"] and info["safe_reason"].startswith("boot loop")
        assert info["fault"]["type"] == "KeyError" and "app" in info["fault"]["where"], info
        assert info["motor"] is True
        st = w.status()
        assert st["boots"] == boots + 3
        assert st["resets"].get("machine", 0) == 2 and w.wdt_resets == 0
        assert not w.measure()["enabled"]
        import serial

        with serial.Serial(rig.link, timeout=5) as s:
            s.write(b"\r\x03")
            assert b">>> " in s.read_until(b">>> ")
        _until(lambda: w.status()["state"] == "repl", "Ctrl-C did not open the REPL")
        # at the REPL a timer feeds the armed watchdog: a minute passes without a reset
        w.advance(by_ms=60_000)
        st = w.status()
        assert st["state"] == "repl" and st["boots"] == boots + 3 and w.wdt_resets == 0

def _safe_hello(rig, timeout_s=30.0):
    """The hello of a rig once it answers one with firmware "safe" (bounded wait)."""
    from pumprig.client import Client
    from pumprig.errors import PumprigError

    end = time.monotonic() + timeout_s
    info = None
    while time.monotonic() < end:
        try:
            with Client(rig.link, role=None, timeout=1.0) as c:
                info = c.info
                if info.get("firmware") == "safe":
                    return info
        except PumprigError:
            pass
        time.sleep(0.2)
    raise AssertionError("no safe state answered: %r" % (info,))


def _break_make_board(rig):
    """The board json flashed without the driver UART's tx pin: hw/start.make_board raises a
    KeyError in hw/setup.py, after it armed the watchdog. Returns the json's original text."""
    import json

    from pumprig.flash import write_manifest

    path = os.path.join(rig.fs, "boards", "sim.json")
    with open(path) as f:
        text = f.read()
    cfg = json.loads(text)
    del cfg["driver_uart"]["tx"]
    with open(path, "w") as f:
        json.dump(cfg, f)
    write_manifest(rig.fs)  # flashed as such: the boot check passes, make_board fails
    return text


def _resume_after_guard(c, crc):
    """The app booted into the guard's own safe state: a clinician leaves it, the plan runs."""
    s = c.status()
    assert s["firmware"] != "safe" and s["therapy"] == "safe", s
    assert s["safe_reason"].startswith("boot loop") and "FAULT" in s["alarms"]
    c.ack("FAULT")
    c.therapy_resume()
    s = c.status()
    assert s["therapy"] == "running" and s["plan_crc"] == crc


def test_a_failure_while_making_the_board_is_counted_logged_reset_then_held(home, capsys):
    """Finding 1 before the app exists: a fault inside hw/start.make_board was left to the
    watchdog: a boot loop with no event and no alarm. Now each such boot disables the motor,
    counts the crash, logs a `fault` event with the type and place and resets cleanly; the third
    within minutes holds the boot-loop safe state: motor off, FAULT sounding, the watchdog fed,
    hello/status/log answered without a login, everything else refused with SAFE_STATE. In the
    heap the memory test guards. Clearing the cause repairs it: the app boots into the guard's
    own safe state, which a clinician leaves, and the plan resumes."""
    from pumprig.client import Client
    from pumprig.flash import write_manifest

    with VirtualRig(blank=True, warp=True, heap=GUARD_HEAP) as rig:
        w = rig.world
        c = _running_rig(rig, home)
        crc = c.status()["plan_crc"]
        c.close()
        text = _break_make_board(rig)
        st0 = w.status()
        w.reset()
        info = _safe_hello(rig)
        st = w.status()
        assert st["boots"] == st0["boots"] + 3, st
        assert st["resets"].get("machine", 0) == st0["resets"].get("machine", 0) + 2
        assert w.wdt_resets == 0 and st["wdt_timeout_ms"] == 8000  # armed before the fault
        assert info["therapy"] == "safe" and info["alarms"] == ["FAULT"]
        assert info["safe_reason"].startswith("boot loop"), info
        assert info["fault"]["type"] == "KeyError" and "setup" in info["fault"]["where"], info
        assert not w.measure()["enabled"] and not w.measure()["motor_busy"]
        with Client(rig.link, role=None, timeout=2.0) as c:
            s = c.status()
            assert s["therapy"] == "safe" and s["alarms"] == ["FAULT"]
            faults = [e for e in c.log_all() if e["kind"] == "fault"]
            assert [e["data"]["crashes"] for e in faults] == [1, 2, 3], faults
            assert all(e["data"]["type"] == "KeyError" for e in faults)
            for cmd in ("therapy.stop", "plan.get", "auth"):
                with pytest.raises(DeviceError) as e:
                    c.request(cmd)
                assert e.value.code == proto.SAFE_STATE and "flash" in str(e.value), cmd
            with pytest.raises(DeviceError) as e:
                c.request("log", {"since": -1})
            assert e.value.code == proto.BAD_ARGS
        with pytest.raises(DeviceError) as e:
            Client(rig.link, role="clinician", timeout=2.0).open()
        assert e.value.code == proto.SAFE_STATE
        # the CLI shows it without a login
        from pumprig import cli

        assert cli.main(["--port", rig.link, "--role", "none", "status"]) == 0
        out = capsys.readouterr().out
        row = [ln for ln in out.splitlines() if ln.startswith("boot failure ")]
        assert row and "KeyError at hw/setup.py:" in row[0] and "boot loop" in row[0], out
        # for 9 s (the watchdog's 8 s): no reset, the motor off, the buzzer sounds FAULT's
        # two tones (2 s every 10 s)
        tones = set()
        end = time.monotonic() + 9
        while time.monotonic() < end:
            m = w.measure()
            tones.add(m["buzzer_hz"])
            assert not m["enabled"]
            time.sleep(0.05)
        assert {880, 660} <= tones, tones
        st = w.status()
        assert st["boots"] == st0["boots"] + 3 and w.wdt_resets == 0

        with open(os.path.join(rig.fs, "boards", "sim.json"), "w") as f:
            f.write(text)  # the cause cleared
        write_manifest(rig.fs)
        w.reset()
        c = _vconnect(rig.link, home=home)
        _resume_after_guard(c, crc)
        c.close()


def test_pumprig_flash_repairs_a_board_held_by_a_failing_make_board(home):
    """The boot-loop safe state before the app: `pumprig flash` enters the REPL from it (Ctrl-C)
    and rewrites the broken board json; the app then boots into the guard's safe state, which
    a clinician leaves. In the memory target's heap: the flash probe answered in one string
    of about 7 KB did not fit there; it answers a line at a time now."""
    from pumprig.flash import flash

    with VirtualRig(blank=True, warp=True, heap=GUARD_HEAP) as rig:
        c = _running_rig(rig, home)
        crc = c.status()["plan_crc"]
        c.close()
        _break_make_board(rig)
        rig.world.reset()
        assert _safe_hello(rig)["alarms"] == ["FAULT"]
        rep = flash(rig.link)
        assert "boards/sim.json" in rep["copied"]
        c = _vconnect(rig.link, home=home)
        _resume_after_guard(c, crc)
        c.close()
