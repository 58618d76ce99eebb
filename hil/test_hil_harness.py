"""The harness itself, without a rig: the bench backend's drivers and logic on fake blinka
objects, the inventory and rig locks, and the HTML report writer."""

import sys
import types
from pathlib import Path

import pytest
from pumprig_hil import instruments as ins
from pumprig_hil import inventory as inv

# ---------------------------------------------------------------------------- fake blinka


class FakeI2C:
    """Records writes; answers register reads from `regs` (ADS1115-like)."""

    def __init__(self, scl=None, sda=None):
        self.writes = []
        self.regs = {0x00: 0, 0x01: 0x8000}
        self.locked = False

    def try_lock(self):
        if self.locked:
            return False
        self.locked = True
        return True

    def unlock(self):
        self.locked = False

    def writeto(self, addr, buf):
        assert self.locked, "writes only with the bus locked"
        self.writes.append((addr, bytes(buf)))

    def writeto_then_readfrom(self, addr, out, into):
        assert self.locked
        v = self.regs[out[0]]
        into[0], into[1] = v >> 8, v & 0xFF

    def deinit(self):
        pass


class FakePin:
    def __init__(self, name):
        self.name = name
        self.value = False
        self.direction = None

    def deinit(self):
        pass


def fake_blinka(pin_names=("C0", "C1", "C2", "C3", "C4", "SCL", "SDA")):
    board = types.SimpleNamespace(**{n: n for n in pin_names})
    made = {}

    class DigitalInOut(FakePin):
        def __init__(self, name):
            super().__init__(name)
            made[name] = self

    digitalio = types.SimpleNamespace(
        DigitalInOut=DigitalInOut,
        Direction=types.SimpleNamespace(INPUT="in", OUTPUT="out"))
    buses = []

    def I2C(scl, sda):
        b = FakeI2C(scl, sda)
        buses.append(b)
        return b

    busio = types.SimpleNamespace(I2C=I2C)
    return (board, digitalio, busio), made, buses


def bench_spec(**kw):
    d = {"name": "b1", "board": "rp2040", "serial": "E6614103E7452D2F", "adapter": "ft232h",
         "instruments": ["power_relay", "battery_dac", "battery_adc", "stall_injection",
                         "occlusion_injection"]}
    d.update(kw)
    return inv._spec(d, "test")


# ---------------------------------------------------------------------------- drivers

def test_mcp4725_fast_write_bytes():
    bus = FakeI2C()
    dac = ins.MCP4725(bus, 0x60, vref_mv=5000)
    assert dac.code_for_mv(0) == 0 and dac.code_for_mv(5000) == 4095
    assert dac.code_for_mv(1850) == 1516          # 1850 * 4096 / 5000 = 1515.5 -> 1516
    dac.set_mv(1850)
    assert bus.writes == [(0x60, bytes((0x05, 0xEC)))]   # 1516 = 0x5EC, PD bits 00
    with pytest.raises(ins.InstrumentError):
        dac.write_code(4096)


def test_ads1115_single_shot_config_and_scaling():
    bus = FakeI2C()
    adc = ins.ADS1115(bus, 0x48, channel=0)
    assert adc.config_word() == 0xC383
    bus.regs[0x00] = 14800                        # 14800 counts x 0.125 mV = 1850 mV
    assert adc.read_mv() == 1850
    assert bus.writes[0] == (0x48, bytes((0x01, 0xC3, 0x83)))
    bus.regs[0x00] = 0x10000 - 8                  # -8 counts: -1 mV
    assert adc.read_mv() == -1
    bus.regs[0x01] = 0x0000                       # conversion never finishes
    with pytest.raises(ins.InstrumentError):
        adc.read_raw()


def test_edge_counter_counts_rising_edges_by_direction():
    c = ins.EdgeCounter(stretch_us=1000)
    t = 0
    for step, d in [(0, 1), (1, 1), (1, 1), (0, 1), (1, 1), (0, 0), (1, 0), (0, 0)]:
        c.feed(step, d, t)
        t += 400
    assert (c.fwd, c.rev, c.overruns) == (2, 1, 0)
    assert c.max_rate_hz() == 1_000_000 // 1400
    c.feed(1, 1, t + 5000)                        # a gap longer than the stretch
    assert c.overruns == 1


def test_poller_refuses_counts_after_an_overrun():
    step, d = FakePin("s"), FakePin("d")
    now = [0]
    pc = ins.PollingStepCounter(step, d, stretch_us=1000, clock_us=lambda: now[0])
    for level in (0, 1, 0, 1):
        step.value, d.value = level, 1
        pc.sample_once()
        now[0] += 300
    assert pc.read() == ins.StepCount(2, 0)
    now[0] += 2000
    pc.sample_once()
    with pytest.raises(ins.InstrumentError, match="fell behind"):
        pc.read()


def test_bench_backend_drives_relay_dac_and_fault_pins():
    mods, pins, buses = fake_blinka()
    b = ins.BenchInstruments(bench_spec(), modules=mods)
    bus = buses[0]
    # at start: powered (relay released), battery at nominal 3700 mV (DAC 3700 -> 3031)
    assert pins["C2"].value is False and b.powered()
    assert bus.writes[-1] == (0x60, bytes((0x0B, 0xD7)))
    b.power_cut()
    assert pins["C2"].value is True and not b.powered()
    b.power_on()
    assert pins["C2"].value is False
    b.set_battery_mv(3000)
    assert b.dac.code == 2458
    bus.regs[0x00] = 12000                        # tap 1500 mV -> cell 3000 mV
    assert b.battery_mv() == 3000
    b.stall(True)
    b.occlude(True)
    assert pins["C3"].value and pins["C4"].value
    b.clear_faults()
    assert not pins["C3"].value and not pins["C4"].value and b.dac.code == 3031
    with pytest.raises(ins.InstrumentError, match="steps"):
        b.steps()                                 # not wired on this rig
    assert b.readings()["power"] == "on"
    b.close()


def test_bench_backend_reports_an_unknown_pin():
    mods, _, _ = fake_blinka(pin_names=("G0", "G1", "SCL", "SDA"))
    with pytest.raises(ins.InstrumentError, match="not a pin"):
        ins.BenchInstruments(bench_spec(instruments=["power_relay"]), modules=mods)


def test_importing_the_plugin_needs_no_hardware():
    import subprocess

    code = ("import sys; sys.path.insert(0, %r); import pumprig_hil.plugin, "
            "pumprig_hil.instruments; print(sorted(m for m in ('board', 'digitalio', 'busio') "
            "if m in sys.modules))" % str(Path(__file__).parent))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


# ---------------------------------------------------------------------------- inventory

RIGS = """
[[rig]]
name = "pico-1"
board = "rp2040"
port = "socket://localhost:9"
adapter = "ft232h"
instruments = ["steps", "power_relay"]

[[rig]]
name = "pico-2"
board = "rp2040"
serial = "E6614103E7452D2F"
"""


def test_inventory_loads_and_checks(tmp_path):
    p = tmp_path / "rigs.toml"
    p.write_text(RIGS)
    rigs = inv.load(p)
    assert [r.name for r in rigs] == ["pico-1", "pico-2"]
    assert rigs[0].has("steps") and not rigs[1].has("steps")
    assert inv.candidates("pico-2", rigs) == [rigs[1]]
    assert inv.candidates("E6614103E7452D2F", rigs) == [rigs[1]]
    assert inv.candidates("all", rigs) == rigs
    for bad in ('[[rig]]\nname = "x"\nboard = "pdp11"\nport = "/dev/null"\n',
                '[[rig]]\nname = "x"\nboard = "rp2040"\n',
                '[[rig]]\nname = "x"\nboard = "rp2040"\nport = "a"\ninstruments = ["steps"]\n',
                '[[rig]]\nname = "x"\nboard = "rp2040"\nport = "a"\ncolour = 1\n',
                '[[rig]]\nname = "x"\nboard = "esp32"\nport = "a"\ninstruments = ["time_warp"]\n'):
        p.write_text(bad)
        with pytest.raises(inv.InventoryError):
            inv.load(p)
    assert inv.load(tmp_path / "missing.toml") == []


def test_the_shipped_inventory_is_valid():
    inv.load(Path(__file__).parent / "rigs.toml")


def test_locks_keep_two_workers_off_one_port(tmp_path):
    p = tmp_path / "rigs.toml"
    p.write_text(RIGS)
    rigs = inv.load(p)
    a = inv.allocate(rigs, tmp_path, owner="gw0")
    b = inv.allocate(rigs, tmp_path, owner="gw1")
    assert {a.spec.name, b.spec.name} == {"pico-1", "pico-2"}
    with pytest.raises(inv.InventoryError, match="no free rig"):
        inv.allocate(rigs, tmp_path, owner="gw2")
    # the same port under another name is the same rig
    alias = inv.RigSpec(name="other", board="rp2040", serial="e6614103e7452d2f".upper())
    assert inv.try_lock(alias, tmp_path) is None
    a.release()
    c = inv.allocate(rigs, tmp_path, owner="gw2")
    assert c.spec.name == a.spec.name
    b.release()
    c.release()


# ---------------------------------------------------------------------------- report

def _png_size(path):
    """(width, height) in pixels from a PNG's IHDR chunk."""
    b = Path(path).read_bytes()
    assert b[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(b[16:20], "big"), int.from_bytes(b[20:24], "big")


def test_step_plot_is_150_dpi_with_a_tolerance_band(tmp_path, monkeypatch):
    """Issue 14 (reports): HIL plots were 80 dpi with no tolerance band."""
    import matplotlib.axes
    from pumprig_hil import report

    bands = []
    real = matplotlib.axes.Axes.fill_between

    def spy(self, x, y1, y2=0, **kw):
        bands.append((list(x), list(y1), list(y2), kw.get("label")))
        return real(self, x, y1, y2, **kw)

    monkeypatch.setattr(matplotlib.axes.Axes, "fill_between", spy)
    path = report.plot_trace([(0, 100, "start"), (10, 105, None), (20, 112, "LOW")],
                             tmp_path / "plots" / "a.png", "hil/test_x.py::test_a", "sim",
                             band=[(10, 104.5, 1.0), (20, 111.0, 1.5)])
    assert _png_size(path) == (int(6.4 * 150), int(4.8 * 150))   # two panels at 150 dpi
    # the band around the ideal, in the trace's origin (the first sample), and around zero in
    # the error panel (counted - ideal: 105 - 104.5, 112 - 111)
    assert bands == [([10.0, 20.0], [3.5, 9.5], [5.5, 12.5], "tolerance"),
                     ([10.0, 20.0], [-1.0, -1.5], [1.0, 1.5], "tolerance")]
    plain = report.plot_trace([(0, 0, "start"), (5, 3, None)], tmp_path / "b.png", "t", "sim")
    assert _png_size(plain) == (int(6.4 * 150), int(3.2 * 150))


# ---------------------------------------------------------------------------- over a farm

def test_a_bench_instrument_service_on_another_host(tmp_path, monkeypatch):
    """A bench's GPIO instruments through its exporter host's instrument service (what
    `pumprig farm export --rigs FILE --relay` serves, exported as the NetworkService
    `instruments`), on fake blinka: the HIL plugin's instruments on the place drive the
    adapter's pins and DAC there; a client without the bench's token is refused."""
    import socket

    from pumprig import farm, farm_auth, keys
    from pumprig.farm_export import Relays
    from pumprig.farm_holders import FixedPlaces, resource_path
    from pumprig_hil import farm as hilfarm

    exporter, client = tmp_path / "exporter", tmp_path / "client"
    store = tmp_path / "shared-keys.json"
    for h in (exporter, client):
        h.mkdir()
        (h / "config.toml").write_text('keys = "%s"\n' % store)
    rig = {"name": "b1", "board": "rp2040", "serial": "E6614103E7452D2F", "adapter": "ft232h",
           "instruments": ["power_relay", "battery_dac", "battery_adc", "stall_injection",
                           "occlusion_injection", "balance"],
           "balance": {"port": "/dev/ttyUSB0"}}
    mods, pins, buses = fake_blinka()
    inst = hilfarm.bench_instruments(rig, "rigs.toml", modules=mods)
    assert inst.features == hilfarm.service_features(rig) == {
        "power_relay", "battery_dac", "battery_adc", "stall_injection", "occlusion_injection"}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    held = FixedPlaces({"bench1": (farm.identity(), frozenset(),
                                   frozenset({resource_path("hostA", "b1", "instruments")}))})
    relays = Relays([], "127.0.0.1", held, "hostA", home=exporter,
                    benches=[(port, "b1", inst)]).start()
    try:
        lease = farm.Lease("bench1")
        lease.resources = {"console": {"cls": "NetworkSerialPort",
                                       "params": {"host": "127.0.0.1", "port": 1}},
                           "instruments": {"cls": "NetworkService",
                                           "params": {"address": "127.0.0.1", "port": port}}}
        monkeypatch.setenv("PUMPRIG_HOME", str(client))
        lock = hilfarm.PlaceLock(lease)
        assert lock.spec.board == "rp2040" and lock.spec.instruments == inst.features
        remote = lock.instruments()
        assert isinstance(remote, hilfarm.RemoteBenchInstruments)
        remote.power_cut()
        assert pins["C2"].value is True and not remote.powered()
        remote.stall(True)
        remote.occlude(True)
        assert pins["C3"].value and pins["C4"].value
        remote.set_battery_mv(3000)
        assert inst.dac.code == 2458
        buses[0].regs[0x00] = 12000                # tap 1500 mV -> cell 3000 mV
        assert remote.battery_mv() == 3000
        remote.clear_faults()
        assert not (pins["C2"].value or pins["C3"].value or pins["C4"].value)
        assert inst.dac.code == 3031 and remote.powered()
        with pytest.raises(ins.InstrumentError, match="has no steps"):
            remote.steps()                         # not wired on this bench
        assert remote.readings()["power"] == "on"
        remote.close()
        # the token: $PUMPRIG_HOME/farm/b1/control.key (0600) and the shared store
        token = (exporter / "farm" / "b1" / farm_auth.TOKEN_FILE).read_text().strip()
        assert keys.KeyStore(client).control_token("bench-b1") == token
        # a client host with another key store cannot touch the pins
        other = tmp_path / "other"
        other.mkdir()
        monkeypatch.setenv("PUMPRIG_HOME", str(other))
        with pytest.raises(farm_auth.ControlRefused, match="no control token for rig bench-b1"):
            hilfarm.PlaceLock(lease)
        keys.KeyStore(other).save_control("bench-b1", "cd" * 32)
        with pytest.raises(farm_auth.ControlRefused, match="wrong control token"):
            hilfarm.PlaceLock(lease)
        assert pins["C2"].value is False
    finally:
        relays.stop()
