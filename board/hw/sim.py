# Hardware layer of the virtual rig (the MicroPython unix port run by pumprig.virtual).
# Pins, ADC, PWM and the watchdog are hw.common's, made through `machine` (the rig's shim, the
# same API as a Pico). What has no machine API on the unix port goes through `_world`, the
# analog of the RP2040's PIO and timers: step segments, the clock, waiting. Serial is
# stdin/stdout, as on a Pico's USB REPL. Nothing here runs in interrupt context.
import termios

import _world
import machine
from hw import common


class _WorldClock:
    """ticks_ms/ticks_diff/sleep_us over the world's virtual clock (ms since this boot)."""

    def __init__(self):
        self.boot_ms = _world.boot_ms

    def ticks_ms(self):
        return _world.now_ms() - self.boot_ms

    def ticks_diff(self, a, b):
        return a - b

    def sleep_us(self, us):
        pass    # DIR setup time: the world applies the direction with the segment


class SimBoard(common.CommonBoard):
    _HW_MAX_US = 1_000_000_000  # the world times segments of any length; common splits beyond

    def __init__(self, config, parts):
        self._world_clock = _WorldClock()
        super().__init__(config, machine, parts, clock=self._world_clock)
        self._vmin = True  # the terminal may block a read until it is full (read_serial)

    def read_serial(self):
        """What the pty holds now, in one read (hw.common's loop of a poll and a one-byte read
        costs about 3 µs a byte on the unix port, and a signed request is some 70 bytes). The
        terminal is set to return at once with what it has (VMIN 0): after a round trip to the
        world, which applies kbd_intr to the same terminal by a read-modify-write of its
        attributes, so none of those is still under way. shim/_power.py sets VMIN back to 1
        before the REPL."""
        if not self._poller.poll(0):
            return b""
        if self._vmin:
            _world.epoch_s()  # a round trip: every kbd_intr sent before is applied
            self._vmin = False
        # checked at every read (5 µs): whatever else sets the terminal's attributes, a read
        # never waits for a full buffer
        a = termios.tcgetattr(0)
        cc = a[6]
        if cc[6] or cc[5]:  # VMIN, VTIME
            cc[6] = 0
            cc[5] = 0
            termios.tcsetattr(0, termios.TCSANOW, a)
        n = self._in.readinto(self._rx)
        return bytes(self._rx_mv[:n]) if n else b""

    def wall_epoch_s(self):
        return _world.epoch_s()         # the rig's battery-backed RTC

    def link_drops(self):
        """Times a host program closed the serial port (the launcher sees it with inotify on
        the pty and tells us before relaying the next program's bytes): a session ends with
        its link. No round trip."""
        return _world.link_drops()

    def wait(self, deadline_ms):
        """Sleep until deadline_ms or serial input. The world keeps the watchdog fed while we
        sleep (a board's wake-feed-sleep idle loop, done in O(1)); a firmware that stops
        coming back here is still reset by it."""
        self._service()
        if self._poller.poll(0):
            self.feed()
            return
        now = self.now_ms()
        launch = self._launch_in_ms(now)
        if launch is not None and now + launch < deadline_ms:
            deadline_ms = now + (launch if launch > 0 else 0)
        if self._hw_on and self._made_before + self._hw_count < self._seg_count:
            # a long segment's next part is started when this one ends (hw.common's wait
            # wakes every second for it; one sleep in the world would pass it by)
            end = self._hw_end_us // 1000 + 1 - self._world_clock.boot_ms
            if end < deadline_ms:
                deadline_ms = end
        if deadline_ms <= now:
            self.feed()
            return
        # sleep_fed feeds the watchdog as the wait starts and ends: no separate feed message
        boot = self._world_clock.boot_ms
        _world.sleep_fed(deadline_ms + boot)
        if _world.woke_by_serial:
            # the world wakes us as it relays the host's bytes; the pty may take a moment
            # to deliver them (wall time: virtual time stands still meanwhile)
            self._poller.poll(50)

    def feed_from_timer(self):
        """A board's timer feeding the watchdog at the REPL (hw.common): the world does it."""
        if self._wdt is not None:
            _world.send("k\n")

    def kbd_intr(self, on):
        """On the unix port kbd_intr(-1) would make 0x03 kill the process: the world turns
        the pty's ISIG off instead, so the byte arrives as data, as on a board."""
        _world.kbd_intr(on)
        self._vmin = True  # the world rewrites the terminal's attributes: check VMIN again

    def _hw_start(self, count, first_us, interval_us):
        _world.motor(count, first_us, interval_us, self._forward is not False)
        # when the last pulse is due, in world µs: like a PIO program's known duration, so
        # "busy?" needs no round trip to the world (which still counts every pulse itself)
        self._hw_end_us = (_world.now_ms() * 1000 + first_us + (count - 1) * interval_us)
        if not _world._frozen:
            # real time: our ms clock may lag the world's µs clock by up to 1 ms; never call
            # a segment done before the world has made its last pulse
            self._hw_end_us += 1000

    def _hw_busy(self):
        return _world.now_ms() * 1000 < self._hw_end_us

    def _hw_stop(self):
        return _world.motor_stop()


def make_board(config):
    from hw import setup  # power-on only: main.py drops it once the pump runs

    if "board" not in config:
        config = dict(config)
        config["board"] = "sim"
    return SimBoard(config, setup.build_parts(config, machine))
