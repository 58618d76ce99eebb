"""The rig inventory (hil/rigs.toml) and rig allocation with lock files.

A rig is one board running the pumprig firmware plus the instruments wired to it. Each pytest
worker (pytest-xdist) takes one rig for the whole session; an exclusive `fcntl.flock` on a
lock file named after the rig's *port identity* (USB serial number or resolved device path)
keeps two workers, or two pytest runs, off the same port.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import tempfile
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

# Everything a rig may have. "sim" rigs have all of them.
FEATURES = ("steps", "balance", "power_relay", "battery_dac", "battery_adc",
            "stall_injection", "occlusion_injection", "time_warp")
BOARDS = ("rp2040", "esp32", "sim")
_RIG_KEYS = {"name", "board", "port", "serial", "instruments", "adapter", "pins", "i2c",
             "balance", "battery", "step_counter", "notes", "power"}
ADAPTERS = {"ft232h": "BLINKA_FT232H", "mcp2221": "BLINKA_MCP2221", "u2if": "BLINKA_U2IF"}


class InventoryError(Exception):
    """rigs.toml is unreadable or names something unknown (a usage error)."""


@dataclass
class RigSpec:
    name: str
    board: str
    port: str | None = None          # a pyserial URL or device path
    serial: str | None = None        # a USB serial number (found again after re-enumeration)
    instruments: frozenset = frozenset()
    adapter: str | None = None       # ft232h | mcp2221 | u2if (blinka)
    pins: dict = field(default_factory=dict)
    i2c: dict = field(default_factory=dict)
    balance: dict = field(default_factory=dict)
    battery: dict = field(default_factory=dict)
    step_counter: dict = field(default_factory=dict)
    power: dict = field(default_factory=dict)  # a labgrid power resource (`farm export --rigs`)

    @property
    def is_sim(self):
        return self.board == "sim"

    def has(self, feature):
        return feature in self.instruments

    def lock_key(self):
        """What two rigs must not share: the serial number, else the real device path."""
        if self.is_sim:
            return "sim-%s" % self.name
        if self.serial:
            return "usb-%s" % self.serial
        p = self.port or self.name
        if "://" not in p:
            p = os.path.realpath(p)
        return "port-%s" % p

    def describe(self):
        where = self.serial and "USB serial %s" % self.serial or self.port or "virtual"
        inst = ", ".join(sorted(self.instruments)) or "none"
        return "%s (%s, %s; instruments: %s)" % (self.name, self.board, where, inst)


def _spec(d, where):
    unknown = set(d) - _RIG_KEYS
    if unknown:
        raise InventoryError("%s: unknown key(s) %s" % (where, ", ".join(sorted(unknown))))
    name = d.get("name")
    if not isinstance(name, str) or not name:
        raise InventoryError("%s: every rig needs a name" % where)
    board = d.get("board")
    if board not in BOARDS:
        raise InventoryError("%s (%s): board must be one of %s" % (where, name, ", ".join(BOARDS)))
    if board != "sim" and not (d.get("port") or d.get("serial")):
        raise InventoryError("%s (%s): give port or serial" % (where, name))
    inst = d.get("instruments", [])
    if not isinstance(inst, list) or any(i not in FEATURES for i in inst):
        raise InventoryError("%s (%s): instruments must be a list of %s"
                             % (where, name, ", ".join(FEATURES)))
    if "time_warp" in inst and board != "sim":
        raise InventoryError("%s (%s): only virtual rigs can warp time" % (where, name))
    adapter = d.get("adapter")
    if adapter is not None and adapter not in ADAPTERS:
        raise InventoryError("%s (%s): adapter must be one of %s"
                             % (where, name, ", ".join(ADAPTERS)))
    needs_adapter = set(inst) - {"balance", "time_warp"}
    if board != "sim" and needs_adapter and adapter is None:
        raise InventoryError("%s (%s): instruments %s need a GPIO adapter (adapter = ...)"
                             % (where, name, ", ".join(sorted(needs_adapter))))
    if "power" in d and not isinstance((d.get("power") or {}).get("cls"), str):
        raise InventoryError("%s (%s): [rig.power] needs cls, a labgrid resource class "
                             "(docs/farm.md)" % (where, name))
    if "balance" in inst and board != "sim" and not (d.get("balance") or {}).get("port"):
        raise InventoryError("%s (%s): a balance needs [rig.balance] port" % (where, name))
    return RigSpec(name=name, board=board, port=d.get("port"), serial=d.get("serial"),
                   instruments=frozenset(inst), adapter=adapter, pins=dict(d.get("pins", {})),
                   i2c=dict(d.get("i2c", {})), balance=dict(d.get("balance", {})),
                   battery=dict(d.get("battery", {})),
                   step_counter=dict(d.get("step_counter", {})),
                   power=dict(d.get("power", {})))


def load(path) -> list[RigSpec]:
    """Read rigs.toml: `[[rig]]` tables. A missing file is an empty inventory."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        data = tomllib.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise InventoryError("%s: %s" % (path, e)) from None
    rigs = data.get("rig", [])
    if not isinstance(rigs, list):
        raise InventoryError("%s: write each rig as a [[rig]] table" % path)
    out = [_spec(d, "%s: rig %d" % (path, i + 1)) for i, d in enumerate(rigs)]
    names = [r.name for r in out]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        raise InventoryError("%s: rig names used twice: %s" % (path, ", ".join(sorted(dup))))
    return out


def sim_spec(worker: str) -> RigSpec:
    """The generated inventory entry of a virtual rig: every instrument, time warp."""
    return RigSpec(name="sim-%s" % worker, board="sim", instruments=frozenset(FEATURES))


def looks_like_serial_number(text):
    return bool(re.fullmatch(r"[0-9A-Fa-f]{8,32}", text)) and not os.path.exists(text)


def candidates(rig_opt: str, inventory: list[RigSpec]) -> list[RigSpec]:
    """The rigs `--rig` allows, in preference order (sim is handled by the caller).

    `all`: every inventory rig; a rig name; a USB serial number; a port or URL (an inventory
    entry with that port, else a bare rig with no instruments)."""
    if rig_opt == "all":
        if not inventory:
            raise InventoryError("--rig all: the inventory lists no rigs")
        return [r for r in inventory if not r.is_sim]
    for r in inventory:
        if rig_opt in (r.name, r.port, r.serial):
            return [r]
    if looks_like_serial_number(rig_opt):
        return [RigSpec(name="usb-%s" % rig_opt, board="rp2040", serial=rig_opt)]
    if "://" in rig_opt or os.path.exists(rig_opt):
        real = os.path.realpath(rig_opt) if "://" not in rig_opt else rig_opt
        for r in inventory:
            if r.port and "://" not in r.port and os.path.realpath(r.port) == real:
                return [r]
        return [RigSpec(name=os.path.basename(rig_opt) or rig_opt, board="rp2040", port=rig_opt)]
    raise InventoryError("--rig %s: not sim, all, a rig name in the inventory, an existing "
                         "port, a pyserial URL or a USB serial number" % rig_opt)


def lock_dir(explicit=None) -> Path:
    if explicit:
        d = Path(explicit)
    elif os.environ.get("PUMPRIG_HOME"):
        d = Path(os.environ["PUMPRIG_HOME"]) / "locks"
    else:
        d = Path(tempfile.gettempdir()) / ("pumprig-locks-%d" % os.getuid())
    d.mkdir(parents=True, exist_ok=True)
    return d


class RigLock:
    """An exclusive lock on one rig, held until release() (or the process ends)."""

    def __init__(self, spec: RigSpec, path: Path, fd: int):
        self.spec = spec
        self.path = path
        self._fd = fd

    def release(self):
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)


def _lock_name(key):
    return re.sub(r"[^A-Za-z0-9._-]", "_", key) + ".lock"


def try_lock(spec: RigSpec, directory: Path, owner="") -> RigLock | None:
    path = Path(directory) / _lock_name(spec.lock_key())
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return None
        raise
    os.ftruncate(fd, 0)
    os.write(fd, ("%d %s %s\n" % (os.getpid(), owner, spec.name)).encode())
    return RigLock(spec, path, fd)


def allocate(specs: list[RigSpec], directory: Path, wait_s=0.0, owner="") -> RigLock:
    """Lock the first free rig of `specs`; wait up to wait_s for one; InventoryError if none."""
    end = time.monotonic() + wait_s
    while True:
        for s in specs:
            lk = try_lock(s, directory, owner)
            if lk is not None:
                return lk
        if time.monotonic() >= end:
            raise InventoryError(
                "no free rig among %s (lock dir %s): use no more pytest-xdist workers (-n) "
                "than rigs, or wait for the other run" % (", ".join(s.name for s in specs),
                                                          directory))
        time.sleep(0.2)
