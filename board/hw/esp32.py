"""ESP32 DevKit: step pulses from the RMT peripheral (fast segments) or a hardware Timer (slow).

RMT: clock_div 80 on the 80 MHz APB clock gives 1 µs units; one item lasts at most
``RMT.PULSE_MAX`` (32767) units, so a fast segment (interval up to ``_RMT_MAX_INTERVAL_US``)
is one list of items: the first delay split into <= 32767 µs lows, then a 5 µs high and an
(interval - 5) µs low per pulse. RMT cannot report progress, so an aborted RMT segment counts
the pulses whose rising edge time had passed when it was stopped (a pulse within a few tens of
µs of the stop can be miscounted by one; aborts are rare: stall, occlusion, therapy stop).

Timer: slower segments (and single pulses more than 32 ms away) use machine.Timer(0) ticking
every ms; the callback (``_on_tick``) counts down preallocated integers and toggles STEP: no
allocation, no floats, and the pulse count is exact. Pulse k is made at the ms tick
floor((first_us + k*interval_us) / 1000): never late, no drift. hw.common splits any gap
longer than ``_HW_MAX_US`` (2 s) into one-pulse sub-segments, so at implant rates (minutes
between pulses) the ms tick only runs for the last <= 2 s before each pulse.
"""

import esp32
import machine
from hw import common
from pumpcore import const

_RMT_CHANNEL = const(0)
_RMT_CLOCK_DIV = const(80)  # 80 MHz / 80 = 1 MHz: one unit = 1 µs
_RMT_PULSE_MAX = const(32767)
_RMT_MAX_INTERVAL_US = const(32000)  # one low item per gap
_PULSE_US = const(5)
_TICK_US = const(1000)
_TIMER_ID = const(0)


def rmt_items(count, first_us, interval_us):
    """(durations, levels) for RMT write_pulses mode 3, 1 µs units."""
    durations = []
    levels = []
    while first_us > 0:
        d = first_us if first_us < _RMT_PULSE_MAX else _RMT_PULSE_MAX
        durations.append(d)
        levels.append(0)
        first_us -= d
    low = interval_us - _PULSE_US
    for i in range(count):
        durations.append(_PULSE_US)
        levels.append(1)
        if i + 1 < count:
            durations.append(low)
            levels.append(0)
    return durations, levels


class ESP32Board(common.CommonBoard):
    """Board on an ESP32 DevKit (ADC1 pins only: ADC2 stops working while Wi-Fi runs)."""

    _HW_MAX_US = 2_000_000  # longer first delays are started later by hw.common

    def __init__(self, config, machine_module, parts, step_pin, timer, rmt_factory,
                 io=None, clock=None):
        self._step = step_pin
        self._timer = timer
        self._rmt_factory = rmt_factory
        self._rmt = None
        self._rmt_count = 0
        self._rmt_first_us = 0
        self._rmt_interval_us = 0
        self._rmt_t0_us = 0
        # Timer-path state, shared with _on_tick: all small ints, assigned here once
        self._left = 0
        self._made = 0
        self._wait_ticks = 0
        self._acc_us = 0
        self._interval_us = 0
        self._tick_cb = self._on_tick  # bind once: the timer must not allocate a bound method
        common.CommonBoard.__init__(self, config, machine_module, parts, io, clock)

    # --- the timer interrupt ------------------------------------------------------------------
    def _on_tick(self, _timer):
        if self._left <= 0:
            return
        self._wait_ticks -= 1
        if self._wait_ticks > 0:
            return
        self._step.value(1)
        self._made += 1
        self._left -= 1
        acc = self._acc_us + self._interval_us
        self._wait_ticks = acc // _TICK_US
        self._acc_us = acc - self._wait_ticks * _TICK_US
        self._step.value(0)  # the statements above take several µs: well over 100 ns

    # --- hardware segments ----------------------------------------------------------------
    def _hw_start(self, count, first_us, interval_us):
        if count > 1 and interval_us < _PULSE_US * 2:
            raise ValueError("interval_us too short")
        if count > 1:
            fast = interval_us <= _RMT_MAX_INTERVAL_US
        else:
            fast = first_us <= _RMT_MAX_INTERVAL_US
        if fast:
            self._start_rmt(count, first_us, interval_us)
        else:
            self._start_timer(count, first_us, interval_us)

    def _start_rmt(self, count, first_us, interval_us):
        durations, levels = rmt_items(count, first_us, interval_us)
        if self._rmt is None:
            self._rmt = self._rmt_factory()
        self._left = 0
        self._rmt_count = count
        self._rmt_first_us = first_us
        self._rmt_interval_us = interval_us
        self._rmt_t0_us = self._clock.ticks_us()
        self._rmt.write_pulses(durations, levels)

    def _start_timer(self, count, first_us, interval_us):
        self._release_rmt()
        self._rmt_count = 0
        self._step.init(self._machine.Pin.OUT, value=0)  # take the pin back from the RMT
        self._timer.deinit()
        self._interval_us = interval_us
        self._made = 0
        self._acc_us = first_us % _TICK_US
        self._wait_ticks = first_us // _TICK_US
        self._left = count
        if self._wait_ticks == 0:  # due now: make it here, then count ticks to the next one
            self._wait_ticks = 1
            self._on_tick(None)
        if self._left > 0:
            try:
                self._timer.init(mode=self._machine.Timer.PERIODIC, period=_TICK_US // 1000,
                                 callback=self._tick_cb, hard=True)
            except TypeError:  # a port without hard timer callbacks: scheduled (still no alloc)
                self._timer.init(mode=self._machine.Timer.PERIODIC, period=_TICK_US // 1000,
                                 callback=self._tick_cb)

    def _release_rmt(self):
        if self._rmt is not None:
            self._rmt.deinit()
            self._rmt = None

    def _hw_busy(self):
        rmt = self._rmt
        if self._rmt_count and rmt is not None:
            return not rmt.wait_done()
        return self._left > 0

    def _hw_stop(self):
        rmt = self._rmt
        if self._rmt_count and rmt is not None:
            done = rmt.wait_done()
            self._release_rmt()  # stops a transmission in progress
            self._step.init(self._machine.Pin.OUT, value=0)
            count = self._rmt_count
            self._rmt_count = 0
            if done:
                return count
            elapsed = self._clock.ticks_diff(self._clock.ticks_us(), self._rmt_t0_us)
            if elapsed < self._rmt_first_us:
                return 0
            made = (elapsed - self._rmt_first_us) // self._rmt_interval_us + 1
            return made if made < count else count
        self._timer.deinit()
        self._left = 0
        self._step.value(0)
        made = self._made
        self._made = 0
        return made

    def _adc_mv(self, adc):
        if hasattr(adc, "read_uv"):  # factory-calibrated µV (ESP-IDF eFuse calibration)
            total = 0
            for _ in range(4):
                total += adc.read_uv()
            return (total + 2000) // 4000
        return common.CommonBoard._adc_mv(self, adc)


def _adc(n):
    a = machine.ADC(machine.Pin(n))
    a.atten(machine.ADC.ATTN_11DB)  # about 0.15..2.45 V calibrated range (3.1 V full scale)
    return a


def make_board(config):
    """The Board for an ESP32 DevKit wired as boards/esp32.json (docs/wiring.md)."""
    from hw import setup  # power-on only: main.py drops it once the pump runs

    parts = setup.build_parts(config, machine, adc_factory=_adc)
    step_no = config["pins"]["step"]
    step = machine.Pin(step_no, machine.Pin.OUT, value=0)

    def rmt_factory():
        return esp32.RMT(_RMT_CHANNEL, pin=machine.Pin(step_no), clock_div=_RMT_CLOCK_DIV,
                         idle_level=False)

    return ESP32Board(config, machine, parts, step, machine.Timer(_TIMER_ID), rmt_factory)
