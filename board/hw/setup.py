"""What a board needs once, at power-on: its pins and peripherals, the REPL stream, the RTC.

Kept out of hw.common so that main.py can drop it from the heap once the pump runs (like
pumpcore.clinician, it is loaded again if a later call needs it).
"""

import sys


def days_from_civil(y, m, d):
    """Days since 1970-01-01 of a proleptic Gregorian date (integer only)."""
    if m <= 2:
        y -= 1
    era = (y if y >= 0 else y - 399) // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _bcd(b):
    return (b >> 4) * 10 + (b & 0x0F)


def ds3231_epoch_s(regs):
    """Seconds since 1970 from DS3231 registers 0x00..0x06 (UTC, 24 h or 12 h mode)."""
    sec = _bcd(regs[0] & 0x7F)
    minute = _bcd(regs[1] & 0x7F)
    h = regs[2]
    if h & 0x40:  # 12-hour mode: bit 5 = PM
        hour = _bcd(h & 0x1F) % 12 + (12 if h & 0x20 else 0)
    else:
        hour = _bcd(h & 0x3F)
    day = _bcd(regs[4] & 0x3F)
    month = _bcd(regs[5] & 0x1F)
    year = 2000 + _bcd(regs[6]) + (100 if regs[5] & 0x80 else 0)
    return days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + sec


armed_wdt = None  # the watchdog hw.start armed before it imported the app (None: not yet)


def arm_watchdog(config, machine):
    """The watchdog of ``config["watchdog_ms"]``, started once (None when 0: bench only)."""
    global armed_wdt
    wdt_ms = config.get("watchdog_ms", 0)
    if armed_wdt is None and wdt_ms:
        armed_wdt = machine.WDT(timeout=wdt_ms)
    return armed_wdt


def build_parts(config, machine, adc_factory=None):
    """The pins and peripherals of ``config["pins"]`` as machine objects.

    ``adc_factory(pin_no)`` makes an ADC (esp32 passes one that sets the attenuation).
    A ``watchdog_ms`` of 0 leaves the watchdog off (bench only). An optional ``rtc`` entry
    ``{"i2c": id, "sda": pin, "scl": pin}`` adds a DS3231, an optional ``driver_uart`` entry
    ``{"id": uart, "tx": pin, "rx": pin}`` the TMC2209's UART (stall detection).
    """
    pins = config["pins"]
    Pin = machine.Pin
    if adc_factory is None:

        def adc_factory(n):
            return machine.ADC(Pin(n))

    parts = {
        "dir": Pin(pins["dir"], Pin.OUT, value=0),
        "en": Pin(pins["en"], Pin.OUT, value=1),  # TMC2209 EN is active low: start disabled
        "ms1": Pin(pins["ms1"], Pin.OUT, value=0),
        "ms2": Pin(pins["ms2"], Pin.OUT, value=0),
        "diag": Pin(pins["diag"], Pin.IN, Pin.PULL_DOWN),
        "led": Pin(pins["led"], Pin.OUT, value=0),
        "buzzer": machine.PWM(Pin(pins["buzzer"], Pin.OUT, value=0)),
        "vbat": adc_factory(pins["vbat_adc"]),
        "pressure": adc_factory(pins["pressure_adc"]),
    }
    parts["buzzer"].duty_u16(0)
    wdt = arm_watchdog(config, machine)
    if wdt is not None:
        parts["wdt"] = wdt
    rtc = config.get("rtc")
    if rtc:
        parts["i2c"] = machine.I2C(rtc["i2c"], sda=Pin(rtc["sda"]), scl=Pin(rtc["scl"]))
    du = config.get("driver_uart")
    if du:
        # TMC2209 PDN_UART (hw/tmc2209.py); 20 ms read timeout: a reply takes ~1 ms at 115200
        parts["driver_uart"] = machine.UART(du["id"], baudrate=du.get("baud", 115200),
                                            tx=Pin(du["tx"]), rx=Pin(du["rx"]), timeout=20)
    return parts


def default_io():
    """(stdin, stdout, poller) on the USB/UART REPL stream."""
    import select

    poller = select.poll()
    poller.register(sys.stdin, select.POLLIN)
    return sys.stdin.buffer, sys.stdout.buffer, poller
