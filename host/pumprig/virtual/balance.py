"""A virtual MT-SICS microbalance for the virtual rig and the tests.

:class:`VirtualBalance` is pure: the world hands it each command line together with the time
and the true mass of liquid in the vessel, and gets the reply bytes back. It keeps no clock and
opens nothing, so the world can run it in virtual time. :func:`serve_on_pty` puts one on a
real pseudo-terminal (a thread answers each line) so a client can talk to it through pyserial
exactly as it would to a bench balance.

The reading is built as::

    gross = true mass + noise + drift * (t - t_start) - evaporation * (t - t_start)
    net   = gross - zero point - tare,   shown rounded to the resolution, in grams

``noise`` comes from a 32-bit linear congruential generator seeded with ``seed`` (the sum of
four uniform draws, scaled so its standard deviation is ``noise_ug``): the same seed and the same
sequence of commands give the same readings, on every run and every platform. ``t_start`` is
``start_ms`` or, when None, the time of the first command.
"""

import os
import select
import threading
import time

_LCG_A = 1664525
_LCG_C = 1013904223
_LCG_M = 1 << 32
# SD of the centred sum of four uniform 16-bit draws: 65536 / sqrt(3)
_SUM4_SD = 65536 / 3 ** 0.5

FAULTS = ("unstable", "ES", "ET", "EL", "silent", "overload", "underload")


class VirtualBalance:
    """MT-SICS replies for S, SI, Z, T, TA, I0, I1, I2, I3, I4 and @ (anything else: ES)."""

    # I0's list: (MT-SICS level, command), in the order answered. Level 0 is not complete here
    # (no SIR, no ZI), so I1 names no fully implemented level.
    COMMANDS = ((0, "@"), (0, "I0"), (0, "I1"), (0, "I2"), (0, "I3"), (0, "I4"), (0, "S"),
                (0, "SI"), (0, "Z"), (1, "T"), (1, "TA"))
    SICS_VERSIONS = ("1.0", "1.0", "", "")      # I1: the version implemented of levels 0..3
    SOFTWARE = "1.0"                            # I3: the virtual balance's software version

    def __init__(self, seed=0, resolution_ug=1, noise_ug=2, drift_ug_per_h=0,
                 evaporation_ug_per_h=0, capacity_ug=220_000_000, underload_ug=1_000_000,
                 settle_ms=0, start_ms=None, serial_number="PRVB%06d", model="PUMPRIG-VB"):
        if resolution_ug < 1:
            raise ValueError("resolution_ug must be a positive integer")
        self.resolution_ug = int(resolution_ug)
        self.noise_ug = noise_ug
        self.drift_ug_per_h = drift_ug_per_h
        self.evaporation_ug_per_h = evaporation_ug_per_h
        self.capacity_ug = capacity_ug
        self.underload_ug = underload_ug
        self.settle_ms = settle_ms
        self.start_ms = start_ms
        self.serial_number = serial_number % seed if "%" in serial_number else serial_number
        self.model = model
        self._state = (seed * 2654435761 + 12345) % _LCG_M
        self.zero_ug = 0.0  # gross reading taken as zero
        self.tare_ug = 0  # tare, a shown (rounded) value
        self._faults = []
        self._last_true = None
        self._changed_ms = None
        self.decimals = 6
        r = self.resolution_ug
        while r % 10 == 0 and self.decimals > 0:
            r //= 10
            self.decimals -= 1

    # -- fault injection (for the world's control socket and tests) ------------------------
    def fail_next(self, kind, count=1):
        """Answer the next ``count`` weighing commands (S, SI, Z, T) with a fault:
        ``unstable`` (S I / S D / Z I / T I), ``ES``, ``ET``, ``EL``, ``silent`` (no reply),
        ``overload`` (S + ...), ``underload`` (S - ...)."""
        if kind not in FAULTS:
            raise ValueError("unknown balance fault %r (one of %s)" % (kind, ", ".join(FAULTS)))
        self._faults.extend([kind] * count)

    # -- physics ---------------------------------------------------------------------------
    def _rand(self):
        self._state = (_LCG_A * self._state + _LCG_C) % _LCG_M
        return self._state >> 16

    def _noise(self):
        if not self.noise_ug:
            return 0.0
        s = self._rand() + self._rand() + self._rand() + self._rand() - 2 * 65536
        return s * self.noise_ug / _SUM4_SD

    def _gross(self, t_ms, true_mass_ug):
        if self.start_ms is None:
            self.start_ms = t_ms
        h = (t_ms - self.start_ms) / 3_600_000
        return (true_mass_ug + self._noise()
                + (self.drift_ug_per_h - self.evaporation_ug_per_h) * h)

    def _round(self, ug):
        r = self.resolution_ug
        return int(round(ug / r)) * r

    def _fmt(self, ug):
        neg = ug < 0
        ug = abs(ug)
        whole, frac = divmod(ug, 1_000_000)
        if self.decimals:
            text = "%d.%0*d" % (whole, self.decimals, frac // 10 ** (6 - self.decimals))
        else:
            text = "%d" % whole
        return ("-" if neg else "") + text

    def _value(self, head, status, ug):
        return ("%s %s%14s g" % (head, status, self._fmt(ug))).encode("ascii") + b"\r\n"

    # -- the interface ---------------------------------------------------------------------
    def respond(self, line, t_ms, true_mass_ug):
        """The reply (bytes, CR LF terminated) to one command line; ``b""`` for a blank line
        or a ``silent`` fault."""
        cmd = line.decode("ascii", "replace").strip()
        if not cmd:
            return b""
        if self._last_true is None or true_mass_ug != self._last_true:
            if self._last_true is not None:
                self._changed_ms = t_ms
            self._last_true = true_mass_ug
        settling = (self._changed_ms is not None and self.settle_ms
                    and t_ms - self._changed_ms < self.settle_ms)
        fault = None
        if cmd in ("S", "SI", "Z", "T") and self._faults:
            fault = self._faults.pop(0)
        if fault == "silent":
            return b""
        if fault in ("ES", "ET", "EL"):
            return fault.encode("ascii") + b"\r\n"

        if cmd in ("S", "SI"):
            gross = self._gross(t_ms, true_mass_ug)
            load = gross - self.zero_ug
            if fault == "overload" or load > self.capacity_ug:
                return b"S +\r\n"
            if fault == "underload" or load < -self.underload_ug:
                return b"S -\r\n"
            net = self._round(load) - self.tare_ug
            unstable = fault == "unstable" or settling
            if cmd == "S":
                if unstable:
                    return b"S I\r\n"
                return self._value("S", "S", net)
            return self._value("S", "D" if unstable else "S", net)
        if cmd == "Z":
            if fault == "unstable" or settling:
                return b"Z I\r\n"
            if fault in ("overload", "underload"):
                return b"Z +\r\n" if fault == "overload" else b"Z -\r\n"
            self.zero_ug = self._gross(t_ms, true_mass_ug)
            self.tare_ug = 0
            return b"Z A\r\n"
        if cmd == "T":
            if fault == "unstable" or settling:
                return b"T I\r\n"
            if fault in ("overload", "underload"):
                return b"T +\r\n" if fault == "overload" else b"T -\r\n"
            load = self._gross(t_ms, true_mass_ug) - self.zero_ug
            if load > self.capacity_ug:
                return b"T +\r\n"
            self.tare_ug = self._round(load)
            return self._value("T", "S", self.tare_ug)
        if cmd == "TA":
            return self._value("TA", "A", self.tare_ug)
        if cmd == "I2":
            cap = self._fmt(self.capacity_ug)
            return ('I2 A "%s %s g"' % (self.model, cap)).encode("ascii") + b"\r\n"
        if cmd == "I4":
            return ('I4 A "%s"' % self.serial_number).encode("ascii") + b"\r\n"
        if cmd == "I0":         # one line per command: B while more follow, A on the last
            last = len(self.COMMANDS) - 1
            return b"".join(('I0 %s %d "%s"\r\n' % ("A" if i == last else "B", lvl, c))
                            .encode("ascii") for i, (lvl, c) in enumerate(self.COMMANDS))
        if cmd == "I1":
            return ('I1 A ""' + "".join(' "%s"' % v for v in self.SICS_VERSIONS)
                    ).encode("ascii") + b"\r\n"
        if cmd == "I3":
            return ('I3 A "%s"' % self.SOFTWARE).encode("ascii") + b"\r\n"
        if cmd == "@":
            self.tare_ug = 0
            self._faults = []
            return ('I4 A "%s"' % self.serial_number).encode("ascii") + b"\r\n"
        return b"ES\r\n"


def serve_on_pty(mass_fn, balance=None, now_ms=None):
    """Serve ``balance`` (default ``VirtualBalance()``) on a new pseudo-terminal.

    ``mass_fn()`` returns the true mass in the vessel (integer micrograms) when a command
    arrives; ``now_ms()`` the time passed to ``respond`` (default: monotonic wall clock).
    Returns ``(path, stop)``: open ``path`` with pyserial; call ``stop()`` to end the thread and
    close the pty. Commands are answered one at a time, in order.
    """
    import pty
    import tty

    if balance is None:
        balance = VirtualBalance()
    if now_ms is None:
        def now_ms():
            return int(time.monotonic() * 1000)
    master, slave = pty.openpty()
    tty.setraw(slave)
    path = os.ttyname(slave)
    stopping = threading.Event()

    def serve():
        buf = b""
        while not stopping.is_set():
            try:
                ready, _, _ = select.select([master], [], [], 0.05)
                if not ready:
                    continue
                chunk = os.read(master, 1024)
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                reply = balance.respond(line.rstrip(b"\r"), int(now_ms()), int(mass_fn()))
                if reply:
                    try:
                        os.write(master, reply)
                    except OSError:
                        return

    thread = threading.Thread(target=serve, name="virtual-balance", daemon=True)
    thread.start()

    def stop():
        stopping.set()
        thread.join(2.0)
        for fd in (master, slave):
            try:
                os.close(fd)
            except OSError:
                pass

    return path, stop
