# The virtual board's link to the world (the launcher process): the analog of the RP2040's
# PIO, timers and RTC. fd 3 carries answers world->board, fd 4 requests board->world, one
# ASCII line each (see pumprig/virtual/world.py for the protocol). Runs on the unix port only.
import os

_rx = open("/dev/fd/3", "rb")
_tx = open("/dev/fd/4", "wb")
_dirty = False      # a request was interrupted (Ctrl-C): drop stale answers before the next
_frozen = False     # warp: time stands still until our next wait
_now_ms = 0
uid_hex = os.getenv("PUMPRIG_UID") or "0000000000000000"
mode = os.getenv("PUMPRIG_MODE") or "power"


def _boot():
    _tx.write(b"N\n")
    ans = _rx.readline()
    return int(ans[2:ans.find(b" ", 2)]) if ans[:1] == b"T" else 0


boot_ms = _boot()       # world time at this power-on: board.now_ms() counts from here


def _drain():
    global _dirty
    import select
    p = select.poll()
    p.register(_rx, select.POLLIN)
    while p.poll(0):
        _rx.readline()
    _dirty = False


def send(line):
    """A request without an answer (bytes ending in newline)."""
    _tx.write(line)


def _ask(line, letter):
    global _dirty
    if _dirty:
        _drain()
    _dirty = True
    _tx.write(line)
    while True:
        ans = _rx.readline()
        if not ans:
            raise OSError(5)        # the world went away
        if ans[0] == letter:
            _dirty = False
            return ans


def ask(line, letter):
    """A request and its answer: the integer after the expected letter."""
    return int(_ask(line, letter)[2:])


woke_by_serial = False  # the last wait ended because the host sent bytes


def _time(line):
    global _frozen, _now_ms, woke_by_serial
    ans = _ask(line, 84)                        # 'T <now_ms> <frozen> <serial>'
    i = ans.find(b" ", 2)
    _now_ms = int(ans[2:i])
    _frozen = ans[i + 1] == 49
    woke_by_serial = len(ans) > i + 3 and ans[i + 3] == 49
    return _now_ms


def wait(deadline_ms):
    """Block until deadline_ms (virtual) or serial input from the host; return now_ms.
    The watchdog is not fed: waiting past its timeout resets the board."""
    global _frozen
    _frozen = False
    return _time(b"W %d\n" % deadline_ms)


def sleep_fed(deadline_ms):
    """wait(), feeding the watchdog now and while asleep (a board's idle loop)."""
    global _frozen
    _frozen = False
    return _time(b"w %d\n" % deadline_ms)


def now_ms():
    if _frozen:
        return _now_ms
    return _time(b"N\n")


def epoch_s():
    return ask(b"E\n", 69)                      # 'E'


def set_epoch(epoch_s):
    send(b"e %d\n" % epoch_s)


def motor(count, first_us, interval_us, forward):
    send(b"M %d %d %d %d\n" % (count, first_us, interval_us, 1 if forward else 0))


def motor_stop():
    return ask(b"S\n", 80)                      # 'P'


def motor_busy():
    return ask(b"B\n", 66) != 0                 # 'B'


def pin_write(pin, value):
    send(b"O %d %d\n" % (pin, 1 if value else 0))


def pin_read(pin):
    return ask(b"I %d\n" % pin, 86)             # 'V'


def adc(pin):
    return ask(b"A %d\n" % pin, 86)


def pwm(pin, freq_hz, duty_u16):
    send(b"F %d %d %d\n" % (pin, freq_hz, duty_u16))


def wdt_start(timeout_ms):
    send(b"D %d\n" % timeout_ms)


def feed():
    send(b"K\n")


def kbd_intr(on):
    """On: a 0x03 byte from the host raises KeyboardInterrupt. Off: it is plain data."""
    send(b"C %d\n" % (1 if on else 0))


def repl():
    global _frozen
    _frozen = False
    send(b"Q\n")


def reset(soft=False):
    """Ask the world to restart the interpreter, and wait to be killed."""
    send(b"Z\n" if soft else b"R\n")
    while True:
        if not _rx.readline():
            break
