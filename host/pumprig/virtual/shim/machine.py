# The virtual board's `machine`: the unix port's built-in module extended with what a Pico
# has (Pin, ADC, PWM, UART, WDT, RTC, reset, unique_id, freq). Every read and write goes to the
# world.
# A Pico's `machine` is C in flash; this one lives in the board's heap, so it is kept lean:
# optional arguments a Pico takes positionally are *args (a default value costs a tuple and a
# larger function object), rarely used code imports what it needs when called, and the
# built-in module's names are looked up on it rather than copied.
import sys

import _world

_p = sys.path[:]
sys.path[:] = []
try:
    import machine as _builtin  # with sys.path empty this is the built-in module
finally:
    sys.path[:] = _p
del _p, sys


def __getattr__(name):
    mod = "_uart" if name == "UART" else "_fs" if name == "Fs" else None
    if mod:
        # shim/_uart.py, loaded by a board that opens a UART and by no other; shim/_fs.py, by
        # the power-on once at the REPL: the board fs is the root by now, so the shim's
        # directory is mounted for the import, then let go
        import os
        import sys
        os.mount(os.VfsPosix(os.getenv("PUMPRIG_SHIM")), "/.shim")
        sys.path.append("/.shim")
        try:
            m = __import__(mod)
        finally:
            sys.path.pop()
            os.umount("/.shim")
            sys.modules.pop(mod, None)  # gone with the last object of its class
        return getattr(m, name)
    return getattr(_builtin, name)      # the built-in's too: Signal, mem32, idle...


PWRON_RESET = 1
WDT_RESET = 3
SOFT_RESET = 5


def _none(*args, **kw):
    pass


_pin_id = _world.pin_id


class Pin:
    IN = 0
    OUT = 1
    OPEN_DRAIN = 2
    ALT = 3
    PULL_UP = 1
    PULL_DOWN = 2
    IRQ_FALLING = 4
    IRQ_RISING = 8

    def __init__(self, id, *args, **kw):
        self.id = _pin_id(id)
        self.init(*args, **kw)

    def init(self, mode=-1, pull=-1, value=None, **kw):
        if value is not None:
            _world.pin_write(self.id, value)

    def value(self, *v):
        """value() reads the pin, value(v) drives it."""
        if not v:
            return _world.read_in("I %d\n" % self.id, b" i%d:" % self.id)
        _world.pin_write(self.id, v[0])

    __call__ = value
    irq = _none

    def on(self):
        _world.pin_write(self.id, 1)

    def off(self):
        _world.pin_write(self.id, 0)

    high = on
    low = off

    def toggle(self):
        _world.pin_write(self.id, not self.value())

    def __repr__(self):
        return "Pin(GPIO%d)" % self.id


class ADC:
    CORE_TEMP = 4

    def __init__(self, pin, **kw):
        self.id = _pin_id(pin)

    def read_u16(self):
        return _world.read_in("A %d\n" % self.id, b" a%d:" % self.id)

    def read_uv(self):
        return self.read_u16() * 3300000 // 65535


class PWM:
    def __init__(self, pin, *args, **kw):
        self.id = _pin_id(pin)
        self.init(*args, **kw)

    def init(self, freq=0, duty_u16=0, **kw):
        self._freq = freq
        self._duty = duty_u16
        _world.send("F %d %d %d\n" % (self.id, freq, duty_u16))   # freq 0: off

    def freq(self, *f):
        """freq() reads the frequency, freq(hz) sets it."""
        if not f:
            return self._freq
        self.init(f[0], self._duty)

    def duty_u16(self, *d):
        """duty_u16() reads the duty, duty_u16(d) sets it."""
        if not d:
            return self._duty
        self.init(self._freq, d[0])

    def deinit(self):
        self.init()


class WDT:
    def __init__(self, id=0, timeout=5000):
        _world.send("D %d\n" % timeout)

    def feed(self):
        _world.send("K\n")


class RTC:
    def datetime(self, *dt):
        """datetime() reads the clock, datetime(tuple) sets it (UTC, a board's weekday order:
        (year, month, day, weekday, hours, minutes, seconds, subseconds))."""
        if not dt:
            import time
            t = time.gmtime(_world.epoch_s())
            return (t[0], t[1], t[2], t[6], t[3], t[4], t[5], 0)
        dt = dt[0]
        y, m = dt[0], dt[1]
        if m <= 2:
            y -= 1
        era = y // 400
        yoe = y - era * 400
        doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + dt[2] - 1
        days = era * 146097 + (yoe * 365 + yoe // 4 - yoe // 100 + doy) - 719468
        _world.send("e %d\n" % (days * 86400 + dt[4] * 3600 + dt[5] * 60 + dt[6]))


def reset():
    _world.reset()


def soft_reset():
    _world.reset(True)


def reset_cause():
    return PWRON_RESET


def unique_id():
    import os
    return bytes.fromhex(os.getenv("PUMPRIG_UID") or "00" * 8)


def freq(*hz):
    return 125000000


def disable_irq():
    return 0


enable_irq = bootloader = _none


def lightsleep(*ms):
    _world.wait(_world.now_ms() + (ms[0] if ms else 0))


deepsleep = lightsleep
