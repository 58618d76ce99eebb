"""Find rigs: attached boards by USB VID:PID, and running virtual rigs."""

import json
import os

from pumprig.keys import pumprig_home

# (vid, pid or None for any) -> the board it is: only IDs that name the board itself
KNOWN_USB = {
    (0x2E8A, 0x0005): "rp2040 (MicroPython)",
    (0x303A, None): "esp32 (native USB)",
}
# USB-serial bridges: on ESP32 dev boards, but equally on balances, adapters and anything
# else with a UART, so the ID alone says nothing of what is behind it. A bridge is "esp32"
# only when its product string says so, otherwise "unknown".
USB_SERIAL_BRIDGES = {
    (0x0403, None): "FTDI",
    (0x10C4, 0xEA60): "CP210x",
    (0x1A86, 0x7523): "CH340",
    (0x1A86, 0x55D4): "CH9102",
}


def _usb_kind(vid, pid, product=None):
    """What a port is, by VID:PID and product string; None for a port that is no USB serial
    device pumprig knows (not listed)."""
    if vid is None:
        return None
    kind = KNOWN_USB.get((vid, pid)) or KNOWN_USB.get((vid, None))
    if kind:
        return kind
    bridge = USB_SERIAL_BRIDGES.get((vid, pid)) or USB_SERIAL_BRIDGES.get((vid, None))
    if bridge is None:
        return None
    if "esp32" in (product or "").lower():
        return "esp32 (%s)" % bridge
    return "unknown (%s USB serial)" % bridge


def _pid_alive(pid):
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def list_boards():
    """Attached USB serial ports that may be boards: [{port, kind, vid, pid, serial,
    description}]; kind is "unknown (...)" for a USB-serial bridge that does not say what it
    is on (a balance on an FTDI cable is no board)."""
    from serial.tools import list_ports

    out = []
    for p in sorted(list_ports.comports(), key=lambda p: p.device):
        kind = _usb_kind(p.vid, p.pid, getattr(p, "product", None) or p.description)
        if kind is None:
            continue
        out.append({
            "port": p.device,
            "kind": kind,
            "vid": "%04X" % p.vid,
            "pid": "%04X" % p.pid,
            "serial": p.serial_number,
            "description": p.description,
        })  # fmt: skip
    return out


def list_virtual(home=None):
    """Running virtual rigs registered in $PUMPRIG_HOME/rigs/*.json (dead pids skipped)."""
    rigs_dir = pumprig_home(home) / "rigs"
    out = []
    try:
        paths = sorted(rigs_dir.glob("*.json"))
    except OSError:
        return out
    for path in paths:
        try:
            entry = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(entry, dict) or not _pid_alive(entry.get("pid")):
            continue
        out.append({
            "port": entry.get("link"),
            "kind": "virtual",
            "name": path.stem,
            "uid": entry.get("uid"),
            "pid": entry.get("pid"),
            "control": entry.get("control"),
            "balance": entry.get("balance"),
            "state": entry.get("state"),
        })  # fmt: skip
    return out


def list_rigs(home=None):
    """Boards first, then virtual rigs; each a dict with at least port and kind."""
    return list_boards() + list_virtual(home)
