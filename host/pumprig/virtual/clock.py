"""The virtual rig's clock: world time in µs since the launcher started, real or warped.

In real time it follows the host's monotonic clock; in warp mode it stands still until the world
moves it (advance_to), which it does only as far as the firmware's wait deadlines allow. The
wall clock (the board's battery-backed RTC) is world time plus an offset the board may set.
"""

import time

US_PER_MS = 1000


class VirtualClock:
    def __init__(self, warp=False):
        self.warp = bool(warp)
        self._now_us = 0
        self._base_mono_ns = time.monotonic_ns()
        self.epoch_base_ms = int(time.time() * 1000)   # wall ms at world time 0

    def now_us(self):
        if self.warp:
            return self._now_us
        return self._now_us + (time.monotonic_ns() - self._base_mono_ns) // 1000

    def advance_to(self, t_us):
        """Warp: move time forward to t_us (never back). Real time moves by itself."""
        if self.warp:
            self._now_us = max(self._now_us, t_us)

    def set_warp(self, on):
        now = self.now_us()
        self._now_us = now
        self._base_mono_ns = time.monotonic_ns()
        self.warp = bool(on)

    def epoch_s(self):
        return (self.epoch_base_ms + self.now_us() // US_PER_MS) // 1000

    def set_epoch(self, epoch_s):
        self.epoch_base_ms = int(epoch_s) * 1000 - self.now_us() // US_PER_MS
