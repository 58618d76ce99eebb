# The virtual board's `machine` names that run once at power-on, at the REPL or for
# maintenance (mpremote, flash): loaded by machine.__getattr__ at each use and let go again, so
# the firmware's heap never holds them while it runs. The world does the calendar: RTC.datetime
# sends the date as it is given and reads it back as the world formats it.
import _world

PWRON_RESET = 1
WDT_RESET = 3
SOFT_RESET = 5


def _none(*args, **kw):
    pass


enable_irq = bootloader = pin_irq = _none


def pin_on(pin):
    _world.pin_write(pin.id, 1)


def pin_off(pin):
    _world.pin_write(pin.id, 0)


pin_high = pin_on
pin_low = pin_off


def pin_toggle(pin):
    _world.pin_write(pin.id, not pin.value())


class RTC:
    def __init__(self, *args, **kw):
        pass

    def datetime(self, *dt):
        """datetime() reads the clock, datetime(tuple) sets it (UTC, a board's weekday order:
        (year, month, day, weekday, hours, minutes, seconds, subseconds))."""
        if not dt:
            return tuple(int(x) for x in _world._ask("r\n", 82)[2:].split())   # 'R y m d ...'
        dt = dt[0]
        _world.send("e %d %d %d %d %d %d\n" % (dt[0], dt[1], dt[2], dt[4], dt[5], dt[6]))


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


def lightsleep(*ms):
    _world.wait(_world.now_ms() + (ms[0] if ms else 0))


deepsleep = lightsleep
