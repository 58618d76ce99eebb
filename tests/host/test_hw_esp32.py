"""hw/esp32.py step generation with fake machine/esp32 modules (only inside these tests)."""

import importlib
import json
import sys
import types
from pathlib import Path

import pytest
from test_hw_common import FakeClock, FakeIO, fake_parts

BOARD = Path(__file__).resolve().parents[2] / "board"
ESP32 = json.loads((BOARD / "boards" / "esp32.json").read_text())


class Pin:
    OUT, IN, PULL_DOWN = 1, 0, 2

    def __init__(self, n=0, *a, value=0, **k):
        self.v, self.rises = value, 0

    def init(self, *a, value=0, **k):
        self.v = value

    def value(self, v=None):
        if v is None:
            return self.v
        self.rises += bool(v and not self.v)
        self.v = v


class Timer:
    PERIODIC = 1

    def __init__(self, n=0):
        self.cb = None

    def init(self, **kw):
        self.cb = kw["callback"]

    def deinit(self):
        self.cb = None


class RMT:
    def __init__(self):
        self.sent, self.done, self.deinited = None, False, False

    def write_pulses(self, d, lv):
        self.sent = (list(d), list(lv))

    def wait_done(self, timeout=0):
        return self.done

    def deinit(self):
        self.deinited = True


@pytest.fixture
def hw_esp32(monkeypatch):
    machine = types.ModuleType("machine")
    machine.Pin, machine.Timer = Pin, Timer
    esp32 = types.ModuleType("esp32")
    esp32.RMT = RMT
    monkeypatch.setitem(sys.modules, "machine", machine)
    monkeypatch.setitem(sys.modules, "esp32", esp32)
    sys.modules.pop("hw.esp32", None)
    yield importlib.import_module("hw.esp32"), machine
    sys.modules.pop("hw.esp32", None)


def make(hw_esp32):
    mod, machine = hw_esp32
    step, timer, rmts, clock = Pin(), Timer(), [], FakeClock(1000)

    def factory():
        rmts.append(RMT())
        return rmts[-1]

    io = FakeIO()
    b = mod.ESP32Board(ESP32, machine, fake_parts(), step, timer, factory, io=(io, io, io),
                       clock=clock)
    return b, step, timer, rmts, clock


def test_rmt_items_layout(hw_esp32):
    mod, _ = hw_esp32
    d, lv = mod.rmt_items(3, 70_000, 5000)
    assert d == [32767, 32767, 4466, 5, 4995, 5, 4995, 5]
    assert lv == [0, 0, 0, 1, 0, 1, 0, 1]
    assert all(1 <= x <= 32767 for x in d)
    assert mod.rmt_items(1, 0, 0) == ([5], [1])


def test_fast_segment_uses_rmt_and_counts_abort(hw_esp32):
    b, step, timer, rmts, clock = make(hw_esp32)
    b.motor_start(40, 1000, 5000, True)
    assert len(rmts) == 1 and timer.cb is None
    assert rmts[0].sent[1].count(1) == 40
    assert b.motor_busy()
    clock.t += 12  # 12 ms later: edges at 1, 6, 11 ms have passed
    assert b.motor_stop() == 3
    assert rmts[0].deinited


def test_fast_segment_finishes(hw_esp32):
    b, _, _, rmts, _ = make(hw_esp32)
    b.motor_start(5, 0, 5000, True)
    rmts[0].done = True
    assert not b.motor_busy()


def test_slow_segment_uses_timer(hw_esp32):
    b, step, timer, rmts, _ = make(hw_esp32)
    b.motor_start(4, 500, 100_000, False)  # first pulse due at once (< 1 ms): made right away
    assert step.rises == 1 and timer.cb is not None and rmts == []
    for _ in range(300):
        timer.cb(timer)
    assert step.rises == 4  # at ticks 100, 200, 300 (floor of 100.5, 200.5, 300.5 ms)
    assert not b.motor_busy()


def test_slow_segment_abort(hw_esp32):
    b, step, timer, _, _ = make(hw_esp32)
    b.motor_start(10, 50_000, 100_000, True)
    for _ in range(260):
        timer.cb(timer)
    assert b.motor_stop() == 3 == step.rises  # ticks 50, 150, 250
    assert timer.cb is None and step.v == 0
