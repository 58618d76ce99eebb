# The virtual board's link to the world (the launcher process): the analog of the RP2040's
# PIO, timers and RTC. fd 3 carries answers world->board, fd 4 requests board->world, one
# ASCII line each (see pumprig/virtual/world.py for the protocol). Runs on the unix port only.
# The `machine` shim sends its own lines (pins, ADC, PWM, watchdog, RTC) through send/ask.
#
# A Pico's silicon costs no heap; this module lives in the board's heap, so it keeps only what
# hw/sim.py, the machine shim and the tests use. Protocol lines are str constants: short ones
# are interned, a bytes constant would be an object each.
#
# While time stands still (warp: from a "T ... 1" answer to the next wait) the world applies
# whatever the board sends at that same instant, so pin writes, PWM and motor segments (hold)
# go out with the next request in one write: one pipe write and one wake-up of the world per
# firmware step instead of three or four.
_rx = open("/dev/fd/3", "rb")
_w = open("/dev/fd/4", "wb").write
_held = ""              # lines held while time stands still, written before the next request
_dirty = False          # a request was interrupted (Ctrl-C): drop stale answers before the next
_frozen = False         # warp: time stands still until our next wait
_now_ms = 0
woke_by_serial = False  # the last wait ended because the host sent bytes
link = 0                # "L <n>" lines the world sends unasked when the host closes the port
_lp = None              # a poller on fd 3 for them (made at the first link_drops())
_snap = b""


def send(line):
    """A request without an answer (a line ending in \\n), after the lines held."""
    global _held
    if _held:
        line = _held + line
        _held = ""
    _w(line)


def hold(line):
    """send(), or while time stands still, with the next request (the same instant)."""
    global _held
    if _frozen and len(_held) < 200:
        _held += line
    else:
        send(line)


def _line():
    """The world's next line: a byte 0x80 + its length, then the line (two reads; readline
    would make a system call per byte). b"" when the world has gone."""
    n = _rx.read(1)
    if n and n[0] < 128:        # a Ctrl-C cut a line short: its rest is there (lines are
        while n and n != b"\n":  # written whole), read it and return a line no one waits for
            n = _rx.read(1)
        return b"-"
    return _rx.read(n[0] & 127) if n else b""


def _link(ans):
    global link
    link = int(ans[2:])


# world time at this power-on: board.now_ms() counts from here
send("N\n")
boot_ms = _line()                               # 'T <now_ms> <frozen> <serial>'
while boot_ms and boot_ms[0] == 76:             # an 'L' line came first
    _link(boot_ms)
    boot_ms = _line()
boot_ms = int(boot_ms[2:boot_ms.find(32, 2)]) if boot_ms.find(84) == 0 else 0


def _ask(line, letter):
    global _dirty
    if _dirty:
        import select  # rare: only after a Ctrl-C
        p = select.poll()
        p.register(_rx, select.POLLIN)
        while p.poll(0):
            ans = _line()
            if ans and ans[0] == 76:
                _link(ans)
    _dirty = True
    send(line)
    while True:
        ans = _line()
        if not ans:
            raise OSError(5)        # the world went away
        if ans[0] == letter:
            _dirty = False
            return ans
        if ans[0] == 76:                        # 'L', unasked
            _link(ans)


def ask(line, letter):
    """A request and its answer: the integer after the expected letter."""
    return int(_ask(line, letter)[2:])


def _time(line):
    global _frozen, _now_ms, woke_by_serial, _snap
    _frozen = False     # until the answer says otherwise (a Ctrl-C may interrupt the wait)
    ans = _ask(line, 84)                        # 'T <now_ms> <frozen> <serial> [i7:0 a26:..]'
    i = ans.find(32, 2)
    _now_ms = int(ans[2:i])
    _frozen = ans[i + 1] == 49
    woke_by_serial = len(ans) > i + 3 and ans[i + 3] == 49
    _snap = ans
    return _now_ms


def read_in(req, key):
    """An input: req "I <pin>\n" (a pin) or "A <pin>\n" (an ADC); key b" i<pin>:" or
    b" a<pin>:". While time stands still (warp) the value is the one the last T answer
    carried for that instant; otherwise it is asked for."""
    if _frozen:
        j = _snap.find(key)
        if j > 0:
            j += len(key)
            k = _snap.find(32, j)
            return int(_snap[j:k if k > 0 else len(_snap) - 1])
    return ask(req, 86)                         # 'V <value>'


def wait(deadline_ms):
    """Block until deadline_ms (virtual) or serial input from the host; return now_ms.
    The watchdog is not fed: waiting past its timeout resets the board."""
    return _time("W %d\n" % deadline_ms)


def sleep_fed(deadline_ms):
    """wait(), feeding the watchdog now and while asleep (a board's idle loop)."""
    return _time("w %d\n" % deadline_ms)


def now_ms():
    return _now_ms if _frozen else _time("N\n")


def epoch_s():
    return ask("E\n", 69)                       # 'E'


def link_drops():
    """The times the host closed the port, as the world last said (unasked 'L <n>' lines, read
    here without waiting: no round trip). The world writes one before it relays the bytes of
    whoever opens the port next, so it is readable here once they are."""
    global _lp
    if _lp is None:
        import select
        _lp = select.poll()
        _lp.register(_rx, select.POLLIN)
    while _lp.poll(0):
        ans = _line()
        if not ans:
            break
        if ans[0] == 76:
            _link(ans)
    return link


def pin_id(p):
    """The pin number the world knows a pin by: a Pin's id, "GP<n>" or "<n>", or an int."""
    i = getattr(p, "id", None)      # a machine.Pin (here, not in machine: _uart uses it too)
    if i is not None:
        return i
    if isinstance(p, str) and p[:2] == "GP":
        p = p[2:]
    return int(p)


def motor(count, first_us, interval_us, forward):
    hold("M %d %d %d %d\n" % (count, first_us, interval_us, 1 if forward else 0))


def motor_stop():
    return ask("S\n", 80)                       # 'P'


def pin_write(pin, value):
    hold("O %d %d\n" % (pin, 1 if value else 0))


def kbd_intr(on):
    """On: a 0x03 byte from the host raises KeyboardInterrupt. Off: it is plain data."""
    send("C %d\n" % (1 if on else 0))


def reset(soft=False):
    """Ask the world to restart the interpreter, and wait to be killed."""
    send("Z\n" if soft else "R\n")
    while _rx.read(1):
        pass
