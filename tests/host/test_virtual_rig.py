"""The virtual rig: stock mpremote works on it, reset semantics are a board's, and the world
keeps exact time, pulses and resets. Each test writes a small stand-in main.py into the rig."""

import os
import subprocess
import sys
import time

import pytest

pytest.importorskip("serial")
from pumprig.virtual.rig import VirtualRig  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HAVE_MPY = os.path.exists(os.path.join(os.path.dirname(sys.executable), "micropython"))
pytestmark = pytest.mark.skipif(not HAVE_MPY, reason="MicroPython unix port not installed")


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("PUMPRIG_HOME", str(tmp_path / "home"))


def mpremote(link, *args, timeout=30):
    r = subprocess.run([sys.executable, "-m", "mpremote", "connect", link, *args],
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def write(rig, name, text):
    path = os.path.join(rig.fs, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def read(rig, name):
    try:
        with open(os.path.join(rig.fs, name)) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def until(pred, timeout_s=10.0):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(0.01)
    raise AssertionError("condition not reached")


def restart(rig):
    """Power-cycle the rig so that the main.py written into its fs runs at power-on."""
    rig.world.power_cut()
    rig.world.power_on()


COUNT_BOOTS = """
with open("boots.txt", "a") as f:
    f.write("boot\\n")
import time
while True:
    time.sleep_ms(5)
"""


def test_blank_rig_runs_micropython_and_provisions_keys(tmp_path):
    with VirtualRig(blank=True) as rig:
        out = mpremote(rig.link, "exec", "import sys; print(sys.implementation.name)")
        assert out.strip() == "micropython"
        import json
        keys = json.loads(read(rig, "data/keys.json"))
        assert len(bytes.fromhex(keys["patient"])) == 32
        with open(tmp_path / "home" / "keys.json") as f:
            store = json.load(f)
        uid = open(os.path.join(rig.state, "uid")).read().strip()
        assert store[uid] == keys
        assert (os.stat(tmp_path / "home" / "keys.json").st_mode & 0o777) == 0o600
        reg = json.loads((tmp_path / "home" / "rigs" / (rig.name + ".json")).read_text())
        assert reg["link"] == rig.link and reg["uid"] == uid
        out = mpremote(rig.link, "exec", "import machine; print(machine.unique_id().hex())")
        assert out.strip() == uid
    assert not (tmp_path / "home" / "rigs" / (rig.name + ".json")).exists()
    assert not os.path.lexists(rig.link)


def test_fs_cp_and_ls(tmp_path):
    src = tmp_path / "hello.py"
    src.write_text("GREETING = 'hi'\n")
    with VirtualRig(blank=True) as rig:
        out = mpremote(rig.link, "fs", "cp", str(src), ":hello.py", "+", "fs", "ls")
        assert "hello.py" in out and "data/" in out
        assert read(rig, "hello.py") == "GREETING = 'hi'\n"
        out = mpremote(rig.link, "exec", "import hello; print(hello.GREETING)")
        assert out.strip() == "hi"


def test_soft_reset_from_raw_repl_skips_main_and_reset_reruns_it():
    with VirtualRig(blank=True) as rig:
        write(rig, "main.py", COUNT_BOOTS)
        restart(rig)
        until(lambda: read(rig, "boots.txt").count("boot") == 1)
        # exec soft-resets in the raw REPL: the board comes back in the raw REPL, no main.py
        assert mpremote(rig.link, "exec", "print(6*7)").strip() == "42"
        mpremote(rig.link, "soft-reset")
        assert rig.world.status()["resets"].get("soft", 0) >= 2
        assert read(rig, "boots.txt").count("boot") == 1
        # machine.reset() restarts the interpreter and runs main.py again
        mpremote(rig.link, "reset")
        until(lambda: read(rig, "boots.txt").count("boot") == 2)
        assert rig.world.status()["resets"]["machine"] == 1
        assert mpremote(rig.link, "resume", "exec", "print('up')").strip() == "up"


def test_ctrl_c_interrupts_main_into_the_repl():
    import serial
    with VirtualRig(blank=True) as rig:
        write(rig, "main.py", COUNT_BOOTS)
        restart(rig)
        until(lambda: read(rig, "boots.txt"))
        with serial.Serial(rig.link, timeout=5) as s:
            s.write(b"\x03")
            out = s.read_until(b">>> ")
            assert b"KeyboardInterrupt" in out
            s.write(b"print(6*7)\r")
            assert b"42" in s.read_until(b">>> ")
            # Ctrl-D at the friendly REPL: soft reboot, main.py runs again
            s.write(b"\x04")
            assert b"MPY: soft reboot" in s.read_until(b"soft reboot\r\n")
        until(lambda: read(rig, "boots.txt").count("boot") == 2)


WARP_MAIN = """
import _world
t = 0
while True:
    t = _world.wait(t + 1000)
    with open("ticks.txt", "a") as f:
        f.write("%d\\n" % t)
"""


def test_warp_advance_grants_each_deadline_exactly():
    with VirtualRig(blank=True, warp=True) as rig:
        write(rig, "main.py", WARP_MAIN)
        restart(rig)
        m = rig.world.advance(to_ms=5500, timeout_s=20)
        assert m["time_ms"] == 5500
        ticks = [int(x) for x in read(rig, "ticks.txt").split()]
        assert ticks == [1000, 2000, 3000, 4000, 5000]
        st = rig.world.status()
        assert st["waiting"] and st["deadline_ms"] == 6000 and st["time_ms"] == 5500
        m = rig.world.advance(by_ms=500)
        assert m["time_ms"] == 6000
        assert [int(x) for x in read(rig, "ticks.txt").split()][-1] == 6000


SERIAL_MAIN = """
import json
from hw.sim import make_board
with open("boards/sim.json") as f:
    b = make_board(json.load(f))
while True:
    d = b.read_serial()
    if d:
        b.write_serial(b"got %d at %d bat %d\\n" % (len(d), b.now_ms(), b.battery_mv()))
    b.wait(b.now_ms() + 60000)
"""


def test_serial_input_wakes_the_firmware_without_moving_time():
    import serial
    with VirtualRig(blank=True, warp=True) as rig:
        for name in ("hw/sim.py", "hw/common.py", "hw/setup.py", "hw/tmc2209.py",
                     "pumpcore/__init__.py",  # const, which the hw modules import
                     "boards/sim.json"):
            with open(os.path.join(ROOT, "board", name)) as f:
                write(rig, name, f.read())
        write(rig, "main.py", SERIAL_MAIN)
        with serial.Serial(rig.link, timeout=5) as s:
            restart(rig)
            until(lambda: rig.world.status()["waiting"])
            s.write(b"hello\n")
            assert s.readline() == b"got 6 at 0 bat 3650\n"
            rig.world.fault(battery_mv=3124)
            m = rig.world.advance(by_ms=10000)
            assert m["time_ms"] == 10000
            # the board's wait keeps the watchdog fed while it sleeps: no reset at 8 s
            assert rig.world.status()["deadline_ms"] == 60000
            s.write(b"abc\n")
            assert s.readline() == b"got 4 at 10000 bat 3124\n"
        assert rig.world.status()["resets"] == {"power": 1}   # only the restart above


MOTOR_MAIN = """
import _world
_world.pin_write(4, 0)          # enable the driver (EN low)
_world.wait(1000)
_world.motor(10, 500, 2000, True)
_world.wait(100000)
"""


def test_segment_pulses_are_counted_exactly_and_survive_a_power_cut():
    with VirtualRig(blank=True, warp=True) as rig:
        write(rig, "main.py", MOTOR_MAIN)
        restart(rig)
        m = rig.world.advance(to_ms=1000)
        assert m["pulses_fwd"] == 0 and m["motor_busy"]
        seg = rig.world.segments()[-1]
        assert (seg["start_us"], seg["count"], seg["first_us"], seg["interval_us"]) == \
            (1000000, 10, 500, 2000)
        # pulses at 1000500 + i*2000 us: by 1005 ms, i = 0, 1, 2
        m = rig.world.advance(to_ms=1005)
        assert m["pulses_fwd"] == 3 and m["steps_net"] == 3
        assert m["volume_out_nl"] == 3 * 250000 // 1000
        rig.world.fault(true_step_pl=242500)     # a 3 % slow pump from here on
        m = rig.world.advance(to_ms=1007)
        assert m["pulses_fwd"] == 4 and m["volume_out_nl"] == 750 + 242
        rig.world.power_cut()
        m = rig.world.advance(to_ms=1100)
        assert m["pulses_fwd"] == 4 and not m["motor_busy"]
        assert rig.world.segments()[-1]["made"] == 4
        rig.world.power_on()        # main.py runs again: its wait(1000) is already due
        m = rig.world.advance(to_ms=1200)
        assert m["pulses_fwd"] == 14 and m["boots"] == 3 and m["resets"] == {"power": 2}
        assert rig.world.segments()[-1]["start_us"] == 1100000


WDT_MAIN = """
import machine, _world
machine.WDT(timeout=1000)
_world.wait(_world.now_ms() + 100000)
"""

HANG_MAIN = """
import machine
machine.WDT(timeout=200)
while True:
    pass
"""


def test_watchdog_resets_in_virtual_and_wall_time():
    with VirtualRig(blank=True, warp=True) as rig:
        write(rig, "main.py", WDT_MAIN)
        restart(rig)
        m = rig.world.advance(to_ms=4500)
        assert m["resets"].get("wdt") == 4 and m["boots"] == 6
        assert rig.world.wdt_resets == 4
        write(rig, "main.py", HANG_MAIN)
        rig.world.reset()
        until(lambda: rig.world.status()["resets"].get("wdt_hang", 0) >= 1)
        assert rig.world.measure()["time_ms"] == 4500       # warp: time stood still
