"""The simulated world of a virtual rig: clock, stepper/plunger, battery, pressure, buzzer/LED,
watchdog and the balance, all living in the launcher process.

The firmware reaches the world through two pipes (fd 3 world->board, fd 4 board->world) with a
line protocol, one ASCII letter and space-separated integers per line. Board -> world:

    W <deadline_ms>           wait; answered by exactly one "T <now_ms> <frozen>"
    w <deadline_ms>           the same, feeding the watchdog now and while asleep (the wake-
                              feed-sleep cycle of a board's idle loop, done by the world in O(1))
    N                         now -> "T <now_ms> <frozen>"

"T" carries frozen=1 in warp mode: time cannot move until the board's next wait, so the board
may use the value until then without asking again. In warp mode "T" also carries the inputs at
that instant, " i<pin>:<v>" for DIAG and " a<pin>:<u16>" for the ADCs: they cannot change while
time stands still, and the board reads them from there instead of asking (I, A) until its next
wait. A fault the host sets meanwhile shows at the next wait, the same virtual instant.
    E                         wall clock -> "E <epoch_s>"

World -> board, unasked: "L <n>" when a host program has closed the serial port (n: times since
the rig started; the launcher sees it through inotify), written before the bytes of whoever
opens the port next are relayed. The board reads it without waiting (_world.link_drops) or
while it waits for an answer, and ends the session.
    e <epoch_s>               set the wall clock (RTC.datetime(tuple))
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
    G <n>                     UART read of up to n bytes, all there are if n < 0 -> "H <hex>"
                              (just "H" when nothing came)
    Y                         UART bytes waiting -> "V <n>"

Physics conventions: the driver is enabled when its EN pin is driven low (TMC2209, active low;
an undriven pin is pulled high, so a reset disables the driver). A pulse moves the plunger one
step in its segment's direction when the driver is enabled and not stalled. Volumes are kept in
pL internally and reported in nL.

The driver's UART (config "driver_uart": {"tx", "rx"}; TMC2209 datasheet, UART interface): a
UART opened on those pins reaches PDN_UART, so every byte written comes back (the echo), then
the driver's reply to a valid read request for its node (MS1 + 2 * MS2 as the pins are driven).
Valid write datagrams set the register and count in IFCNT (mod 256); a bad sync, node or CRC is
ignored, as the driver does. Each write() is one burst on the wire: the bus idles between them
(the driver drops a partial datagram there). The registers keep their values across resets of
the board and return to their power-on values at a power cut. DIAG reports a stall only when
StallGuard is set up (SGTHRS and TCOOLTHRS non-zero, GCONF pdn_disable set, en_spreadCycle
clear); without "driver_uart" in the config there is no driver UART to emulate and DIAG reports
every stall, as the world did before it had one.
"""

import json
import os
import time

US_PER_MS = 1000

DEFAULT_CONFIG = {
    "board": "sim",
    "pins": {"step": 2, "dir": 3, "en": 4, "ms1": 5, "ms2": 6, "diag": 7, "buzzer": 15,
             "led": 25, "vbat_adc": 26, "pressure_adc": 27},
    "microstep": 8, "step_pl": 250000, "adc_ref_mv": 3300, "vbat_div_num": 2,
    "vbat_div_den": 1,
    "pressure": {"kpa_per_mv_num": 1, "kpa_per_mv_den": 10, "zero_mv": 330, "occlusion_kpa": 100},
    "watchdog_ms": 8000,
}

BATTERY_START_MV = 3650
# A 5-7 year cell: about 0.2 mV a day at implant rates takes 3650 mV to ERI (3300) in ~5 years.
DRAIN_UV_PER_DAY = 150          # self-discharge and electronics, µV per day
DRAIN_NV_PER_STEP = 60          # motor load, nV per step
COMPLIANCE_NL_PER_KPA = 20      # line compliance behind an occlusion
DENSITY_UG_PER_UL = 998
HISTORY = 32
MS_PER_DAY = 86400000

# TMC2209 registers (datasheet): the power-on values of those the emulation keeps, their widths
DRV_GCONF, DRV_GSTAT, DRV_IFCNT, DRV_TCOOLTHRS, DRV_SGTHRS = 0x00, 0x01, 0x02, 0x14, 0x40
DRV_POWER_ON = {DRV_GCONF: 0x101, DRV_GSTAT: 0x1, DRV_IFCNT: 0, DRV_TCOOLTHRS: 0, DRV_SGTHRS: 0}
DRV_WRITABLE = {DRV_GCONF: 0x3FF, DRV_GSTAT: 0x7, DRV_TCOOLTHRS: 0xFFFFF, DRV_SGTHRS: 0xFF}
DRV_READABLE = (DRV_GCONF, DRV_GSTAT, DRV_IFCNT)    # TCOOLTHRS and SGTHRS are write-only
DRV_NAMES = {DRV_GCONF: "GCONF", DRV_GSTAT: "GSTAT", DRV_IFCNT: "IFCNT",
             DRV_TCOOLTHRS: "TCOOLTHRS", DRV_SGTHRS: "SGTHRS"}
GCONF_SPREADCYCLE = 0x04
GCONF_PDN_DISABLE = 0x40


def tmc_crc8(data):
    """The TMC2209's CRC8: x^8 + x^2 + x + 1, each byte fed LSB first."""
    crc = 0
    for b in data:
        for _ in range(8):
            if ((crc >> 7) ^ b) & 1:
                crc = ((crc << 1) ^ 0x07) & 0xFF
            else:
                crc = (crc << 1) & 0xFF
            b >>= 1
    return crc


def driver_hears(regs, data, node):
    """What a TMC2209 with registers `regs` does with bytes on its UART: valid writes to this
    node set the register (masked to its width; GSTAT: write 1 to clear) and count in IFCNT;
    valid read requests are answered (write-only registers read 0). Returns the replies. A
    byte that does not start a valid datagram ends the bytes it looks at (the driver waits for
    the bus to idle)."""
    out = b""
    i = 0
    while len(data) - i >= 4:
        d = data[i:i + 8] if data[i + 2] & 0x80 else data[i:i + 4]
        if len(d) < (8 if data[i + 2] & 0x80 else 4) or d[0] & 0x0F != 0x05 or \
                d[-1] != tmc_crc8(d[:-1]):
            break
        i += len(d)
        if d[1] != node:
            continue
        reg = d[2] & 0x7F
        if len(d) == 8:
            if reg in DRV_WRITABLE:
                v = int.from_bytes(d[3:7], "big") & DRV_WRITABLE[reg]
                if reg == DRV_GSTAT:
                    v = regs[reg] & ~v
                regs[reg] = v
            regs[DRV_IFCNT] = (regs[DRV_IFCNT] + 1) & 0xFF
        else:
            v = regs.get(reg, 0) if reg in DRV_READABLE else 0
            reply = bytes((0x05, 0xFF, reg)) + v.to_bytes(4, "big")
            out += reply + bytes((tmc_crc8(reply),))
    return out


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


class Segment:
    """One motor segment: pulse i at start_us + first_us + i * interval_us, i < count."""

    __slots__ = ("index", "start_us", "count", "first_us", "interval_us", "forward",
                 "end", "settled")

    def __init__(self, index, start_us, count, first_us, interval_us, forward):
        self.index = index
        self.start_us = start_us
        self.count = count
        self.first_us = first_us
        self.interval_us = max(1, interval_us)
        self.forward = forward
        self.end = None         # pulses made when aborted (None: ran or runs to completion)
        self.settled = 0        # pulses already applied to the plunger

    def limit(self):
        return self.count if self.end is None else self.end

    def pulses_at(self, t_us):
        """Pulses made by time t_us (a pulse exactly at t_us counts)."""
        t = t_us - self.start_us - self.first_us
        if t < 0:
            return 0
        return min(self.limit(), t // self.interval_us + 1)

    def last_pulse_us(self):
        n = self.limit()
        if n <= 0:
            return self.start_us
        return self.start_us + self.first_us + (n - 1) * self.interval_us

    def as_dict(self):
        return {"index": self.index, "start_us": self.start_us, "count": self.count,
                "first_us": self.first_us, "interval_us": self.interval_us,
                "forward": self.forward, "made": self.limit() if self.end is not None else None,
                "aborted": self.end is not None}


class World:
    """Physics and time. `rig` is the launcher: it owns the interpreter process and the ptys
    and provides restart(mode, cause), power_cut(), set_isig(bool)."""

    def __init__(self, config, rig=None, warp=False, balance_seed=0):
        self.cfg = config
        self.rig = rig
        pins = config["pins"]
        self.pin_en = pins.get("en")
        self.pin_diag = pins.get("diag")
        self.pin_led = pins.get("led")
        self.pin_buzzer = pins.get("buzzer")
        self.pin_vbat = pins.get("vbat_adc")
        self.pin_pressure = pins.get("pressure_adc")
        # clock
        self.warp = warp
        self._now_us = 0
        self._base_mono_ns = time.monotonic_ns()
        self.epoch_base_ms = int(time.time() * 1000)   # wall ms at world time 0
        # board link
        self.to_board = None        # fd we write answers to
        self.from_board = None      # fd we read requests from
        self._rbuf = b""
        self.pending_w_us = None
        self.keep_fed = False
        self.serial_pending = False
        self.state = "off"          # off | booting | running | repl
        self.advance_req = None     # (target_us, callback, wall_deadline)
        self._in_progress = False
        # motor
        self.segments = []
        self.true_step_pl = config.get("step_pl", 250000)
        self.pulses_fwd = 0
        self.pulses_rev = 0
        self.steps_net = 0
        self.plunger_pl = 0
        self.held_pl = 0
        self.released_pl = 0
        self.stall = False
        self.occlusion = False
        self.battery_forced_mv = None
        self.pins = {}
        # the driver's UART (None: the rig has none, DIAG reports every stall)
        du = config.get("driver_uart")
        self.driver_uart = (du.get("tx"), du.get("rx")) if isinstance(du, dict) else None
        self.uart_wired = False     # the board's UART is open on the driver's pins
        self.uart_rx = bytearray()  # what the board's UART has received and not read
        self.driver_regs = dict(DRV_POWER_ON)
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
    def now_us(self):
        if self.warp:
            return self._now_us
        return self._now_us + (time.monotonic_ns() - self._base_mono_ns) // 1000

    def _set_now(self, t_us):
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

    # ---- board session -------------------------------------------------------------------
    def attach(self, to_board, from_board):
        """A new interpreter started (power on or any reset)."""
        self.to_board = to_board
        self.from_board = from_board
        if from_board is not None:
            # non-blocking: a warp burst may already have read what select() reported
            os.set_blocking(from_board, False)
        self._rbuf = b""
        self.pending_w_us = None
        self.keep_fed = False
        self.serial_pending = False
        self.uart_wired = False
        self.uart_rx = bytearray()
        self.state = "booting"
        self.wdt_timeout_ms = None
        self.wdt_timer_fed = False
        self.boots += 1
        self._attach_ns = time.monotonic_ns()
        self._last_back_ns = None

    def detach(self, cause=None):
        """The interpreter stopped (killed or exited): the hardware resets at this instant."""
        t = self.now_us()
        self._abort_motor(t)
        self.pins = {}
        self.pwm = {}
        self._output_change(t)
        self.to_board = None
        self.from_board = None
        self.pending_w_us = None
        self.state = "off"
        self.wdt_timeout_ms = None
        self.uart_wired = False
        self.uart_rx = bytearray()
        if cause in ("power", "kill_at"):
            self.driver_regs = dict(DRV_POWER_ON)   # a power cut: the driver loses its setup
        if cause:
            self.resets[cause] = self.resets.get(cause, 0) + 1

    def link_dropped(self):
        """A host program closed the port: count it and tell the board now."""
        self.link_drops += 1
        self._send(b"L %d\n" % self.link_drops)

    def _send(self, line):
        if self.to_board is None:
            return
        try:
            os.write(self.to_board, line)
        except OSError:
            pass

    def _t_line(self, serial=False):
        """'T <now_ms> <frozen> <serial> [i<pin>:<v> a<pin>:<v> ...]': serial=1 when host bytes
        woke the board (they may still be on their way through the pty: the board waits
        briefly for them). In warp mode the tail holds DIAG and the ADC inputs at this frozen
        instant: the board reads them from here until its next wait instead of asking (they
        cannot change while time stands still), a third of the round trips of a run."""
        head = b"T %d %d %d" % (self.now_us() // US_PER_MS, 1 if self.warp else 0,
                                1 if serial else 0)
        if not self.warp:
            return head + b"\n"
        tail = b""
        if self.pin_diag is not None:
            tail += b" i%d:%d" % (self.pin_diag, self.diag())
        for pin in (self.pin_vbat, self.pin_pressure):
            if pin is not None:
                tail += b" a%d:%d" % (pin, self.adc_u16(pin))
        return head + tail + b"\n"

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
            self._send(b"T garbled\n")
            return
        self._send(self._t_line(serial))

    def serial_from_host(self):
        """The relay forwarded host bytes to the board: wake a waiting firmware now."""
        if self.pending_w_us is not None:
            self._answer_w(serial=True)
        else:
            self.serial_pending = True

    def on_board_readable(self):
        """Read and handle what the board sent. Returns False on EOF."""
        try:
            data = os.read(self.from_board, 65536)
        except BlockingIOError:
            return True  # already consumed by a warp burst: nothing new
        except (OSError, TypeError):
            return False
        if not data:
            return False
        self._rbuf += data
        while True:
            i = self._rbuf.find(b"\n")
            if i < 0:
                break
            line = self._rbuf[:i]
            self._rbuf = self._rbuf[i + 1:]
            self.handle(line)
            if self.from_board is None:      # the message reset the board
                break
        return True

    def handle(self, line):
        self.messages += 1
        parts = line.split()
        if not parts:
            return
        op = parts[0]
        if op == b"U":
            self.uart_write(bytes.fromhex(parts[1].decode()) if len(parts) > 1 else b"")
            return
        args = [int(p) for p in parts[1:]]
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
            self._send(self._t_line())
        elif op == b"E":
            self._send(b"E %d\n" % self.epoch_s())
        elif op == b"e":
            self.set_epoch(args[0])
        elif op == b"M":
            self.motor_start(args[0], args[1], args[2], bool(args[3]))
        elif op == b"S":
            self._send(b"P %d\n" % self.motor_stop())
        elif op == b"B":
            self._send(b"B %d\n" % (1 if self.motor_busy() else 0))
        elif op == b"O":
            self.pin_write(args[0], args[1])
        elif op == b"I":
            self._send(b"V %d\n" % self.pin_read(args[0]))
        elif op == b"A":
            self._send(b"V %d\n" % self.adc_u16(args[0]))
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
            self.uart_wired = (self.driver_uart is not None
                               and (args[0], args[1]) == self.driver_uart)
            self.uart_rx = bytearray()
        elif op == b"G":
            n = len(self.uart_rx) if args[0] < 0 else min(args[0], len(self.uart_rx))
            got = bytes(self.uart_rx[:n])
            del self.uart_rx[:n]
            self._send(b"H %s\n" % got.hex().encode() if got else b"H\n")
        elif op == b"Y":
            self._send(b"V %d\n" % len(self.uart_rx))

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
                self._set_now(t)
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

    def _settle(self, t_us):
        """Apply the pulses made up to t_us under the current conditions."""
        if not self.segments:
            return
        seg = self.segments[-1]
        n = seg.pulses_at(t_us)
        new = n - seg.settled
        if new <= 0:
            return
        seg.settled = n
        if seg.forward:
            self.pulses_fwd += new
        else:
            self.pulses_rev += new
        if not self.driver_enabled() or self.stall:
            return
        d_pl = new * self.true_step_pl
        if seg.forward:
            self.steps_net += new
            self.plunger_pl += d_pl
            if self.occlusion:
                self.held_pl += d_pl
        else:
            self.steps_net -= new
            self.plunger_pl -= d_pl
            if self.held_pl:
                self.held_pl = max(0, self.held_pl - d_pl)

    def settle(self):
        self._settle(self.now_us())

    def motor_start(self, count, first_us, interval_us, forward):
        t = self.now_us()
        self._abort_motor(t)
        seg = Segment(len(self.segments), t, max(0, count), max(0, first_us), interval_us,
                      forward)
        self.segments.append(seg)

    def _abort_motor(self, t_us):
        self._settle(t_us)
        if not self.segments:
            return 0
        seg = self.segments[-1]
        if seg.end is None and seg.pulses_at(t_us) < seg.count:
            seg.end = seg.pulses_at(t_us)
            return seg.end
        return seg.pulses_at(t_us)

    def motor_stop(self):
        return self._abort_motor(self.now_us())

    def motor_busy(self):
        if not self.segments:
            return False
        seg = self.segments[-1]
        return seg.pulses_at(self.now_us()) < seg.limit()

    # ---- pins, ADC, PWM ------------------------------------------------------------------
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

    # ---- the driver (TMC2209) ------------------------------------------------------------
    def stallguard(self):
        """DIAG reports a stall: StallGuard set up over the UART, or no driver UART at all."""
        if self.driver_uart is None:
            return True
        r = self.driver_regs
        return bool(r[DRV_SGTHRS] and r[DRV_TCOOLTHRS] and r[DRV_GCONF] & GCONF_PDN_DISABLE
                    and not r[DRV_GCONF] & GCONF_SPREADCYCLE)

    def diag(self):
        return 1 if self.stall and self.stallguard() else 0

    def driver_node(self):
        pins = self.cfg["pins"]
        return (self.pins.get(pins.get("ms1"), 0) & 1) | (self.pins.get(pins.get("ms2"), 0) & 1) << 1

    def uart_write(self, data):
        """Bytes the board's UART sent: on the driver's pins, the echo and the driver's reply."""
        if not self.uart_wired:
            return
        self.uart_rx += data
        self.uart_rx += driver_hears(self.driver_regs, data, self.driver_node())

    def driver_status(self):
        """The driver's registers by name (None: the rig has no driver UART)."""
        if self.driver_uart is None:
            return None
        return {DRV_NAMES[k]: v for k, v in sorted(self.driver_regs.items())}

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

    def battery_mv(self):
        if self.battery_forced_mv is not None:
            return self.battery_forced_mv
        self.settle()
        drop_uv = (self.now_us() // US_PER_MS) * DRAIN_UV_PER_DAY // MS_PER_DAY
        drop_uv += (self.pulses_fwd + self.pulses_rev) * DRAIN_NV_PER_STEP // 1000
        return max(0, BATTERY_START_MV - drop_uv // 1000)

    def pressure_kpa(self):
        self.settle()
        return self.held_pl // 1000 // COMPLIANCE_NL_PER_KPA

    def _mv_to_u16(self, mv):
        """The ADC reading for mv at the pin (boards convert back rounding to the nearest mV,
        hw/common.py, so this round trip is exact)."""
        ref = self.cfg.get("adc_ref_mv", 3300)
        u = (mv * 65535 + ref // 2) // ref
        return max(0, min(65535, u))

    def adc_u16(self, pin):
        if pin == self.pin_vbat:
            num = self.cfg.get("vbat_div_num", 2)
            den = self.cfg.get("vbat_div_den", 1)
            # the divider: pin mV = cell mV * den / num (2 mV resolution at the cell for 2:1)
            return self._mv_to_u16((self.battery_mv() * den + num // 2) // num)
        if pin == self.pin_pressure:
            p = self.cfg.get("pressure", {})
            num = p.get("kpa_per_mv_num", 1)
            den = p.get("kpa_per_mv_den", 10)
            mv = p.get("zero_mv", 330) + (self.pressure_kpa() * den + num // 2) // num
            return self._mv_to_u16(mv)
        return 0

    # ---- faults --------------------------------------------------------------------------
    def fault(self, stall=None, occlusion=None, battery_mv=None, true_step_pl=None,
              kill_at_ms=None, clear_battery=False, garble_waits=None):
        self.settle()
        if garble_waits is not None:
            self.garble_waits = max(0, int(garble_waits))
        if stall is not None:
            self.stall = bool(stall)
        if occlusion is not None:
            if self.occlusion and not occlusion:
                self.released_pl += self.held_pl
                self.held_pl = 0
            self.occlusion = bool(occlusion)
        if battery_mv is not None:
            self.battery_forced_mv = int(battery_mv)
        if clear_battery:
            self.battery_forced_mv = None
        if true_step_pl is not None:
            self.true_step_pl = int(true_step_pl)
        if kill_at_ms is not None:
            self.kill_at_us = int(kill_at_ms) * US_PER_MS

    # ---- measurements --------------------------------------------------------------------
    def volume_out_nl(self):
        return (self.plunger_pl - self.held_pl) // 1000

    def mass_ug(self):
        self.settle()
        return self.volume_out_nl() * DENSITY_UG_PER_UL // 1000

    def measure(self):
        self.settle()
        return {
            "time_ms": self.now_us() // US_PER_MS,
            "time_us": self.now_us(),
            "epoch_s": self.epoch_s(),
            "pulses_fwd": self.pulses_fwd,
            "pulses_rev": self.pulses_rev,
            "steps_net": self.steps_net,
            "volume_out_nl": self.volume_out_nl(),
            "plunger_nl": self.plunger_pl // 1000,
            "held_nl": self.held_pl // 1000,
            "pressure_kpa": self.pressure_kpa(),
            "battery_mv": self.battery_mv(),
            "buzzer_hz": self.buzzer_hz,
            "led": self.pins.get(self.pin_led, 0),
            "enabled": self.driver_enabled(),
            "motor_busy": self.motor_busy(),
            "resets": dict(self.resets),
            "boots": self.boots,
            "mass_ug": self.volume_out_nl() * DENSITY_UG_PER_UL // 1000,
            "diag": self.diag(),
            "driver_regs": self.driver_status(),
        }

    def status(self):
        return {
            "time_ms": self.now_us() // US_PER_MS,
            "warp": self.warp,
            "state": self.state,
            "waiting": self.pending_w_us is not None,
            "deadline_ms": None if self.pending_w_us is None else self.pending_w_us // US_PER_MS,
            "wdt_timeout_ms": self.wdt_timeout_ms,
            "stall": self.stall,
            "diag": self.diag(),
            "driver_regs": self.driver_status(),
            "occlusion": self.occlusion,
            "battery_forced_mv": self.battery_forced_mv,
            "true_step_pl": self.true_step_pl,
            "kill_at_ms": None if self.kill_at_us is None else self.kill_at_us // US_PER_MS,
            "garble_waits": self.garble_waits,
            "max_step_ms": self.max_step_ms,
            "max_boot_ms": self.max_boot_ms,
            "segments": len(self.segments),
            "history": [list(h) for h in self.history],
            "resets": dict(self.resets),
            "boots": self.boots,
            "messages": self.messages,
            "link_drops": self.link_drops,
        }

    def segment_log(self, since=0):
        self.settle()
        return [s.as_dict() for s in self.segments[max(0, int(since)):]]

    # ---- balance -------------------------------------------------------------------------
    def balance_respond(self, line):
        if self.balance is None:
            return b"ES\r\n"
        return self.balance.respond(line, self.now_us() // US_PER_MS, self.mass_ug())
