"""Hardware shared by every board: ADCs, buzzer, LED, driver pins, watchdog, clocks, serial.

``CommonBoard`` implements the whole ``Board`` interface (docs/architecture.md) except the
making of step pulses: a board module subclasses it and adds ``_hw_start``, ``_hw_busy`` and
``_hw_stop`` for one hardware segment (PIO on rp2, RMT/Timer on esp32, the world on sim).

The constructor is *given* its pins and peripherals (``parts``) and its I/O (``io``), so tests
pass fakes; ``hw.setup.build_parts(config, machine)`` makes the real ones from
boards/<name>.json.

A motor segment whose first delay or interval is longer than one hardware segment can time
(``_HW_MAX_US``) is split here into hardware sub-segments; the next one is started from
``motor_busy()``/``wait()``, which the app calls far more often than once per hardware span.
"""

from pumpcore import const

TICKS_PERIOD_MS = const(1 << 30)  # time.ticks_ms() wraps here on rp2, esp32 and unix
_ADC_FULL = const(65535)
_ADC_SAMPLES = const(4)
_DIR_SETUP_US = const(5)  # TMC2209 needs 20 ns DIR-to-STEP setup
_SERIAL_CHUNK = const(512)
_POLLIN = const(1)
_WAIT_CAP_MS = const(1000)  # longest single poll when there is no watchdog
_DS3231_ADDR = const(0x68)
_DS3231_STATUS = const(0x0F)
_DS3231_OSF = const(0x80)

# TMC2209 standalone microstep selection: (MS1, MS2) per microsteps (datasheet, table MS1/MS2)
MICROSTEP_PINS = {8: (0, 0), 16: (1, 1), 32: (1, 0), 64: (0, 1)}


class BoardError(Exception):
    """A hardware-layer request that cannot be carried out (e.g. a segment while busy)."""


def battery_mv_from_raw(raw_u16, config):
    """Cell voltage in mV from a read_u16 value at the divider tap."""
    return pin_mv_to_cell_mv((raw_u16 * config["adc_ref_mv"] + _ADC_FULL // 2) // _ADC_FULL, config)


def pin_mv_to_cell_mv(pin_mv, config):
    """Undo the divider: cell = pin * num / den, rounded to the nearest mV."""
    den = config["vbat_div_den"]
    return (pin_mv * config["vbat_div_num"] + den // 2) // den


def pressure_kpa_from_mv(mv, config):
    """Gauge pressure in kPa from the sensor output in mV (ratiometric, linear, can be < 0)."""
    p = config["pressure"]
    num = (mv - p["zero_mv"]) * p["kpa_per_mv_num"]
    den = p["kpa_per_mv_den"]
    if num >= 0:
        return (num + den // 2) // den
    return -((-num + den // 2) // den)


class CommonBoard:
    """Everything of ``Board`` but the step generator. Subclasses set ``_HW_MAX_US``."""

    _HW_MAX_US = 1_000_000_000  # longest first delay / interval of one hardware segment

    def __init__(self, config, machine, parts, io=None, clock=None):
        self.name = config["board"]
        self.config = config
        self.fs_prefix = ""
        self._machine = machine
        self._parts = parts
        self._dir = parts.get("dir")
        self._en = parts.get("en")
        self._diag = parts.get("diag")
        self._led = parts.get("led")
        self._buzzer = parts.get("buzzer")
        self._vbat = parts.get("vbat")
        self._pressure = parts.get("pressure")
        self._wdt = parts.get("wdt")
        self._i2c = parts.get("i2c")
        rtc = config.get("rtc") or {}
        self._rtc_addr = rtc.get("addr", _DS3231_ADDR)
        self._rtc_buf = bytearray(7)
        self._rtc_status = bytearray(1)
        if clock is None:
            import time as clock
        self._clock = clock
        self._last_ticks = clock.ticks_ms()
        self._now_ms = self._last_ticks  # ms since boot (ticks_ms starts at boot)
        wdt_ms = config.get("watchdog_ms", 0)
        self._wait_cap_ms = wdt_ms // 4 if (wdt_ms and self._wdt is not None) else _WAIT_CAP_MS
        if io is None:
            from hw.setup import default_io

            io = default_io()
        self._in, self._out, self._poller = io
        self._rx = bytearray(_SERIAL_CHUNK)
        self._rx_mv = memoryview(self._rx)
        self._freq_hz = 0
        self._feed_timer = None
        self._forward = None  # DIR as last driven (None: not yet)
        self._enabled = None  # EN as last driven
        # samples averaged per ADC reading: 4 on the boards' noisy ADCs, 1 on the virtual rig
        self._adc_n = config.get("adc_samples", _ADC_SAMPLES)
        self._seg_count = 0
        self._seg_first_us = 0
        self._seg_interval_us = 0
        self._seg_start_ms = 0
        self._made_before = 0
        self._hw_count = 0
        self._hw_on = False
        self.set_microstep(config.get("microstep", 8))
        self.motor_enable(False)
        # "stallguard": the driver confirmed its StallGuard settings over its UART, so DIAG
        # reports stalls; "off": confirmed, but with SGTHRS or TCOOLTHRS 0 (stall reporting
        # off); "no answer": a driver UART is configured but did not answer; None: no driver
        # UART, DIAG reports driver errors only (docs/wiring.md)
        self.stall_detect = None
        uart = parts.pop("driver_uart", None)  # needed at power-on only
        if uart is not None:
            from hw import tmc2209  # power-on only

            ms1, ms2 = MICROSTEP_PINS[config.get("microstep", 8)]
            du = config.get("driver_uart") or {}
            sg = du.get("sgthrs", 20)
            cool = du.get("tcoolthrs", 0xFFFFF)
            if not tmc2209.configure(uart, ms1 | ms2 << 1, sg, cool):
                self.stall_detect = "no answer"
            else:
                self.stall_detect = "stallguard" if sg and cool else "off"

    # --- time -----------------------------------------------------------------------------
    def now_ms(self) -> int:
        """Monotonic ms since boot: ticks_ms extended past its 2**30 wrap (call < 6 days apart)."""
        t = self._clock.ticks_ms()
        self._now_ms += self._clock.ticks_diff(t, self._last_ticks)
        self._last_ticks = t
        return self._now_ms

    def wall_epoch_s(self):
        """DS3231 time in s since 1970 (UTC), or None: no RTC, no answer, or oscillator stopped."""
        if self._i2c is None:
            return None
        try:
            self._i2c.readfrom_mem_into(self._rtc_addr, _DS3231_STATUS, self._rtc_status)
            if self._rtc_status[0] & _DS3231_OSF:
                return None
            self._i2c.readfrom_mem_into(self._rtc_addr, 0, self._rtc_buf)
        except OSError:
            return None
        from hw.setup import ds3231_epoch_s  # power-on only (see hw.setup)

        return ds3231_epoch_s(self._rtc_buf)

    def wait(self, deadline_ms: int) -> None:
        """Sleep until deadline_ms or serial input, feeding the watchdog; may return early."""
        while True:
            self.feed()
            self._service()
            now = self.now_ms()
            left = deadline_ms - now
            if left <= 0:
                return
            launch = self._launch_in_ms(now)
            if launch is not None and launch < left:
                left = launch if launch > 0 else 0
            if left > self._wait_cap_ms:
                left = self._wait_cap_ms
            if self._poller.poll(left):
                return

    # --- serial ---------------------------------------------------------------------------
    def read_serial(self) -> bytes:
        """What is readable now, without blocking (b"" if nothing)."""
        n = 0
        rx = self._rx
        while n < _SERIAL_CHUNK and self._poller.poll(0):
            got = self._in.read(1)
            if not got:
                break
            rx[n] = got[0]
            n += 1
        return bytes(self._rx_mv[:n])

    def write_serial(self, data: bytes) -> None:
        mv = memoryview(data)
        while len(mv):
            n = self._out.write(mv)
            if n is None:  # a stream that takes all or nothing
                break
            mv = mv[n:]

    # --- motor ----------------------------------------------------------------------------
    def set_microstep(self, microstep: int) -> None:
        """Drive MS1/MS2 for the TMC2209 (standalone mode: 8, 16, 32 or 64 microsteps)."""
        if microstep not in MICROSTEP_PINS:
            raise ValueError("TMC2209 microstep must be 8, 16, 32 or 64")
        ms1, ms2 = MICROSTEP_PINS[microstep]
        p1 = self._parts.get("ms1")
        p2 = self._parts.get("ms2")
        if p1 is not None:
            p1.value(ms1)
        if p2 is not None:
            p2.value(ms2)

    def motor_enable(self, on: bool) -> None:
        if self._en is not None and on != self._enabled:
            self._en.value(0 if on else 1)  # EN (ENN) low = driver on
        self._enabled = on

    def stalled(self) -> bool:
        return self._diag is not None and self._diag.value() == 1

    def motor_start(self, count: int, first_us: int, interval_us: int, forward: bool) -> None:
        """One segment from now: a pulse after first_us, then count-1 more every interval_us."""
        if self.motor_busy():
            raise BoardError("motor busy")
        if count < 1:
            raise ValueError("count must be >= 1")
        if first_us < 0 or interval_us < 0:
            raise ValueError("negative time")
        if self._dir is not None and forward != self._forward:
            self._dir.value(1 if forward else 0)
            self._clock.sleep_us(_DIR_SETUP_US)
        self._forward = forward
        self._seg_count = count
        self._seg_first_us = first_us
        self._seg_interval_us = interval_us
        self._seg_start_ms = self.now_ms()
        self._made_before = 0
        self._hw_on = False
        self._launch(0)

    def motor_busy(self) -> bool:
        """True while the segment runs. Once it has said False the segment is over and
        ``motor_stop`` returns 0 for it (the caller accounts the full count then)."""
        self._service()
        if self._made_before < self._seg_count:
            return True
        self._seg_count = 0
        self._made_before = 0
        return False

    def motor_stop(self) -> int:
        """Abort the segment; return the pulses it made (0 if motor_busy already said False)."""
        made = self._made_before
        if self._hw_on:
            made += self._hw_stop()
            self._hw_on = False
        self._seg_count = 0
        self._made_before = 0
        return made

    def _launch(self, elapsed_us):
        """Start the hardware for the next pulses if the next one is within _HW_MAX_US."""
        k = self._made_before
        until_us = self._seg_first_us + k * self._seg_interval_us - elapsed_us
        if until_us > self._HW_MAX_US:
            return False
        if until_us < 0:
            until_us = 0
        n = self._seg_count - k
        if self._seg_interval_us > self._HW_MAX_US:
            n = 1
        self._hw_count = n
        self._hw_on = True
        self._hw_start(n, until_us, self._seg_interval_us)
        return True

    def _service(self):
        """Account a finished hardware segment and start the next part of a long one."""
        if self._hw_on:
            if self._hw_busy():
                return
            self._made_before += self._hw_count
            self._hw_on = False
        if self._made_before < self._seg_count:
            # +1 ms: the ms clock reads up to 1 ms short, so a pulse is early, never late
            elapsed_us = (self.now_ms() - self._seg_start_ms + 1) * 1000
            self._launch(elapsed_us)

    def _launch_in_ms(self, now):
        """ms until a pending sub-segment must be started, or None."""
        if self._hw_on or self._made_before >= self._seg_count:
            return None
        due_us = self._seg_first_us + self._made_before * self._seg_interval_us - self._HW_MAX_US
        return (due_us // 1000) - (now - self._seg_start_ms)

    def _hw_start(self, count, first_us, interval_us):
        raise NotImplementedError

    def _hw_busy(self):
        raise NotImplementedError

    def _hw_stop(self):
        raise NotImplementedError

    # --- sensors and outputs ----------------------------------------------------------------
    def _adc_mv(self, adc):
        """mV at an ADC pin, mean of a few samples (esp32 overrides with read_uv)."""
        total = 0
        n = self._adc_n
        for _ in range(n):
            total += adc.read_u16()
        raw = (total + n // 2) // n
        return (raw * self.config["adc_ref_mv"] + _ADC_FULL // 2) // _ADC_FULL

    def battery_mv(self) -> int:
        if self._vbat is None:
            return 0
        return pin_mv_to_cell_mv(self._adc_mv(self._vbat), self.config)

    def line_kpa(self) -> int:
        if self._pressure is None:
            return 0
        return pressure_kpa_from_mv(self._adc_mv(self._pressure), self.config)

    def tone(self, freq_hz: int) -> None:
        if self._buzzer is None or freq_hz == self._freq_hz:
            return
        if freq_hz <= 0:
            self._buzzer.duty_u16(0)
            freq_hz = 0
        else:
            self._buzzer.freq(freq_hz)
            self._buzzer.duty_u16(32768)  # 50 %
        self._freq_hz = freq_hz

    def led(self, on: bool) -> None:
        if self._led is not None:
            self._led.value(1 if on else 0)

    def link_drops(self):
        """None: MicroPython shows no USB DTR state for the REPL's CDC port on rp2 or esp32,
        so the app ends a session after an idle time instead (docs/architecture.md)."""
        return None

    def feed(self) -> None:
        if self._wdt is not None:
            self._wdt.feed()

    def reset(self) -> None:
        self._machine.reset()

    def kbd_intr(self, on: bool) -> None:
        """Ctrl-C (0x03) on the serial line interrupts the firmware (on) or is plain data."""
        import micropython

        micropython.kbd_intr(3 if on else -1)

    def feed_from_timer(self) -> None:
        """The main loop was left on purpose (a Ctrl-C while it is allowed: therapy stopped, or
        after `maintenance`; mpremote, to flash or inspect): the RP2040 and ESP32 watchdogs
        cannot be stopped, so a timer keeps feeding it while the REPL is in use. A hang or a
        crash of the main loop never gets here (main.py resets the board) and nothing feeds
        the watchdog for a dead loop."""
        if self._wdt is None or self._feed_timer is not None:
            return
        # a virtual timer on the RP2040; the ESP32 has none, so its hardware timer 3 (timer 0
        # makes slow step segments)
        for tid in (-1, 3):
            try:
                t = self._machine.Timer(tid)
                t.init(period=1000, mode=self._machine.Timer.PERIODIC, callback=self._feed_tick)
                self._feed_timer = t
                return
            except (AttributeError, ValueError, OSError, TypeError):
                pass  # no such timer here: the watchdog resets the board, as before

    def _feed_tick(self, _t):
        self._wdt.feed()  # interrupt context: allocates nothing
