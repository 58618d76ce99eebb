"""Rig discovery: virtual rigs from the registry (dead ones skipped), boards by VID:PID."""

import json
import os
from types import SimpleNamespace

from pumprig import ports


def test_virtual_rigs_skip_dead(tmp_path):
    rigs = tmp_path / "rigs"
    rigs.mkdir()
    (rigs / "alive.json").write_text(json.dumps({"link": "/tmp/rig-a", "pid": os.getpid(), "uid": "u1"}))
    (rigs / "dead.json").write_text(json.dumps({"link": "/tmp/rig-b", "pid": 2**22 + 12345, "uid": "u2"}))
    (rigs / "junk.json").write_text("{not json")
    found = ports.list_virtual(tmp_path)
    assert [(r["name"], r["port"], r["uid"]) for r in found] == [("alive", "/tmp/rig-a", "u1")]
    assert ports.list_virtual(tmp_path / "nothing") == []


def test_boards_by_vid_pid(monkeypatch):
    fake = [
        SimpleNamespace(device="/dev/ttyACM0", vid=0x2E8A, pid=0x0005, serial_number="E661", description="Board in FS mode"),
        SimpleNamespace(device="/dev/ttyUSB0", vid=0x10C4, pid=0xEA60, serial_number="0001", description="CP2102"),
        SimpleNamespace(device="/dev/ttyACM1", vid=0x303A, pid=0x1001, serial_number=None, description="USB JTAG"),
        SimpleNamespace(device="/dev/ttyS0", vid=None, pid=None, serial_number=None, description="n/a"),
        SimpleNamespace(device="/dev/ttyUSB1", vid=0x1234, pid=0x5678, serial_number=None, description="mouse"),
    ]
    from serial.tools import list_ports

    monkeypatch.setattr(list_ports, "comports", lambda: fake)
    found = ports.list_boards()
    assert [(r["port"], r["kind"]) for r in found] == [
        ("/dev/ttyACM0", "rp2040 (MicroPython)"),
        ("/dev/ttyACM1", "esp32 (native USB)"),
        ("/dev/ttyUSB0", "unknown (CP210x USB serial)"),
    ]
    assert found[0]["vid"] == "2E8A" and found[0]["pid"] == "0005"


def test_no_ftdi_adapter_is_called_an_esp32(monkeypatch):
    """Issue 14: `pumprig list` labelled any FTDI adapter "esp32", so a USB balance showed as a
    board. A USB-serial bridge is "unknown" unless its product string names the board."""
    fake = [
        SimpleNamespace(device="/dev/ttyUSB0", vid=0x0403, pid=0x6001, serial_number="A10K",
                        product="FT232R USB UART", description="FT232R USB UART"),
        SimpleNamespace(device="/dev/ttyUSB1", vid=0x0403, pid=0x6015, serial_number="B2",
                        product=None, description="METTLER TOLEDO balance"),
        SimpleNamespace(device="/dev/ttyUSB2", vid=0x0403, pid=0x6001, serial_number="C3",
                        product="ESP32-DevKit FTDI", description="ESP32-DevKit FTDI"),
        SimpleNamespace(device="/dev/ttyUSB3", vid=0x1A86, pid=0x7523, serial_number=None,
                        product=None, description="USB Serial"),
    ]
    from serial.tools import list_ports

    monkeypatch.setattr(list_ports, "comports", lambda: fake)
    kinds = {r["port"]: r["kind"] for r in ports.list_boards()}
    assert kinds == {"/dev/ttyUSB0": "unknown (FTDI USB serial)",
                     "/dev/ttyUSB1": "unknown (FTDI USB serial)",
                     "/dev/ttyUSB2": "esp32 (FTDI)",
                     "/dev/ttyUSB3": "unknown (CH340 USB serial)"}
