"""The simulated world of a virtual rig: clock, stepper/plunger, battery, pressure, buzzer/LED,
watchdog and the balance, all living in the launcher process.

The firmware reaches the world through two pipes (fd 3 world->board, fd 4 board->world) with a
line protocol, one ASCII letter and space-separated integers per line; each world->board line
goes with a byte 0x80 + its length in front (wire.frame). Board -> world:

    W <deadline_ms>           wait; answered by exactly one "T <now_ms> <frozen>"
    w <deadline_ms>           the same, feeding the watchdog now and while asleep (the wake-
                              feed-sleep cycle of a board's idle loop, done by the world in O(1))
    N                         now -> "T <now_ms> <frozen>"

"T" carries frozen=1 in warp mode: time cannot move until the board's next wait, so the board
may use the value until then without asking again. In warp mode "T" also carries the inputs at
that instant, " i<pin>:<v>" for DIAG and " a<pin>:<u16>" for the ADCs: they cannot change while
time stands still, and the board reads them from there instead of asking (I, A) until its next
wait. A fault the host sets meanwhile shows at the next wait, the same virtual instant.
For the same reason the board holds its lines without an answer (O, F, M) while time stands
still and writes them in front of its next request, in one write: they apply at that instant.
    E                         wall clock -> "E <epoch_s>"

World -> board, unasked: "L <n>" when a host program has closed the serial port (n: times since
the rig started; the launcher sees it through inotify), written before the bytes of whoever
opens the port next are relayed. The board reads it without waiting (_world.link_drops) or
while it waits for an answer, and ends the session.
    e <y> <m> <d> <h> <min> <s>   set the wall clock, UTC (RTC.datetime(tuple); the world does
                              the calendar); "e <epoch_s>" sets it in s since 1970
    r                         the wall clock as a board's RTC gives it -> "R <y> <m> <d>
                              <weekday> <h> <min> <s> 0" (UTC, weekday 0 = Monday)
    M <n> <first_us> <interval_us> <fwd>   start a motor segment now (no answer)
    S                         stop the motor -> "P <pulses made by the aborted segment>"
    B                         motor busy -> "B 0|1"
    O <pin> <value>           drive a pin (no answer)
    I <pin>                   read a pin -> "V <0|1>"
    A <pin>                   ADC sample -> "V <u16>"
    F <pin> <freq_hz> <duty_u16>   PWM (no answer; freq 0 = deinit)
    D <timeout_ms>            start the watchdog (no answer)
    K                         feed the watchdog (no answer)
    k                         a timer feeds the watchdog from now until the next reset (a
                              board left at the REPL on purpose, hw.common.feed_from_timer)
    R                         machine.reset() (the world restarts the interpreter)
    Z                         machine.soft_reset()
    Q                         the boot script dropped to the REPL (no firmware loop running)
    C <0|1>                   Ctrl-C on the serial line raises KeyboardInterrupt (1) or is data (0)
    u <tx_pin> <rx_pin>       machine.UART opened on these pins (no answer)
    U <hex>                   UART write (no answer)
    G <n>                     UART read of up to n bytes, all there are (up to 60) if n < 0
                              -> "H <hex>" (just "H" when nothing came)
    Y                         UART bytes waiting -> "V <n>"

Physics conventions: the driver is enabled when its EN pin is driven low (TMC2209, active low;
an undriven pin is pulled high, so a reset disables the driver). A pulse moves the plunger one
step in its segment's direction when the driver is enabled and not stalled. Volumes are kept in
pL internally and reported in nL.

The parts live in their own modules: the clock (clock.py), the stepper and plunger
(stepper.py), the TMC2209 and its UART (driver.py), the battery and pressure inputs (analog.py)
and the pipes' framing (wire.py). World ties them together: it answers the board's messages,
keeps the watchdog, moves warp time (advance) and reports measurements.
"""

import calendar
import json
import os
import time

from pumprig.virtual.analog import Analog
from pumprig.virtual.clock import US_PER_MS, VirtualClock
from pumprig.virtual.driver import Driver
from pumprig.virtual.stepper import Stepper
from pumprig.virtual.wire import Wire, parse, t_line

DEFAULT_CONFIG = {
    "board": "sim",
    "pins": {"step": 2, "dir": 3, "en": 4, "ms1": 5, "ms2": 6, "diag": 7, "buzzer": 15,
             "led": 25, "vbat_adc": 26, "pressure_adc": 27},
    "microstep": 8, "step_pl": 250000, "adc_ref_mv": 3300, "vbat_div_num": 2,
    "vbat_div_den": 1,
    "pressure": {"kpa_per_mv_num": 1, "kpa_per_mv_den": 10, "zero_mv": 330, "occlusion_kpa": 100},
    "watchdog_ms": 8000,
}

DENSITY_UG_PER_UL = 998
HISTORY = 32


def load_config(path=None):
    """The sim board config (board/boards/sim.json), defaults for anything missing."""
    cfg = json.loads(json.dumps(DEFAULT_CONFIG))
    if path and os.path.exists(path):
        with open(path) as f:
            user = json.load(f)
        for k, v in user.items():
            if isinstance(v, dict) and isinstance(cfg.get(k), dict):
                cfg[k].update(v)
            else:
                cfg[k] = v
    return cfg


class World:
    """Physics and time. `rig` is the launcher: it owns the interpreter process and the ptys
    and provides restart(mode, cause), power_cut(), set_isig(bool), board_eof()."""

    def __init__(self, config, rig=None, warp=False, balance_seed=0):
        self.cfg = config
        self.rig = rig
        pins = config["pins"]
        self.pin_en = pins.get("en")
        self.pin_diag = pins.get("diag")
        self.pin_led = pins.get("led")
        self.pin_buzzer = pins.get("buzzer")
        self.clock = VirtualClock(warp)
        self.wire = Wire()
        self.stepper = Stepper(config.get("step_pl", 250000), self.driver_enabled)
        self.driver = Driver(config)
        self.analog = Analog(config)
        # board session
        self.pending_w_us = None
        self.keep_fed = False
        self.serial_pending = False
        self.state = "off"          # off | booting | running | repl
        self.advance_req = None     # (target_us, callback, wall_deadline)
        self._in_progress = False
        self.pins = {}
        # outputs
        self.buzzer_hz = 0
        self.pwm = {}
        self.history = []
        # watchdog
        self.wdt_timeout_ms = None
        self.wdt_timer_fed = False
        self.wdt_feed_us = 0
        self.garble_waits = 0   # fault injection: answer this many waits with a garbled T line
        # wall-clock ms the firmware spent between two waits (its longest step: what the
        # watchdog timeout must cover) and from power-on to its first wait (boot)
        self.max_step_ms = 0
        self.max_boot_ms = 0
        self._last_back_ns = None
        self._attach_ns = 0
        self.wdt_contact_ns = 0
        self.resets = {}
        self.boots = 0
        self.link_drops = 0  # the host closed the serial port (the launcher counts)
        self.kill_at_us = None
        self.messages = 0
        self.balance = None
        try:
            from pumprig.virtual.balance import VirtualBalance
            self.balance = VirtualBalance(balance_seed)
        except Exception:       # the balance module is optional: answer "ES" without it
            self.balance = None

    # ---- clock -------------------------------------------------------------------------
    @property
    def warp(self):
        return self.clock.warp

    def now_us(self):
        return self.clock.now_us()

    def set_warp(self, on):
        self.clock.set_warp(on)

    def epoch_s(self):
        return self.clock.epoch_s()

    def set_epoch(self, epoch_s):
        self.clock.set_epoch(epoch_s)

    # ---- the wire ----------------------------------------------------------------------
    @property
    def to_board(self):
        return self.wire.to_board

    @property
    def from_board(self):
        return self.wire.from_board

    # ---- board session -------------------------------------------------------------------
    def attach(self, to_board, from_board):
        """A new interpreter started (power on or any reset)."""
        self.wire.attach(to_board, from_board)
        self.pending_w_us = None
        self.keep_fed = False
        self.serial_pending = False
        self.driver.board_reset()
        self.state = "booting"
        self.wdt_timeout_ms = None
        self.wdt_timer_fed = False
        self.boots += 1
        self._attach_ns = time.monotonic_ns()
        self._last_back_ns = None

    def detach(self, cause=None):
        """The interpreter stopped (killed or exited): the hardware resets at this instant."""
        t = self.now_us()
        self.stepper.abort(t)
        self.pins = {}
        self.pwm = {}
        self._output_change(t)
        self.wire.detach()
        self.pending_w_us = None
        self.state = "off"
        self.wdt_timeout_ms = None
        self.driver.board_reset()
        if cause in ("power", "kill_at"):
            self.driver.power_cut()   # a power cut: the driver loses its setup
        if cause:
            self.resets[cause] = self.resets.get(cause, 0) + 1

    def link_dropped(self):
        """A host program closed the port: count it and tell the board now."""
        self.link_drops += 1
        self.wire.send(b"L %d\n" % self.link_drops)

    def _t_line(self, serial=False):
        """The time answer (wire.t_line). In warp mode its tail holds DIAG and the ADC inputs
        at this frozen instant: the board reads them from there until its next wait instead of
        asking (they cannot change while time stands still), a third of the round trips."""
        inputs = []
        if self.warp:
            if self.pin_diag is not None:
                inputs.append((b"i", self.pin_diag, self.diag()))
            for pin in (self.analog.pin_vbat, self.analog.pin_pressure):
                if pin is not None:
                    inputs.append((b"a", pin, self.adc_u16(pin)))
        return t_line(self.now_us() // US_PER_MS, self.warp, serial, inputs)

    def _answer_w(self, serial=False):
        self._last_back_ns = time.monotonic_ns()   # the firmware's step starts now
        if self.keep_fed:
            self.wdt_feed_us = self.now_us()
            self.wdt_contact_ns = time.monotonic_ns()
            self.keep_fed = False
        serial = serial or self.serial_pending
        self.pending_w_us = None
        self.serial_pending = False
        if self.garble_waits > 0:
            # the board's clock read fails inside its wait (int() of garbage raises in the
            # shim): an exception in the firmware's loop, with no hook in the firmware
            self.garble_waits -= 1
            self.wire.send(b"T garbled\n")
            return
        self.wire.send(self._t_line(serial))

    def serial_from_host(self):
        """The relay forwarded host bytes to the board: wake a waiting firmware now."""
        if self.pending_w_us is not None:
            self._answer_w(serial=True)
        else:
            self.serial_pending = True

    def on_board_readable(self):
        """Read and handle what the board sent. Returns False on EOF."""
        if not self.wire.read():
            return False
        while True:
            line = self.wire.next_line()
            if line is None:
                break
            self.handle(line)
            if self.from_board is None:      # the message reset the board
                break
        return True

    def handle(self, line):
        self.messages += 1
        op, args = parse(line)
        if op is None:
            return
        send = self.wire.send
        if op == b"U":
            self.driver.write(args, self.driver_node())
            return
        if op == b"W" or op == b"w":
            t = time.monotonic_ns()
            if self._last_back_ns is not None:
                self.max_step_ms = max(self.max_step_ms, (t - self._last_back_ns) // 1000000)
                self._last_back_ns = None
            elif self.state == "booting":
                self.max_boot_ms = max(self.max_boot_ms, (t - self._attach_ns) // 1000000)
            self.wdt_contact_ns = t
            if op == b"w":
                self.keep_fed = True
                self.wdt_feed_us = self.now_us()
            if self.state != "running":
                self.state = "running"
            d_us = args[0] * US_PER_MS
            if self.serial_pending or d_us <= self.now_us():
                self._answer_w()
            else:
                self.pending_w_us = d_us
                if self.warp:
                    self.progress()
                else:
                    self.tick()
        elif op == b"N":
            send(self._t_line())
        elif op == b"E":
            send(b"E %d\n" % self.epoch_s())
        elif op == b"e":
            # the RTC set with (year, month, day, hours, minutes, seconds) UTC, or epoch s
            self.set_epoch(calendar.timegm(tuple(args[:6]) + (0, 0, 0)) if len(args) >= 6
                           else args[0])
        elif op == b"r":
            t = time.gmtime(self.epoch_s())
            send(b"R %d %d %d %d %d %d %d 0\n" % (t[0], t[1], t[2], t[6], t[3], t[4], t[5]))
        elif op == b"M":
            self.motor_start(args[0], args[1], args[2], bool(args[3]))
        elif op == b"S":
            send(b"P %d\n" % self.motor_stop())
        elif op == b"B":
            send(b"B %d\n" % (1 if self.motor_busy() else 0))
        elif op == b"O":
            self.pin_write(args[0], args[1])
        elif op == b"I":
            send(b"V %d\n" % self.pin_read(args[0]))
        elif op == b"A":
            send(b"V %d\n" % self.adc_u16(args[0]))
        elif op == b"F":
            self.pwm_set(args[0], args[1], args[2])
        elif op == b"D":
            self.wdt_timeout_ms = max(1, args[0])
            self.wdt_feed_us = self.now_us()
            self.wdt_contact_ns = time.monotonic_ns()
        elif op == b"K":
            self.wdt_feed_us = self.now_us()
            self.wdt_contact_ns = time.monotonic_ns()
        elif op == b"k":
            self.wdt_timer_fed = True
        elif op == b"R":
            self._reset("machine", "power")
        elif op == b"Z":
            self._reset("soft", "soft")
        elif op == b"Q":
            self.state = "repl"
            if self.warp:
                self.progress()
        elif op == b"C":
            if self.rig is not None:
                self.rig.set_isig(bool(args[0]))
        elif op == b"u":
            self.driver.open_uart(args[0], args[1])
        elif op == b"G":
            got = self.driver.read(args[0] if 0 <= args[0] < 60 else 60)  # a framed line
            send(b"H %s\n" % got.hex().encode() if got else b"H\n")
        elif op == b"Y":
            send(b"V %d\n" % len(self.driver.rx))

    def _reset(self, cause, mode):
        if self.rig is not None:
            self.rig.restart(mode, cause)
        else:
            self.detach(cause)

    # ---- time-driven events --------------------------------------------------------------
    def wdt_expiry_us(self):
        if self.wdt_timeout_ms is None or self.wdt_timer_fed or \
                (self.keep_fed and self.pending_w_us is not None):
            return None
        return self.wdt_feed_us + self.wdt_timeout_ms * US_PER_MS

    def next_timeout_s(self):
        """How long the launcher may sleep before tick() has something to do."""
        cands = []
        if self.advance_req is not None:
            cands.append(0.005 if self.warp else self._until(self.advance_req[0]))
        if not self.warp:
            if self.pending_w_us is not None:
                cands.append(self._until(self.pending_w_us))
            e = self.wdt_expiry_us()
            if e is not None:
                cands.append(self._until(e))
            if self.kill_at_us is not None and self.state != "off":
                cands.append(self._until(self.kill_at_us))
        if self.wdt_timeout_ms is not None and self.pending_w_us is None and \
                self.state in ("running", "booting"):
            left = self.wdt_contact_ns + self.wdt_timeout_ms * 1000000 - time.monotonic_ns()
            cands.append(max(0.0, left / 1e9))
        return min(cands) if cands else None

    def _until(self, t_us):
        return max(0.0, (t_us - self.now_us()) / 1e6)

    def tick(self):
        """Fire whatever is due now (wall-time watchdog, real-time deadlines, advances)."""
        if self.wdt_timeout_ms is not None and self.pending_w_us is None and \
                self.state in ("running", "booting"):
            if time.monotonic_ns() - self.wdt_contact_ns > self.wdt_timeout_ms * 1000000:
                self._reset("wdt_hang", "power")
                return
        if self.warp:
            if self.advance_req is not None:
                self.progress()
            return
        now = self.now_us()
        if self.kill_at_us is not None and self.state != "off" and now >= self.kill_at_us:
            self.kill_at_us = None
            if self.rig is not None:
                self.rig.power_cut("kill_at")
            return
        e = self.wdt_expiry_us()
        if e is not None and now >= e:
            self._reset("wdt", "power")
            return
        if self.pending_w_us is not None and now >= self.pending_w_us:
            self._answer_w()
        if self.advance_req is not None and now >= self.advance_req[0]:
            req, self.advance_req = self.advance_req, None
            req[1](None)

    def start_advance(self, target_us, done, timeout_s):
        """Warp: grant firmware deadlines up to target_us, then freeze there. done(err) is
        called once (err None on success)."""
        if self.advance_req is not None:
            done("an advance is already running")
            return
        self.advance_req = (target_us, done, time.monotonic() + timeout_s)
        if self.warp:
            self.progress()
        else:
            self.tick()

    def progress(self):
        """Warp: move time as far as the firmware lets us. Runs a short burst of round trips
        with the board, then returns to the launcher loop."""
        if not self.warp or self.advance_req is None or self._in_progress:
            return
        self._in_progress = True
        try:
            self._progress()
        finally:
            self._in_progress = False

    def _progress(self):
        burst_end = time.monotonic() + 0.02
        while self.advance_req is not None:
            target = self.advance_req[0]
            if self.state == "off" or self.state == "repl" or self.pending_w_us is not None:
                t = target
                if self.pending_w_us is not None:
                    t = min(t, self.pending_w_us)
                e = self.wdt_expiry_us()
                if e is not None and self.state != "off":
                    t = min(t, e)
                k = self.kill_at_us if self.state != "off" else None
                if k is not None:
                    t = min(t, k)
                self.clock.advance_to(t)
                if k is not None and t >= k:
                    self.kill_at_us = None
                    if self.rig is not None:
                        self.rig.power_cut("kill_at")
                    else:
                        self.detach("kill_at")
                    continue
                if e is not None and self.state != "off" and t >= e:
                    self._reset("wdt", "power")
                    continue
                if self.pending_w_us is not None and t >= self.pending_w_us:
                    self._answer_w()
                    if not self._await_board(burst_end):
                        return
                    continue
                if self.now_us() >= target:
                    req, self.advance_req = self.advance_req, None
                    req[1](None)
                    return
                continue
            # booting or running: the firmware is computing; time stands still meanwhile
            if time.monotonic() > self.advance_req[2]:
                req, self.advance_req = self.advance_req, None
                req[1]("the firmware did not come back to wait before the advance timed out")
                return
            if not self._await_board(burst_end):
                return

    def _await_board(self, burst_end):
        """Wait briefly for the board's next message and handle it (the fast path of warp)."""
        import select
        fd = self.from_board
        if fd is None:
            return self.state == "off"
        left = burst_end - time.monotonic()
        if left <= 0:
            return False
        r, _, _ = select.select([fd], [], [], left)
        if not r:
            return False
        if not self.on_board_readable():
            if self.rig is not None:
                self.rig.board_eof()
            return False
        return True

    # ---- motor and plunger ---------------------------------------------------------------
    def driver_enabled(self):
        return self.pins.get(self.pin_en, 1) == 0

    def settle(self):
        self.stepper.settle(self.now_us())

    def motor_start(self, count, first_us, interval_us, forward):
        self.stepper.start(self.now_us(), count, first_us, interval_us, forward)

    def motor_stop(self):
        return self.stepper.abort(self.now_us())

    def motor_busy(self):
        return self.stepper.busy(self.now_us())

    @property
    def stall(self):
        return self.stepper.stall

    # ---- pins, PWM -----------------------------------------------------------------------
    def pin_write(self, pin, value):
        self.settle()
        old = self.pins.get(pin)
        self.pins[pin] = 1 if value else 0
        if pin == self.pin_led and old != self.pins[pin]:
            self._output_change(self.now_us())

    def pin_read(self, pin):
        if pin == self.pin_diag:
            return self.diag()
        return self.pins.get(pin, 0)

    def pwm_set(self, pin, freq, duty):
        self.pwm[pin] = (freq, duty) if freq else None
        if pin == self.pin_buzzer:
            self._output_change(self.now_us())

    def _output_change(self, t_us):
        buz = self.pwm.get(self.pin_buzzer)
        hz = buz[0] if buz and buz[1] else 0
        led = self.pins.get(self.pin_led, 0)
        if self.history and self.history[-1][1:] == (hz, led):
            return
        self.buzzer_hz = hz
        self.history.append((t_us // US_PER_MS, hz, led))
        del self.history[:-HISTORY]

    # ---- the driver (TMC2209) ------------------------------------------------------------
    def diag(self):
        return 1 if self.stepper.stall and self.driver.stallguard() else 0

    def driver_node(self):
        pins = self.cfg["pins"]
        return (self.pins.get(pins.get("ms1"), 0) & 1) | (self.pins.get(pins.get("ms2"), 0) & 1) << 1

    def driver_status(self):
        """The driver's registers by name (None: the rig has no driver UART)."""
        return self.driver.status()

    # ---- analog inputs -------------------------------------------------------------------
    def battery_mv(self):
        if self.analog.battery_forced_mv is not None:
            return self.analog.battery_forced_mv
        self.settle()
        s = self.stepper
        return self.analog.battery_mv(self.now_us() // US_PER_MS, s.pulses_fwd + s.pulses_rev)

    def pressure_kpa(self):
        self.settle()
        return self.analog.pressure_kpa(self.stepper.held_pl)

    def adc_u16(self, pin):
        a = self.analog
        if pin == a.pin_vbat:
            return a.u16(pin, self.battery_mv(), 0)
        if pin == a.pin_pressure:
            return a.u16(pin, 0, self.pressure_kpa())
        return 0

    # ---- faults --------------------------------------------------------------------------
    def fault(self, stall=None, occlusion=None, battery_mv=None, true_step_pl=None,
              kill_at_ms=None, clear_battery=False, garble_waits=None):
        self.settle()
        s = self.stepper
        if garble_waits is not None:
            self.garble_waits = max(0, int(garble_waits))
        if stall is not None:
            s.stall = bool(stall)
        if occlusion is not None:
            s.set_occlusion(occlusion)
        if battery_mv is not None:
            self.analog.battery_forced_mv = int(battery_mv)
        if clear_battery:
            self.analog.battery_forced_mv = None
        if true_step_pl is not None:
            s.true_step_pl = int(true_step_pl)
        if kill_at_ms is not None:
            self.kill_at_us = int(kill_at_ms) * US_PER_MS

    # ---- measurements --------------------------------------------------------------------
    def mass_ug(self):
        self.settle()
        return self.stepper.volume_out_nl() * DENSITY_UG_PER_UL // 1000

    def measure(self):
        self.settle()
        s = self.stepper
        return {
            "time_ms": self.now_us() // US_PER_MS,
            "time_us": self.now_us(),
            "epoch_s": self.epoch_s(),
            "pulses_fwd": s.pulses_fwd,
            "pulses_rev": s.pulses_rev,
            "steps_net": s.steps_net,
            "volume_out_nl": s.volume_out_nl(),
            "plunger_nl": s.plunger_pl // 1000,
            "held_nl": s.held_pl // 1000,
            "pressure_kpa": self.pressure_kpa(),
            "battery_mv": self.battery_mv(),
            "buzzer_hz": self.buzzer_hz,
            "led": self.pins.get(self.pin_led, 0),
            "enabled": self.driver_enabled(),
            "motor_busy": self.motor_busy(),
            "resets": dict(self.resets),
            "boots": self.boots,
            "mass_ug": s.volume_out_nl() * DENSITY_UG_PER_UL // 1000,
            "diag": self.diag(),
            "driver_regs": self.driver_status(),
        }

    def status(self):
        s = self.stepper
        return {
            "time_ms": self.now_us() // US_PER_MS,
            "warp": self.warp,
            "state": self.state,
            "waiting": self.pending_w_us is not None,
            "deadline_ms": None if self.pending_w_us is None else self.pending_w_us // US_PER_MS,
            "wdt_timeout_ms": self.wdt_timeout_ms,
            "stall": s.stall,
            "diag": self.diag(),
            "driver_regs": self.driver_status(),
            "occlusion": s.occlusion,
            "battery_forced_mv": self.analog.battery_forced_mv,
            "true_step_pl": s.true_step_pl,
            "kill_at_ms": None if self.kill_at_us is None else self.kill_at_us // US_PER_MS,
            "garble_waits": self.garble_waits,
            "max_step_ms": self.max_step_ms,
            "max_boot_ms": self.max_boot_ms,
            "segments": len(s.segments),
            "history": [list(h) for h in self.history],
            "resets": dict(self.resets),
            "boots": self.boots,
            "messages": self.messages,
            "link_drops": self.link_drops,
        }

    def segment_log(self, since=0):
        self.settle()
        return self.stepper.log(since)

    # ---- balance -------------------------------------------------------------------------
    def balance_respond(self, line):
        if self.balance is None:
            return b"ES\r\n"
        return self.balance.respond(line, self.now_us() // US_PER_MS, self.mass_ug())
