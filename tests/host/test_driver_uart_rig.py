"""The virtual rig's TMC2209 UART (pumprig/virtual/driver.py, shim/_uart.py): the world answers
the firmware's datagrams as the driver does (echo, replies for its node, CRC8, IFCNT), keeps the
register file, and raises DIAG on a stall only once StallGuard is set up, as a TMC2209 does.

The datagrams are made with the firmware's hw/tmc2209.py and checked by the world's own CRC8:
two independent implementations of the datasheet's algorithm."""

import json
import os
import sys
import time
from pathlib import Path

import pytest
from pumprig.virtual.world import World, load_config

ROOT = Path(__file__).resolve().parents[2]
BOARD = ROOT / "board"
if str(BOARD) not in sys.path:
    sys.path.insert(0, str(BOARD))

from hw import tmc2209  # noqa: E402

SIM_JSON = str(BOARD / "boards" / "sim.json")
HAVE_MPY = os.path.exists(os.path.join(os.path.dirname(sys.executable), "micropython"))
STALLGUARD = {"GCONF": 0x141, "GSTAT": 1, "IFCNT": 3, "TCOOLTHRS": 0xFFFFF, "SGTHRS": 20}


# --------------------------------------------------------------------------- the world alone


def world(cfg=None):
    w = World(cfg or load_config(SIM_JSON))
    w.handle(b"u 0 1")          # machine.UART on sim.json's driver pins
    return w


def send(w, data):
    w.handle(b"U " + data.hex().encode())
    got = bytes(w.driver.rx)
    w.driver.rx.clear()
    return got


def test_sim_json_wires_a_driver_uart():
    cfg = load_config(SIM_JSON)
    du = cfg["driver_uart"]
    assert (du["tx"], du["rx"]) == (0, 1)
    assert not {du["tx"], du["rx"]} & set(cfg["pins"].values())


def test_read_request_is_echoed_then_answered_with_a_valid_reply():
    w = world()
    req = tmc2209.read_request(0, tmc2209.GCONF)
    got = send(w, req)
    assert got[:4] == req and len(got) == 12
    assert tmc2209.parse_reply(got[4:], tmc2209.GCONF) == 0x101    # the power-on GCONF


def test_writes_count_in_ifcnt_and_bad_datagrams_are_ignored():
    w = world()
    good = tmc2209.write_datagram(0, tmc2209.SGTHRS, 20)
    assert send(w, good) == good                                     # only the echo
    assert w.driver.regs[tmc2209.SGTHRS] == 20 and w.driver.regs[tmc2209.IFCNT] == 1
    bad = bytearray(tmc2209.write_datagram(0, tmc2209.SGTHRS, 99))
    bad[7] ^= 1                                                      # CRC
    other = tmc2209.write_datagram(3, tmc2209.SGTHRS, 99)            # another node
    for d in (bytes(bad), other, tmc2209.read_request(3, tmc2209.IFCNT)):
        assert send(w, d) == d                                       # echo, no reply
    assert w.driver.regs[tmc2209.SGTHRS] == 20 and w.driver.regs[tmc2209.IFCNT] == 1
    for _ in range(256):
        send(w, good)
    assert w.driver.regs[tmc2209.IFCNT] == 1                         # modulo 256


def test_the_node_address_follows_ms1_ms2():
    w = world()
    w.pin_write(5, 0)           # MS1 (sim.json)
    w.pin_write(6, 1)           # MS2
    assert len(send(w, tmc2209.read_request(0, tmc2209.IFCNT))) == 4
    assert tmc2209.parse_reply(send(w, tmc2209.read_request(2, tmc2209.IFCNT))[4:],
                               tmc2209.IFCNT) == 0


def test_a_uart_on_other_pins_hears_nothing():
    w = World(load_config(SIM_JSON))
    w.handle(b"u 8 9")
    assert send(w, tmc2209.read_request(0, tmc2209.IFCNT)) == b""


def test_configure_through_the_world_turns_on_stall_reporting():
    w = world()

    class UART:             # the firmware's UART calls, answered by the world as the shim asks
        def write(self, b):
            w.handle(b"U " + b.hex().encode())

        def any(self):
            return len(w.driver.rx)

        def read(self, n=None):
            n = len(w.driver.rx) if n is None else n
            got = bytes(w.driver.rx[:n])
            del w.driver.rx[:n]
            return got or None

    w.fault(stall=True)
    assert w.pin_read(7) == 0                                        # power-on: no StallGuard
    assert tmc2209.configure(UART(), 0, 20, 0xFFFFF)
    assert w.driver_status() == STALLGUARD
    assert w.pin_read(7) == 1 and w.status()["diag"] == 1
    w.fault(stall=False)
    assert w.pin_read(7) == 0


@pytest.mark.parametrize("reg,value", [(tmc2209.SGTHRS, 0), (tmc2209.TCOOLTHRS, 0),
                                       (tmc2209.GCONF, 0x101), (tmc2209.GCONF, 0x145)])
def test_a_stall_raises_diag_only_with_stallguard_set_up(reg, value):
    w = world()
    for r, v in ((tmc2209.GCONF, 0x141), (tmc2209.TCOOLTHRS, 0xFFFFF), (tmc2209.SGTHRS, 20),
                 (reg, value)):
        send(w, tmc2209.write_datagram(0, r, v))
    w.fault(stall=True)
    assert w.pin_read(7) == 0
    assert w.stall and w.status()["stall"]                          # the plunger is blocked


def test_without_a_driver_uart_diag_reports_every_stall_as_before():
    cfg = load_config(SIM_JSON)
    del cfg["driver_uart"]
    w = world(cfg)
    assert w.status()["driver_regs"] is None
    w.fault(stall=True)
    assert w.pin_read(7) == 1


def test_a_power_cut_resets_the_driver_a_board_reset_does_not():
    w = world()
    send(w, tmc2209.write_datagram(0, tmc2209.SGTHRS, 20))
    w.detach("machine")
    assert w.driver.regs[tmc2209.SGTHRS] == 20
    w.detach("power")
    assert w.driver_status() == {"GCONF": 0x101, "GSTAT": 1, "IFCNT": 0, "TCOOLTHRS": 0,
                                 "SGTHRS": 0}


# --------------------------------------------------------------------------- the firmware

PLAN = {"v": 1, "drug": "hil-dye", "custom_drug": True, "conc_ng_ml": 1_000_000,
        "basal": {"kind": "continuous", "ng_day": 21_600_000},     # 1 step/s
        "caps": {"ng_24h": 10 ** 10, "ng_1h": 10 ** 10}}


def boot_rig(home, board_json=None):
    """A warp-mode rig with the repository's firmware, its boards/sim.json edited by
    board_json(cfg); returns (rig, client) once the firmware answers."""
    pytest.importorskip("serial")
    from pumprig.virtual.rig import open_rig

    rig = open_rig(warp=True)
    try:
        if board_json is not None:
            path = os.path.join(rig.fs, "boards", "sim.json")
            with open(path) as f:
                cfg = json.load(f)
            board_json(cfg)
            with open(path, "w") as f:
                json.dump(cfg, f)
            from pumprig.flash import write_manifest

            write_manifest(rig.fs)      # as a flash of the edited board json would
        rig.world.reset()
        end = time.monotonic() + 10
        while not (rig.world.status()["state"] == "running" and rig.world.status()["waiting"]):
            assert rig.world.status()["state"] != "repl", "the firmware crashed at boot"
            assert time.monotonic() < end, "the firmware did not boot"
            time.sleep(0.005)
        return rig, rig.connect()
    except BaseException:
        rig.stop()
        raise


def stall_run(rig, c):
    """Deliver, block the plunger, run 4 segments' worth of time: the alarms active then."""
    c.clock_set(1_767_225_600, 0)
    c.plan_set(PLAN)
    c.refill(20_000_000)
    c.ack()
    rig.world.advance(by_ms=5_000)
    rig.world.fault(stall=True)
    for _ in range(20):
        rig.world.advance(by_ms=10_000)
        if "STALL" in c.status()["alarms"]:
            break
    return c.status()["alarms"]


@pytest.mark.skipif(not HAVE_MPY, reason="MicroPython unix port not installed")
def test_firmware_sets_up_stallguard_and_a_stall_raises_the_alarm(home):
    rig, c = boot_rig(home)
    try:
        assert rig.world.status()["driver_regs"] == STALLGUARD
        assert c.status()["stall_detect"] == "stallguard"
        assert "STALL" in stall_run(rig, c)
        assert rig.world.status()["diag"] == 1
    finally:
        c.close()
        rig.stop()


@pytest.mark.skipif(not HAVE_MPY, reason="MicroPython unix port not installed")
@pytest.mark.parametrize("edit", ["sgthrs 0", "no driver_uart"])
def test_a_driver_without_stallguard_blocks_without_diag(home, edit):
    def board_json(cfg):
        if edit == "sgthrs 0":
            cfg["driver_uart"]["sgthrs"] = 0
        else:
            del cfg["driver_uart"]

    rig, c = boot_rig(home, board_json)
    try:
        regs = rig.world.status()["driver_regs"]
        if edit == "sgthrs 0":
            assert regs == dict(STALLGUARD, SGTHRS=0)
            assert c.status()["stall_detect"] == "off"
        else:
            assert regs["IFCNT"] == 0 and regs["SGTHRS"] == 0      # never spoken to
            assert c.status()["stall_detect"] is None
        before = rig.world.measure()["steps_net"]
        assert "STALL" not in stall_run(rig, c)
        m = rig.world.measure()
        assert m["diag"] == 0
        assert m["steps_net"] - before <= 5     # the plunger did not move while blocked
    finally:
        c.close()
        rig.stop()
