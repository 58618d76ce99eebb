# The virtual board's `machine`: the unix port's built-in module extended with what a Pico
# has (Pin, ADC, PWM, WDT, RTC, reset, unique_id, freq). Every read and write goes to the world.
import sys

import _world

_saved_path = sys.path[:]
sys.path[:] = []
try:
    import machine as _builtin  # with sys.path empty this is the built-in module
finally:
    sys.path[:] = _saved_path
del _saved_path

Signal = _builtin.Signal
PinBase = _builtin.PinBase
mem8 = _builtin.mem8
mem16 = _builtin.mem16
mem32 = _builtin.mem32
time_pulse_us = _builtin.time_pulse_us
idle = _builtin.idle

PWRON_RESET = 1
WDT_RESET = 3
SOFT_RESET = 5


def _pin_id(p):
    if isinstance(p, Pin):
        return p.id
    if isinstance(p, str):
        return int(p[2:]) if p.startswith("GP") else int(p)
    return int(p)


class Pin:
    IN = 0
    OUT = 1
    OPEN_DRAIN = 2
    ALT = 3
    PULL_UP = 1
    PULL_DOWN = 2
    IRQ_FALLING = 4
    IRQ_RISING = 8

    def __init__(self, id, mode=-1, pull=-1, value=None, **kw):
        self.id = _pin_id(id)
        self._mode = 0
        self.init(mode, pull, value)

    def init(self, mode=-1, pull=-1, value=None, **kw):
        if mode != -1:
            self._mode = mode
        if value is not None:
            self.value(value)

    def value(self, v=None):
        if v is None:
            return _world.pin_read(self.id)
        _world.pin_write(self.id, v)

    def __call__(self, v=None):
        return self.value(v)

    def on(self):
        _world.pin_write(self.id, 1)

    def off(self):
        _world.pin_write(self.id, 0)

    high = on
    low = off

    def toggle(self):
        self.value(0 if self.value() else 1)

    def irq(self, handler=None, trigger=0, hard=False):
        return None

    def __repr__(self):
        return "Pin(GPIO%d)" % self.id


class ADC:
    CORE_TEMP = 4

    def __init__(self, pin, **kw):
        self.id = _pin_id(pin)

    def read_u16(self):
        return _world.adc(self.id)

    def read_uv(self):
        return _world.adc(self.id) * 3300000 // 65535


class PWM:
    def __init__(self, pin, freq=0, duty_u16=0, **kw):
        self.id = _pin_id(pin)
        self._freq = freq
        self._duty = duty_u16
        self._send()

    def _send(self):
        _world.pwm(self.id, self._freq, self._duty)

    def init(self, freq=0, duty_u16=0, **kw):
        self._freq = freq
        self._duty = duty_u16
        self._send()

    def freq(self, f=None):
        if f is None:
            return self._freq
        self._freq = f
        self._send()

    def duty_u16(self, d=None):
        if d is None:
            return self._duty
        self._duty = d
        self._send()

    def deinit(self):
        self._freq = 0
        self._duty = 0
        self._send()


class WDT:
    def __init__(self, id=0, timeout=5000):
        _world.wdt_start(timeout)

    def feed(self):
        _world.feed()


class RTC:
    def __init__(self, id=0):
        pass

    def datetime(self, dt=None):
        if dt is None:
            import time
            t = time.gmtime(_world.epoch_s())
            # (year, month, day, weekday, hours, minutes, seconds, subseconds)
            return (t[0], t[1], t[2], t[6], t[3], t[4], t[5], 0)
        y, m = dt[0], dt[1]
        if m <= 2:
            y -= 1
        era = y // 400
        yoe = y - era * 400
        doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + dt[2] - 1
        days = era * 146097 + (yoe * 365 + yoe // 4 - yoe // 100 + doy) - 719468
        _world.set_epoch(days * 86400 + dt[4] * 3600 + dt[5] * 60 + dt[6])


def reset():
    _world.reset()


def soft_reset():
    _world.reset(soft=True)


def reset_cause():
    return PWRON_RESET


def unique_id():
    import binascii
    return binascii.unhexlify(_world.uid_hex)


def freq(hz=None):
    return 125000000


def disable_irq():
    return 0


def enable_irq(state=0):
    pass


def lightsleep(ms=0):
    _world.wait(_world.now_ms() + ms)


deepsleep = lightsleep


def bootloader():
    pass
