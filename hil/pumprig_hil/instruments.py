"""Instruments: what the rig measures and forces independently of the firmware's word.

One interface, two backends:

- `SimInstruments`: a virtual rig's side channel (`pumprig.virtual.control.WorldClient`) and
  its MT-SICS balance pty. Time is virtual: `advance_s` warps the world.
- `BenchInstruments`: a real bench read from the host through a USB GPIO adapter driven by
  adafruit-blinka (FT232H, MCP2221 or a Pico running u2if; blinka picks it from the
  BLINKA_FT232H / BLINKA_MCP2221 / BLINKA_U2IF environment variable), an MCP4725 DAC and an
  ADS1115 ADC on the adapter's I2C bus for the battery line, a relay for power cycling, and a
  laboratory balance on its own serial port (MT-SICS). Time is real: `advance_s` sleeps.
  `board`, `digitalio` and `busio` are imported only when a bench backend is built, so
  importing this module never needs hardware.

Units: steps are STEP pulses (forward/reverse from the DIR level), volumes nL, battery mV at
the cell, time s (float, for people and plots).
"""

from __future__ import annotations

import os
import threading
import time
from typing import NamedTuple

from pumprig.errors import PumprigError

DENSITY_UG_PER_UL = 998  # water at 20 °C


class InstrumentError(PumprigError):
    """An instrument is missing, unwired or gave an implausible reading."""


class StepCount(NamedTuple):
    fwd: int
    rev: int

    @property
    def net(self):
        return self.fwd - self.rev

    def __sub__(self, other):
        return StepCount(self.fwd - other.fwd, self.rev - other.rev)


class Instruments:
    """The interface the suites use. `features` says what this backend can do (the names of
    hil/rigs.toml `instruments`); a method for a missing feature raises InstrumentError."""

    target = "?"
    features: frozenset = frozenset()

    def has(self, feature):
        return feature in self.features

    def _need(self, feature, what):
        if feature not in self.features:
            raise InstrumentError("this rig has no %s (%s)" % (feature, what))

    def steps(self) -> StepCount:
        raise NotImplementedError

    def volume_nl(self):
        """Volume out of the pump path, measured (None if nothing measures it)."""
        return None

    def battery_mv(self):
        return None

    def set_battery_mv(self, mv):
        """Force the cell voltage the firmware sees; None gives the line back (nominal)."""
        raise NotImplementedError

    def power_cut(self):
        raise NotImplementedError

    def power_on(self):
        raise NotImplementedError

    def powered(self):
        return True

    def occlude(self, on):
        raise NotImplementedError

    def stall(self, on):
        raise NotImplementedError

    def balance(self):
        """A `pumprig.balance.Balance` or None."""
        return None

    def advance_s(self, s):
        raise NotImplementedError

    def now_s(self) -> float:
        raise NotImplementedError

    def clear_faults(self):
        """Power on, no stall, no occlusion, battery line back to nominal."""
        for feat, fn in (("power_relay", self.power_on), ("stall_injection", lambda: self.stall(False)),
                         ("occlusion_injection", lambda: self.occlude(False)),
                         ("battery_dac", lambda: self.set_battery_mv(None))):
            if self.has(feat):
                fn()

    def readings(self) -> dict:
        """Everything the instruments can say now (for failure reports)."""
        out = {"target": self.target, "now_s": round(self.now_s(), 3)}
        s = self.steps()
        out.update({"steps_fwd": s.fwd, "steps_rev": s.rev})
        for k, fn in (("volume_nl", self.volume_nl), ("battery_mv", self.battery_mv)):
            try:
                out[k] = fn()
            except PumprigError as e:
                out[k] = "error: %s" % e
        return out

    def close(self):
        pass


# ---------------------------------------------------------------------------- virtual rig

class SimInstruments(Instruments):
    """A virtual rig's world: exact pulse counts, fault injection, warped time."""

    target = "sim"
    features = frozenset(("steps", "balance", "power_relay", "battery_dac", "battery_adc",
                          "stall_injection", "occlusion_injection", "time_warp"))

    def __init__(self, vrig):
        self.vrig = vrig
        self.world = vrig.world
        self._balance = None

    def steps(self):
        m = self.world.measure()
        return StepCount(m["pulses_fwd"], m["pulses_rev"])

    def volume_nl(self):
        return self.world.measure()["volume_out_nl"]

    def battery_mv(self):
        return self.world.measure()["battery_mv"]

    def set_battery_mv(self, mv):
        if mv is None:
            self.world.fault(clear_battery=True)
        else:
            self.world.fault(battery_mv=int(mv))

    def power_cut(self):
        self.world.power_cut()

    def power_on(self):
        self.world.power_on()

    def powered(self):
        return bool(self.world.status().get("powered", True))

    def occlude(self, on):
        self.world.fault(occlusion=bool(on))

    def stall(self, on):
        self.world.fault(stall=bool(on))

    def balance(self):
        if self._balance is None:
            from pumprig.balance import Balance

            self._balance = Balance(self.vrig.balance_link, timeout=2.0)
        return self._balance

    def advance_s(self, s):
        if s > 0:
            self.world.advance(by_ms=int(round(s * 1000)), timeout_s=120)

    def now_s(self):
        return self.world.status()["time_ms"] / 1000.0

    def clear_faults(self):
        self.world.fault(stall=False, occlusion=False, clear_battery=True)
        self.world.power_on()

    def readings(self):
        m = self.world.measure()
        st = self.world.status()
        out = {"target": "sim", "now_s": m["time_ms"] / 1000.0, "steps_fwd": m["pulses_fwd"],
               "steps_rev": m["pulses_rev"]}
        for k in ("steps_net", "volume_out_nl", "held_nl", "pressure_kpa", "battery_mv",
                  "buzzer_hz", "led", "enabled", "motor_busy", "resets", "boots", "mass_ug"):
            out[k] = m.get(k)
        for k in ("state", "powered", "stall", "occlusion", "battery_forced_mv", "segments"):
            out["world_" + k] = st.get(k)
        try:
            data = os.path.join(self.vrig.fs, "data")
            out["data_files"] = {n: os.path.getsize(os.path.join(data, n))
                                 for n in sorted(os.listdir(data))}
        except OSError:
            pass
        tail = getattr(self.vrig, "_logtext", lambda: "")()
        if tail:
            out["launcher_log"] = tail[-600:].replace("\n", " | ")
        return out

    def close(self):
        if self._balance is not None:
            self._balance.close()
            self._balance = None


# ---------------------------------------------------------------------------- bench drivers
# Register-level drivers over a busio.I2C-like bus (given, never built: testable with fakes).

class _I2CDevice:
    def __init__(self, i2c, address):
        self.i2c = i2c
        self.address = address

    def _locked(self, fn):
        end = time.monotonic() + 1.0
        while not self.i2c.try_lock():
            if time.monotonic() > end:
                raise InstrumentError("the I2C bus stayed locked")
            time.sleep(0.001)
        try:
            return fn()
        except OSError as e:
            raise InstrumentError("I2C device 0x%02x: %s" % (self.address, e)) from e
        finally:
            self.i2c.unlock()


class MCP4725(_I2CDevice):
    """12-bit DAC. Fast-write command: two bytes, power-down bits 00, code D11..D0."""

    def __init__(self, i2c, address=0x60, vref_mv=5000):
        super().__init__(i2c, address)
        self.vref_mv = vref_mv
        self.code = None

    def code_for_mv(self, mv):
        code = (int(mv) * 4096 + self.vref_mv // 2) // self.vref_mv
        return max(0, min(4095, code))

    def write_code(self, code):
        if not 0 <= code <= 4095:
            raise InstrumentError("MCP4725 code %d outside 0..4095" % code)
        buf = bytes(((code >> 8) & 0x0F, code & 0xFF))
        self._locked(lambda: self.i2c.writeto(self.address, buf))
        self.code = code

    def set_mv(self, mv):
        self.write_code(self.code_for_mv(mv))
        return self.code * self.vref_mv // 4096


class ADS1115(_I2CDevice):
    """16-bit ADC, single-shot conversions of one input against GND, PGA ±4.096 V
    (125 µV per count), 128 samples/s, comparator off."""

    REG_CONVERSION = 0x00
    REG_CONFIG = 0x01
    _OS = 0x8000
    _MUX_SINGLE = (0x4000, 0x5000, 0x6000, 0x7000)  # AIN0..AIN3 vs GND
    _PGA_4096 = 0x0200
    _MODE_SINGLE = 0x0100
    _DR_128 = 0x0080
    _COMP_OFF = 0x0003

    def __init__(self, i2c, address=0x48, channel=0, timeout_s=0.1):
        super().__init__(i2c, address)
        if channel not in range(4):
            raise InstrumentError("ADS1115 channel must be 0..3")
        self.channel = channel
        self.timeout_s = timeout_s

    def config_word(self):
        return (self._OS | self._MUX_SINGLE[self.channel] | self._PGA_4096 | self._MODE_SINGLE
                | self._DR_128 | self._COMP_OFF)

    def _read_reg(self, reg):
        out = bytearray(2)
        self._locked(lambda: self.i2c.writeto_then_readfrom(self.address, bytes((reg,)), out))
        return (out[0] << 8) | out[1]

    def read_raw(self):
        cfg = self.config_word()
        self._locked(lambda: self.i2c.writeto(self.address,
                                              bytes((self.REG_CONFIG, cfg >> 8, cfg & 0xFF))))
        end = time.monotonic() + self.timeout_s
        while not self._read_reg(self.REG_CONFIG) & self._OS:  # OS=1: conversion done
            if time.monotonic() > end:
                raise InstrumentError("ADS1115 conversion did not finish")
            time.sleep(0.001)
        raw = self._read_reg(self.REG_CONVERSION)
        return raw - 0x10000 if raw & 0x8000 else raw

    def read_mv(self):
        """Input in mV (rounded): 4096 mV full scale over 32768 counts = counts / 8."""
        raw = self.read_raw()
        return (raw + 4) // 8 if raw >= 0 else -((-raw + 4) // 8)


class Relay:
    """A relay on one adapter GPIO. `active_high`: the coil is energised by a high level."""

    def __init__(self, pin, active_high=True):
        self.pin = pin
        self.active_high = active_high
        self.energised = False

    def set(self, energise):
        self.pin.value = bool(energise) == self.active_high
        self.energised = bool(energise)


class EdgeCounter:
    """Counts rising edges of a (stretched) STEP level and files each under the DIR level seen
    with it. Fed with samples; keeps the largest gap between samples, and counts the gaps
    long enough to have swallowed a whole pulse (`overruns`)."""

    def __init__(self, stretch_us):
        self.stretch_us = stretch_us
        self.fwd = 0
        self.rev = 0
        self.samples = 0
        self.max_gap_us = 0
        self.overruns = 0
        self._level = None
        self._t_us = None

    def feed(self, step, direction, t_us):
        if self._t_us is not None:
            gap = t_us - self._t_us
            if gap > self.max_gap_us:
                self.max_gap_us = gap
            if gap >= self.stretch_us:
                self.overruns += 1
        self._t_us = t_us
        self.samples += 1
        if step and self._level is not None and not self._level:
            if direction:
                self.fwd += 1
            else:
                self.rev += 1
        self._level = bool(step)

    def max_rate_hz(self):
        """Highest step rate counted without loss at the worst gap seen: a pulse (stretched to
        stretch_us) must be seen high once and low once per period."""
        gap = max(self.max_gap_us, 1)
        return 1_000_000 // (self.stretch_us + gap)


class PollingStepCounter:
    """A thread that samples STEP and DIR as fast as the adapter answers.

    The firmware's STEP pulses are 5 µs wide, far shorter than a USB round trip, so the bench
    stretches each one with a monostable (74HC123, `stretch_us`, default 1000 µs) before the
    adapter's input. The loop's sample rate decides the maximum countable step rate (see
    EdgeCounter.max_rate_hz): an FT232H reads a pin in roughly 0.1-0.3 ms (about 1000 Hz of
    steps with a 1 ms stretch), an MCP2221 or u2if in 1-2 ms (use a 2 ms stretch: about
    250 Hz). The firmware's ceiling is max_step_hz = 200 Hz. Any gap as long as the stretch
    is an overrun: counts may be low, and steps() says so instead of returning them."""

    def __init__(self, step_pin, dir_pin, stretch_us=1000, clock_us=None):
        self.step_pin = step_pin
        self.dir_pin = dir_pin
        self.counter = EdgeCounter(stretch_us)
        self._clock_us = clock_us or (lambda: time.monotonic_ns() // 1000)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None

    def sample_once(self):
        s = self.step_pin.value
        d = self.dir_pin.value
        with self._lock:
            self.counter.feed(s, d, self._clock_us())

    def start(self):
        self._thread = threading.Thread(target=self._run, name="step-counter", daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            self.sample_once()

    def stop(self):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)

    def read(self):
        with self._lock:
            c = self.counter
            if c.overruns:
                raise InstrumentError(
                    "the STEP poller fell behind %d time(s) (worst gap %d us >= stretch %d us): "
                    "counts may be low; lengthen the stretch or use a faster adapter"
                    % (c.overruns, c.max_gap_us, c.stretch_us))
            return StepCount(c.fwd, c.rev)

    def stats(self):
        with self._lock:
            c = self.counter
            return {"samples": c.samples, "max_gap_us": c.max_gap_us, "overruns": c.overruns,
                    "max_rate_hz": c.max_rate_hz()}


# ---------------------------------------------------------------------------- bench backend

DEFAULT_PINS = {  # FT232H names; MCP2221 uses G0..G3, u2if a Pico's GP0..GP28
    "ft232h": {"step": "C0", "dir": "C1", "relay": "C2", "stall": "C3", "occlusion": "C4"},
    "mcp2221": {"step": "G0", "dir": "G1", "relay": "G2", "stall": "G3"},
    "u2if": {"step": "GP2", "dir": "GP3", "relay": "GP6", "stall": "GP7", "occlusion": "GP8"},
}


class RealTimeInstruments(Instruments):
    """What every bench shares, wherever its adapter is: real time (advance_s sleeps) and the
    balance on a serial port, zeroed when the instruments start."""

    target = "bench"

    def __init__(self):
        self._t0 = time.monotonic()
        self._balance = None
        self._balance_zero_ug = 0

    def _open_balance(self, port, baudrate=9600, timeout_s=5.0):
        from pumprig.balance import Balance

        self._balance = Balance(port, baudrate=int(baudrate), timeout=float(timeout_s))
        self._balance_zero_ug = self._balance.weigh_stable()

    def balance(self):
        return self._balance

    def advance_s(self, s):
        if s > 0:
            time.sleep(s)

    def now_s(self):
        return time.monotonic() - self._t0

    def close(self):
        if self._balance is not None:
            self._balance.close()
            self._balance = None


class BenchInstruments(RealTimeInstruments):
    """A real bench. `spec` is the rig's inventory entry (hil/rigs.toml).

    `modules` (board, digitalio, busio) may be given for tests; otherwise blinka is imported
    here, after the adapter's environment variable is set. `relay`: the power relay when it
    is not on the adapter (a labgrid place's `power` resource, pumprig_hil.farm.PlaceRelay);
    anything with set(energise) and `energised`."""

    target = "bench"

    def __init__(self, spec, modules=None, relay=None):
        super().__init__()
        self.spec = spec
        self.features = frozenset(spec.instruments)
        self._pins = {}
        self._i2c = None
        self.counter = None
        self.relay = relay
        self.dac = None
        self.adc = None
        self._forced_mv = None
        bat = spec.battery or {}
        self.nominal_mv = int(bat.get("nominal_mv", 3700))
        self.divider = (int(bat.get("div_num", 2)), int(bat.get("div_den", 1)))
        self.buffer_gain = (int(bat.get("gain_num", 1)), int(bat.get("gain_den", 1)))
        needs_gpio = self.features - {"balance"} - ({"power_relay"} if relay else set())
        if needs_gpio:
            self._setup_gpio(modules)
        if relay is not None:
            relay.set(False)  # the supply on
        if self.has("balance"):
            self._setup_balance()

    # ---- setup
    def _setup_gpio(self, modules):
        adapter = self.spec.adapter
        if modules is None:
            from .inventory import ADAPTERS

            env = ADAPTERS.get(adapter)
            if env and not any(os.environ.get(v) for v in ADAPTERS.values()):
                os.environ[env] = "1"
            try:
                import busio
                import digitalio

                import board
            except Exception as e:  # blinka raises plain errors when no adapter answers
                raise InstrumentError("cannot reach the %s adapter through blinka: %s"
                                      % (adapter, e)) from e
        else:
            board, digitalio, busio = modules
        pins = dict(DEFAULT_PINS.get(adapter, {}))
        pins.update(self.spec.pins or {})

        def pin(name, output):
            label = pins.get(name)
            if label is None or not hasattr(board, label):
                raise InstrumentError("rigs.toml %s: pin %r for %s is not a pin of the %s"
                                      % (self.spec.name, label, name, adapter))
            p = digitalio.DigitalInOut(getattr(board, label))
            p.direction = digitalio.Direction.OUTPUT if output else digitalio.Direction.INPUT
            self._pins[name] = p
            return p

        if self.has("steps"):
            sc = self.spec.step_counter or {}
            self.counter = PollingStepCounter(pin("step", False), pin("dir", False),
                                              int(sc.get("stretch_us", 1000)))
            self.counter.start()
        if self.has("power_relay") and self.relay is None:
            self.relay = Relay(pin("relay", True), bool(pins.get("relay_active_high", True)))
            self.relay.set(False)  # wired through the NC contact: de-energised = powered
        if self.has("stall_injection"):
            pin("stall", True).value = False
        if self.has("occlusion_injection"):
            pin("occlusion", True).value = False
        if self.has("battery_dac") or self.has("battery_adc"):
            i2c_cfg = self.spec.i2c or {}
            self._i2c = busio.I2C(board.SCL, board.SDA)
            if self.has("battery_dac"):
                self.dac = MCP4725(self._i2c, int(i2c_cfg.get("dac", 0x60)),
                                   int(i2c_cfg.get("dac_vref_mv", 5000)))
                self.set_battery_mv(None)
            if self.has("battery_adc"):
                self.adc = ADS1115(self._i2c, int(i2c_cfg.get("adc", 0x48)),
                                   int(i2c_cfg.get("adc_channel", 0)))

    def _setup_balance(self):
        b = self.spec.balance or {}
        self._open_balance(b["port"], b.get("baudrate", 9600), b.get("timeout_s", 5.0))

    # ---- the interface
    def steps(self):
        self._need("steps", "a STEP/DIR counter on the adapter")
        return self.counter.read()

    def battery_mv(self):
        if self.adc is not None:
            return self.adc.read_mv() * self.divider[0] // self.divider[1]
        return self._forced_mv if self._forced_mv is not None else None

    def set_battery_mv(self, mv):
        self._need("battery_dac", "an MCP4725 driving the battery line")
        target = self.nominal_mv if mv is None else int(mv)
        # the DAC drives the cell node through a buffer of gain num/den
        self.dac.set_mv(target * self.buffer_gain[1] // self.buffer_gain[0])
        self._forced_mv = None if mv is None else target

    def power_cut(self):
        self._need("power_relay", "a relay in the board's supply")
        self.relay.set(True)

    def power_on(self):
        self._need("power_relay", "a relay in the board's supply")
        self.relay.set(False)

    def powered(self):
        return self.relay is None or not self.relay.energised

    def occlude(self, on):
        self._need("occlusion_injection", "a pinch valve on the line")
        self._pins["occlusion"].value = bool(on)

    def stall(self, on):
        self._need("stall_injection", "a GPIO forcing the driver's DIAG line")
        self._pins["stall"].value = bool(on)

    def readings(self):
        out = {"target": "bench", "rig": self.spec.name, "now_s": round(self.now_s(), 3)}
        if self.counter is not None:
            out.update(self.counter.stats())
            c = self.counter.counter
            out.update({"steps_fwd": c.fwd, "steps_rev": c.rev})
        for k, fn in (("volume_nl", self.volume_nl), ("battery_mv", self.battery_mv)):
            try:
                out[k] = fn()
            except PumprigError as e:
                out[k] = "error: %s" % e
        if self.relay is not None:
            out["power"] = "cut" if self.relay.energised else "on"
        if self.dac is not None:
            out["dac_code"] = self.dac.code
        for name in ("stall", "occlusion"):
            if name in self._pins:
                out[name + "_forced"] = bool(self._pins[name].value)
        return out

    def close(self):
        if self.counter is not None:
            self.counter.stop()
        super().close()
        for p in self._pins.values():
            try:
                p.deinit()
            except Exception:  # a pin of an unplugged adapter; nothing left to release
                pass
        if self._i2c is not None:
            try:
                self._i2c.deinit()
            except Exception:  # same
                pass
