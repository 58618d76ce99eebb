# The virtual board's `machine`: the unix port's built-in module extended with what a Pico
# has (Pin, ADC, PWM, UART, WDT, RTC, reset, unique_id, freq). Every read and write goes to the
# world.
# A Pico's `machine` is C in flash; this one lives in the board's heap, so it keeps resident
# only what the firmware's loop uses (Pin, ADC, PWM, WDT, reset). What runs once at power-on,
# at the REPL or for maintenance (UART, RTC, unique_id, soft_reset, reset_cause, freq, the
# sleeps, the IRQ switches, and Pin's on, off, high, low, toggle and irq) is in shim/_uart.py
# and shim/_rare.py, loaded at each use by __getattr__ and let go again. Optional arguments a Pico takes positionally are *args (a
# default value costs a tuple and a larger function object); the built-in module's names are
# looked up on it rather than copied.
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
    if name != "soft_reset":            # the built-in's would not tell the world
        try:
            return getattr(_builtin, name)  # Signal, mem32, idle...
        except AttributeError:
            pass
    # shim/_uart.py (a board that opens a UART), shim/_rare.py (the rest): the board fs is the
    # root by now, so the shim's directory is mounted for the import, then let go
    import os
    import sys
    mod = "_uart" if name == "UART" else "_rare"
    os.mount(os.VfsPosix(os.getenv("PUMPRIG_SHIM")), "/.shim")
    sys.path.append("/.shim")
    try:
        m = __import__(mod)
    finally:
        sys.path.pop()
        os.umount("/.shim")
        sys.modules.pop(mod, None)  # gone with the last object that uses it
    return getattr(m, name)


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
        self.id = _world.pin_id(id)
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

    def __getattr__(self, name):
        # on, off, high, low, toggle, irq: shim/_rare.py's pin_<name> (the firmware drives its
        # pins with value()); `__getattr__` here is the module's, which loads _rare
        f = __getattr__("pin_" + name)
        return lambda *a, **kw: f(self, *a, **kw)

    def __repr__(self):
        return "Pin(GPIO%d)" % self.id


class ADC:
    CORE_TEMP = 4

    def __init__(self, pin, **kw):
        self.id = _world.pin_id(pin)

    def read_u16(self):
        return _world.read_in("A %d\n" % self.id, b" a%d:" % self.id)

    def read_uv(self):
        return self.read_u16() * 3300000 // 65535


class PWM:
    def __init__(self, pin, *args, **kw):
        self.id = _world.pin_id(pin)
        self.init(*args, **kw)

    def init(self, freq=0, duty_u16=0, **kw):
        self.f = freq
        self.d = duty_u16
        _world.hold("F %d %d %d\n" % (self.id, freq, duty_u16))   # freq 0: off

    def freq(self, *f):
        """freq() reads the frequency, freq(hz) sets it."""
        if not f:
            return self.f
        self.init(f[0], self.d)

    def duty_u16(self, *d):
        """duty_u16() reads the duty, duty_u16(d) sets it."""
        if not d:
            return self.d
        self.init(self.f, d[0])

    def deinit(self):
        self.init()


class WDT:
    def __init__(self, id=0, timeout=5000):
        _world.send("D %d\n" % timeout)

    def feed(self):
        _world.send("K\n")


reset = _world.reset        # takes no argument here: a crash may call it with the heap full
