"""hw/common.py with fake pins, ADCs, clock and serial (no machine module involved)."""

import json
import sys
from pathlib import Path

import pytest

BOARD = Path(__file__).resolve().parents[2] / "board"
if str(BOARD) not in sys.path:
    sys.path.insert(0, str(BOARD))

from hw import common, setup  # noqa: E402

PICO = json.loads((BOARD / "boards" / "pico.json").read_text())


class FakePin:
    def __init__(self, v=0):
        self.v = v

    def value(self, v=None):
        if v is None:
            return self.v
        self.v = v


class FakeADC:
    def __init__(self, raw):
        self.raw = raw

    def read_u16(self):
        return self.raw


class FakePWM:
    def __init__(self):
        self.f, self.duty, self.calls = 0, 0, 0

    def freq(self, f):
        self.f = f
        self.calls += 1

    def duty_u16(self, d):
        self.duty = d


class FakeWDT:
    def __init__(self):
        self.fed = 0

    def feed(self):
        self.fed += 1


class FakeClock:
    """ticks_ms wrapping at 2**30 like the boards."""

    def __init__(self, start=0):
        self.t = start

    def ticks_ms(self):
        return self.t % common.TICKS_PERIOD_MS

    def ticks_us(self):
        return (self.t * 1000) % common.TICKS_PERIOD_MS

    def ticks_diff(self, a, b):
        half = common.TICKS_PERIOD_MS // 2
        return ((a - b + half) % common.TICKS_PERIOD_MS) - half

    def sleep_us(self, _us):
        pass


class FakeIO:
    def __init__(self, data=b"", clock=None):
        self.data = bytearray(data)
        self.out = bytearray()
        self.polls = []
        self.clock = clock

    def poll(self, t=0):
        self.polls.append(t)
        if self.data:
            return [(0, 1)]
        if self.clock is not None:
            self.clock.t += t
        return []

    def read(self, n):
        got = bytes(self.data[:n])
        del self.data[:n]
        return got

    def write(self, b):
        n = min(len(b), 3)  # a stream that takes a few bytes at a time
        self.out += bytes(b[:n])
        return n


def fake_parts(vbat=0, pressure=0):
    return {"dir": FakePin(), "en": FakePin(1), "ms1": FakePin(), "ms2": FakePin(),
            "diag": FakePin(), "led": FakePin(), "buzzer": FakePWM(),
            "vbat": FakeADC(vbat), "pressure": FakeADC(pressure), "wdt": FakeWDT()}


class FakeHWBoard(common.CommonBoard):
    """A step generator that records hardware segments and finishes them on demand."""

    _HW_MAX_US = 1_000_000

    def __init__(self, *a, **k):
        self.hw = []
        self.hw_running = False
        common.CommonBoard.__init__(self, *a, **k)

    def _hw_start(self, count, first_us, interval_us):
        self.hw.append((count, first_us, interval_us))
        self.hw_running = True

    def _hw_busy(self):
        return self.hw_running

    def _hw_stop(self):
        self.hw_running = False
        return 1


def board(parts=None, data=b"", clock=None, cls=FakeHWBoard, config=PICO):
    clock = clock or FakeClock(1000)
    io = FakeIO(data, clock)
    return cls(config, None, parts or fake_parts(), io=(io, io, io), clock=clock), io, clock


def test_battery_and_pressure_scaling():
    # 1.85 V at the tap of a 1:1 divider -> 3.7 V cell
    raw = 1850 * 65535 // 3300
    b, _, _ = board(fake_parts(vbat=raw, pressure=(330 + 500) * 65535 // 3300))
    assert abs(b.battery_mv() - 3700) <= 2
    assert b.line_kpa() == 50  # (830 - 330) mV / 10 mV per kPa
    assert common.pressure_kpa_from_mv(300, PICO) == -3
    assert common.battery_mv_from_raw(65535, PICO) == 6600


def test_outputs_and_driver_pins():
    parts = fake_parts()
    b, _, _ = board(parts)
    assert parts["en"].v == 1  # driver off after construction (EN active low)
    b.motor_enable(True)
    assert parts["en"].v == 0
    assert (parts["ms1"].v, parts["ms2"].v) == (0, 0)  # 8 microsteps
    b.set_microstep(32)
    assert (parts["ms1"].v, parts["ms2"].v) == (1, 0)
    with pytest.raises(ValueError):
        b.set_microstep(4)
    b.tone(880)
    b.tone(880)
    assert parts["buzzer"].f == 880 and parts["buzzer"].duty == 32768
    assert parts["buzzer"].calls == 1
    b.tone(0)
    assert parts["buzzer"].duty == 0
    b.led(True)
    assert parts["led"].v == 1
    assert not b.stalled()
    parts["diag"].v = 1
    assert b.stalled()


def test_now_ms_is_monotonic_across_tick_wrap():
    clock = FakeClock(common.TICKS_PERIOD_MS - 5)
    b, _, _ = board(clock=clock)
    t0 = b.now_ms()
    seen = [t0]
    for _ in range(4):
        clock.t += 3
        seen.append(b.now_ms())
    assert seen == [t0 + 3 * i for i in range(5)]
    clock.t += common.TICKS_PERIOD_MS // 3
    assert b.now_ms() == t0 + 12 + common.TICKS_PERIOD_MS // 3


def test_ds3231_conversion():
    # 2024-02-29 13:45:07 UTC, 24-hour mode, century bit clear
    regs = bytes([0x07, 0x45, 0x13, 0x05, 0x29, 0x02, 0x24])
    assert setup.ds3231_epoch_s(regs) == 1709214307
    # 12-hour mode: 01 PM
    regs12 = bytes([0x07, 0x45, 0x40 | 0x20 | 0x01, 0x05, 0x29, 0x02, 0x24])
    assert setup.ds3231_epoch_s(regs12) == 1709214307
    assert setup.days_from_civil(1970, 1, 1) == 0


class FakeI2C:
    def __init__(self, regs, osf=False, fail=False):
        self.regs, self.osf, self.fail = regs, osf, fail

    def readfrom_mem_into(self, addr, reg, buf):
        if self.fail:
            raise OSError(19)
        assert addr == 0x68
        if reg == 0x0F:
            buf[0] = 0x80 if self.osf else 0
        else:
            buf[:] = self.regs


def test_wall_clock_from_rtc():
    regs = bytes([0x07, 0x45, 0x13, 0x05, 0x29, 0x02, 0x24])
    b, _, _ = board()
    assert b.wall_epoch_s() is None  # no RTC configured
    for i2c, want in ((FakeI2C(regs), 1709214307), (FakeI2C(regs, osf=True), None),
                      (FakeI2C(regs, fail=True), None)):
        parts = fake_parts()
        parts["i2c"] = i2c
        b, _, _ = board(parts)
        assert b.wall_epoch_s() == want


def test_serial_read_write():
    b, io, _ = board(data=b"hello\n")
    assert b.read_serial() == b"hello\n"
    assert b.read_serial() == b""
    b.write_serial(b"0123456789")
    assert bytes(io.out) == b"0123456789"


def test_wait_feeds_watchdog_and_caps_poll():
    parts = fake_parts()
    b, io, clock = board(parts)
    start = b.now_ms()
    b.wait(start + 10_000)
    assert b.now_ms() >= start + 10_000
    assert max(io.polls) <= PICO["watchdog_ms"] // 4
    assert parts["wdt"].fed >= 10_000 // (PICO["watchdog_ms"] // 4)
    io.data += b"x"
    t = b.now_ms()
    b.wait(t + 5000)  # returns at once: input is readable
    assert b.now_ms() == t


def test_segment_fits_one_hardware_segment():
    b, _, _ = board()
    b.motor_start(40, 2000, 5000, True)
    assert b.hw == [(40, 2000, 5000)]
    assert b.motor_busy()
    b.hw_running = False
    assert not b.motor_busy()
    assert b.motor_stop() == 0
    with pytest.raises(ValueError):
        b.motor_start(0, 0, 100, True)


def test_long_gaps_are_split_into_sub_segments():
    b, _, clock = board()
    # 3 pulses 2.5 s apart, the first after 1.5 s: gaps beyond the 1 s hardware limit
    b.motor_start(3, 1_500_000, 2_500_000, True)
    assert b.hw == []  # nothing yet: first pulse is more than 1 s away
    assert b.motor_busy()
    made = 0
    for _ in range(8):
        b.wait(b.now_ms() + 10_000)
        if b.hw_running:
            b.hw_running = False  # the hardware made its one pulse
            made += 1
        if not b.motor_busy():
            break
    assert made == 3 and len(b.hw) == 3
    starts = [h[1] for h in b.hw]
    assert all(0 <= s <= 1_000_000 for s in starts)
    assert all(h[0] == 1 for h in b.hw)


def test_busy_segment_cannot_be_restarted():
    b, _, _ = board()
    b.motor_start(2, 10, 100, True)
    with pytest.raises(common.BoardError):
        b.motor_start(2, 10, 100, True)
    assert b.motor_stop() == 1
    b.motor_start(2, 10, 100, False)


class FakeMachine:
    """Timer ids the port accepts; `-1` (virtual) exists on the RP2040, not on the ESP32."""

    class Timer:
        PERIODIC = 1
        ids = (-1, 0, 1, 2, 3)
        made = []

        def __init__(self, tid):
            if tid not in FakeMachine.Timer.ids:
                raise ValueError("no such timer")
            self.tid = tid
            FakeMachine.Timer.made.append(self)

        def init(self, period, mode, callback):
            self.period, self.callback = period, callback


@pytest.mark.parametrize("ids, expect", [((-1, 0, 1, 2, 3), -1), ((0, 1, 2, 3), 3), ((), None)])
def test_watchdog_is_fed_from_a_timer_once_the_loop_is_left(ids, expect):
    FakeMachine.Timer.ids = ids
    FakeMachine.Timer.made = []
    parts = fake_parts()
    b, _io, _clock = board(parts)
    b._machine = FakeMachine
    b.feed_from_timer()
    if expect is None:
        assert b._feed_timer is None  # no timer: the watchdog will reset the board
        return
    t = b._feed_timer
    assert t.tid == expect and t.period == 1000
    fed = parts["wdt"].fed
    t.callback(t)
    assert parts["wdt"].fed == fed + 1
    b.feed_from_timer()  # idempotent
    assert len(FakeMachine.Timer.made) == 1
