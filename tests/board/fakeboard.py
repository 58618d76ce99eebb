"""A Board for unit tests of the app: exact pulse timing, time set by the test.

It implements the hardware interface of docs/architecture.md with no I/O. Pulses of a segment
happen at start_us + first_us + i * interval_us, as the world of the virtual rig counts them.
"""


class FakeBoard:
    def __init__(self, config=None, root=""):
        self.config = config or {
            "board": "sim", "step_pl": 250_000, "reservoir_nl": 20_000_000,
            "pump_path_nl": 200_000, "max_step_hz": 200, "pullin_step_hz": 50,
            "max_segment_nl": 10_000,
            "battery": {"eri_mv": 3300, "eos_mv": 3000, "brownout_mv": 2800, "hyst_mv": 50,
                        "debounce": 8, "sample_ms": 3_600_000},
            "pressure": {"occlusion_kpa": 100}, "tones": {"hi_hz": 880, "lo_hz": 660},
        }
        self.fs_prefix = root
        self.uid = "f00dfeed"
        self.t_ms = 0
        self.rx = b""
        self.tx = b""
        self.seg = None  # (start_us, count, first_us, interval_us)
        self.pulses = 0  # settled pulses of finished or stopped segments
        self.mv = 3600
        self.kpa = 0
        self.stall = False
        self.tones = []
        self.led_state = False
        self.rtc = None
        self.kbd = None  # Ctrl-C interrupts (True) or is data (False), as the app last set it
        self.resets = 0

    # time
    def now_ms(self):
        return self.t_ms

    def wall_epoch_s(self):
        return self.rtc

    def wait(self, deadline_ms):
        pass

    # serial
    def read_serial(self):
        d, self.rx = self.rx, b""
        return d

    def write_serial(self, data):
        self.tx += data

    # motor
    def _done(self, t_us):
        if self.seg is None:
            return 0
        start, count, first, interval = self.seg
        el = t_us - start - first
        if el < 0:
            return 0
        n = el // interval + 1 if interval else count
        return n if n < count else count

    def pulses_at(self, t_ms):
        return self.pulses + self._done(t_ms * 1000)

    def motor_start(self, count, first_us, interval_us, forward):
        assert self.seg is None or self._done(self.t_ms * 1000) == self.seg[1], "segment overlap"
        if self.seg is not None:
            self.pulses += self.seg[1]
        self.seg = (self.t_ms * 1000, count, first_us, interval_us)

    def motor_busy(self):
        return self.seg is not None and self._done(self.t_ms * 1000) < self.seg[1]

    def motor_stop(self):
        if self.seg is None:
            return 0
        n = self._done(self.t_ms * 1000)
        self.pulses += n
        self.seg = None
        return n

    def motor_enable(self, on):
        pass

    def stalled(self):
        return self.stall

    def battery_mv(self):
        return self.mv

    def line_kpa(self):
        return self.kpa

    def tone(self, f):
        self.tones.append((self.t_ms, f))
        if len(self.tones) > 64:
            self.tones.pop(0)

    def led(self, on):
        self.led_state = on

    def feed(self):
        pass

    def reset(self):
        self.resets += 1

    def kbd_intr(self, on):
        self.kbd = on


def run_until(app, b, t_end):
    """Drive the app like board/main.py does, with the fake board's clock, up to t_end."""
    while True:
        nxt = app.deadline_ms
        if nxt > t_end:
            b.t_ms = t_end
            app.step(t_end)
            return
        b.t_ms = nxt
        app.step(nxt)
