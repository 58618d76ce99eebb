# Run by tests/host/test_isr_heap_lock.py under the MicroPython unix port (not by pytest):
#   micropython tests/host/isr_heap_lock_mpy.py BOARD_DIR
# Fake machine/esp32/rp2 modules go into sys.modules before the hw modules are imported;
# the interrupt-path code then runs thousands of times under micropython.heap_lock(), where
# any allocation raises MemoryError. Prints one "PASS name" or "FAIL name: why" per check.
import json
import sys

import micropython

BOARD = sys.argv[1]
sys.path.insert(0, BOARD)
CALLS = 20000


class FakePin:
    OUT = 1
    IN = 0
    PULL_DOWN = 2

    def __init__(self, n=0, mode=0, pull=None, value=0):
        self.n = n
        self.v = value
        self.rises = 0

    def init(self, mode=0, pull=None, value=0):
        self.v = value

    def value(self, v=None):
        if v is None:
            return self.v
        if v and not self.v:
            self.rises += 1
        self.v = v


class FakeTimer:
    PERIODIC = 1
    ONE_SHOT = 0

    def __init__(self, n=0):
        self.callback = None

    def init(self, mode=1, period=1, callback=None, hard=False):
        self.callback = callback

    def deinit(self):
        self.callback = None


class FakeRMT:
    def __init__(self, *a, **k):
        self.busy = False

    def write_pulses(self, d, lv):
        self.busy = True

    def wait_done(self, timeout=0):
        return not self.busy

    def deinit(self):
        pass


class FakeSM:
    def __init__(self):
        self.rx = 0
        self.words = []

    def rx_fifo(self):
        return self.rx

    def get(self):
        self.rx = 0
        return 0

    def put(self, w):
        self.words.append(w)

    def exec(self, i):
        pass

    def active(self, on=None):
        return False

    def restart(self):
        pass


class FakeMachine:
    Pin = FakePin
    Timer = FakeTimer

    @staticmethod
    def reset():
        pass


class FakeEsp32:
    RMT = FakeRMT


def asm_pio(**kw):
    def dec(f):
        return f  # the real assembler exists only in the rp2 firmware

    return dec


class FakePIO:
    OUT_LOW = 0


class FakeRp2:
    PIO = FakePIO
    asm_pio = staticmethod(asm_pio)


sys.modules["machine"] = FakeMachine
sys.modules["esp32"] = FakeEsp32
sys.modules["rp2"] = FakeRp2


class FakeIO:
    def poll(self, t=0):
        return []

    def read(self, n):
        return b""

    def write(self, b):
        return len(b)


def load(name):
    with open(BOARD + "/boards/" + name + ".json") as f:
        return json.load(f)


def parts():
    return {"dir": FakePin(), "en": FakePin(value=1), "ms1": FakePin(), "ms2": FakePin()}


def check(name, fn):
    try:
        fn()
    except Exception as e:  # report, then carry on with the next check
        micropython.heap_unlock()
        print("FAIL", name + ":", repr(e))
        return
    print("PASS", name)


def heap_lock_works():
    micropython.heap_lock()
    try:
        probe = [CALLS, CALLS]  # a new list must fail while locked
        del probe
    except MemoryError:
        micropython.heap_unlock()
        return
    micropython.heap_unlock()
    raise AssertionError("heap_lock did not stop an allocation")


def esp32_timer_isr():
    from hw import esp32 as hw_esp32

    step = FakePin()
    timer = FakeTimer()
    io = FakeIO()
    b = hw_esp32.ESP32Board(load("esp32"), FakeMachine, parts(), step, timer, FakeRMT,
                            io=(io, io, io))
    # 10 pulses, first after 2.5 ms, then every 1.5 s (Timer path): 13_502 ticks in all
    b.motor_start(10, 2_500, 1_500_000, True)
    cb = timer.callback
    assert cb is not None, "timer path not used"
    micropython.heap_lock()
    for _ in range(CALLS):
        cb(timer)
    micropython.heap_unlock()
    assert step.rises == 10, step.rises
    assert b._made == 10 and b._left == 0
    assert not b.motor_busy()


def esp32_timer_isr_abort():
    from hw import esp32 as hw_esp32

    step = FakePin()
    timer = FakeTimer()
    io = FakeIO()
    b = hw_esp32.ESP32Board(load("esp32"), FakeMachine, parts(), step, timer, FakeRMT,
                            io=(io, io, io))
    b.motor_start(40, 40_000, 100_000, False)
    cb = timer.callback
    micropython.heap_lock()
    for _ in range(1_000):  # pulses at ticks 40, 140, ..., 940: 10 of them
        cb(timer)
    micropython.heap_unlock()
    assert b.motor_busy()
    made = b.motor_stop()
    assert made == 10 == step.rises, (made, step.rises)


def rp2_busy_poll():
    from hw import rp2 as hw_rp2

    sm = FakeSM()
    io = FakeIO()
    b = hw_rp2.RP2Board(load("pico"), FakeMachine, parts(), sm, io=(io, io, io))
    b.motor_start(40, 1_000, 5_000, True)
    assert sm.words[0] == 40
    micropython.heap_lock()
    busy = 0
    for _ in range(CALLS):
        if b._hw_busy():
            busy += 1
    micropython.heap_unlock()
    assert busy == CALLS
    sm.rx = 1  # the program's done word
    assert not b.motor_busy()


check("heap_lock_works", heap_lock_works)
check("esp32_timer_isr", esp32_timer_isr)
check("esp32_timer_isr_abort", esp32_timer_isr_abort)
check("rp2_busy_poll", rp2_busy_poll)
