"""The step timing contract between the firmware's hardware layer and the virtual rig's world.

board/hw/common.py (with hw/sim.py's hardware segment) and host/pumprig/virtual/stepper.py each
say when a motor segment's pulses happen: pulse i at first_us + i * interval_us after the
segment starts, the segment done at its last pulse. The board never asks the world whether a
segment is done (it computes the end, as a PIO program's duration is known), so the two must
agree, and nothing but this test checks that they do.

The real SimBoard (hw/sim.py over hw/common.py) runs here under CPython against the real World
(pumprig.virtual.world), through an in-process `_world` that hands each line to World.handle
and moves warp time to each wait's deadline, as the world does when nothing else wakes the
board. For random segments (and with hw/common's split into sub-segments, as on esp32):
- every pulse the world makes is at its ideal time or up to 1 ms before it (hw.common starts a
  sub-segment from its ms clock, rounded early), never after;
- when the board first says the segment is done, the world has made exactly `count` pulses,
  and the board says so at its first wake at or after the world's last pulse (never before
  it, never a wake later);
- a segment stopped part way: the count the board returns is the count the world made.
"""

import importlib
import sys
import types
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

BOARD = Path(__file__).resolve().parents[2] / "board"
if str(BOARD) not in sys.path:
    sys.path.insert(0, str(BOARD))

from pumprig.virtual.world import DEFAULT_CONFIG, World  # noqa: E402

US = 1000


class Link(types.ModuleType):
    """The board's `_world` module, in-process: lines go to World.handle, answers come back
    from its wire; a wait moves warp time to its deadline (nothing else wakes the board)."""

    def __init__(self):
        super().__init__("_world")
        self.boot_ms = 0
        self._frozen = True
        self.woke_by_serial = False

    def attach(self, world):
        self.world = world
        self.answers = []
        world.wire.send = self.answers.append

    def send(self, line):
        self.world.handle(line.encode().rstrip(b"\n"))

    hold = send

    def now_ms(self):
        return self.world.now_us() // US

    def sleep_fed(self, deadline_ms):
        self.world.clock.advance_to(deadline_ms * US)
        return self.now_ms()

    wait = sleep_fed

    def motor(self, count, first_us, interval_us, forward):
        self.send("M %d %d %d %d\n" % (count, first_us, interval_us, 1 if forward else 0))

    def motor_stop(self):
        self.send("S\n")
        return int(self.answers.pop()[2:])

    def pin_write(self, pin, value):
        self.send("O %d %d\n" % (pin, 1 if value else 0))

    def epoch_s(self):
        return self.world.epoch_s()

    def kbd_intr(self, on):
        pass

    def link_drops(self):
        return 0


class _Pin:
    def __init__(self, v=0):
        self.v = v

    def value(self, *v):
        if not v:
            return self.v
        self.v = v[0]


class _Poller:
    def poll(self, _t=0):
        return []


@pytest.fixture
def rig(monkeypatch):
    """new(hw_max_us) -> (board, world): a SimBoard on a new World, time at 1000 ms."""
    link = Link()
    monkeypatch.setitem(sys.modules, "_world", link)
    monkeypatch.setitem(sys.modules, "machine", types.ModuleType("machine"))
    monkeypatch.delitem(sys.modules, "hw.sim", raising=False)
    from hw import setup

    monkeypatch.setattr(setup, "default_io", lambda: (None, None, _Poller()))
    sim = importlib.import_module("hw.sim")

    def new(hw_max_us=None):
        world = World(DEFAULT_CONFIG, warp=True)
        world.clock.advance_to(1000 * US)
        link.attach(world)
        cls = sim.SimBoard
        if hw_max_us is not None:
            cls = type("SplitSimBoard", (sim.SimBoard,), {"_HW_MAX_US": hw_max_us})
        parts = {k: _Pin() for k in ("dir", "en", "ms1", "ms2", "diag", "led")}
        board = cls({"board": "sim", "microstep": 8, "watchdog_ms": 0}, parts)
        board.motor_enable(True)
        return board, world

    yield new
    sys.modules.pop("hw.sim", None)


# the fixture is a factory: every example makes its own world and board
def each(n):
    return settings(max_examples=n, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def pulse_times(world, first_segment):
    """Every pulse the world's stepper made, in µs, from segment index first_segment on."""
    out = []
    for seg in world.stepper.segments[first_segment:]:
        n = seg.pulses_at(world.now_us())
        out += [seg.start_us + seg.first_us + i * seg.interval_us for i in range(n)]
    return out


def run_segment(board, world, count, first_us, interval_us, stop_after_ms=None):
    """Start a segment and wake the board as a firmware loop would (at the ideal end, or
    sooner when hw.common asks to launch a sub-segment); returns (the ms of every wake, the
    last one where the board said done or was stopped; the pulses it says were made)."""
    start_ms = world.now_us() // US
    last_ideal_us = start_ms * US + first_us + (count - 1) * interval_us
    target_ms = -(-last_ideal_us // US)
    if stop_after_ms is not None:
        target_ms = min(target_ms, start_ms + stop_after_ms)
    board.motor_start(count, first_us, interval_us, True)
    wakes = []
    for _ in range(100000):
        now_ms = world.now_us() // US
        wakes.append(now_ms)
        if stop_after_ms is not None and now_ms >= start_ms + stop_after_ms:
            return wakes, board.motor_stop()
        if not board.motor_busy():
            return wakes, count
        # a board that is not done at the ideal end is woken every ms from there on
        board.wait(target_ms if target_ms > now_ms else now_ms + 1)
    raise AssertionError("the segment never ended")


SEGMENTS = dict(count=st.integers(1, 40), first_us=st.integers(0, 4_000_000),
                interval_us=st.integers(0, 3_000_000))


def check_done(world, first_segment, count, first_us, interval_us, start_ms, wakes):
    made = pulse_times(world, first_segment)
    assert len(made) == count, (len(made), count)
    assert not world.stepper.busy(world.now_us()), "the board says done, the world is not"
    for i, t in enumerate(made):
        ideal = start_ms * US + first_us + i * interval_us
        assert ideal - US <= t <= ideal, (i, t, ideal)   # never late, at most 1 ms early
    # done at the first wake at or after the world's last pulse: not before, not a wake later
    assert wakes[-1] == min(w for w in wakes if w * US >= made[-1]), (wakes, made[-1])


@each(150)
@given(**SEGMENTS)
def test_one_hardware_segment_ends_where_the_world_ends_it(rig, count, first_us,
                                                           interval_us):
    board, world = rig()
    for _ in range(2):      # a second segment right after the first (no gap, no overlap)
        start_ms = world.now_us() // US
        first = len(world.stepper.segments)
        wakes, _made = run_segment(board, world, count, first_us, interval_us)
        check_done(world, first, count, first_us, interval_us, start_ms, wakes)


@each(100)
@given(count=st.integers(1, 4), first_us=st.integers(0, 2_500_000_000),
       interval_us=st.integers(900_000_000, 2_500_000_000))
def test_segments_split_into_hardware_sub_segments_keep_the_timing(rig, count, first_us,
                                                                   interval_us):
    """Gaps longer than one hardware segment (hw/sim.py's _HW_MAX_US, 1000 s) are started
    part by part by hw.common, from the board's wait(). Finding: SimBoard.wait slept to the
    app's deadline while a part was in flight, so the next part started only at the app's
    next wake, its pulse late by up to the app's wake period (an hour); it wakes at the
    part's end now."""
    board, world = rig()
    start_ms = world.now_us() // US
    first = len(world.stepper.segments)
    wakes, _made = run_segment(board, world, count, first_us, interval_us)
    check_done(world, first, count, first_us, interval_us, start_ms, wakes)


@each(100)
@given(count=st.integers(2, 40), first_us=st.integers(0, 2_000_000),
       interval_us=st.integers(1, 2_000_000), stop_ms=st.integers(0, 40_000),
       hw_max_us=st.sampled_from([None, 2_000_000]))  # 2 s: sub-segments, as esp32's
def test_a_stopped_segment_counts_what_the_world_made(rig, count, first_us, interval_us,
                                                      stop_ms, hw_max_us):
    board, world = rig(hw_max_us)
    first = len(world.stepper.segments)
    _wakes, made = run_segment(board, world, count, first_us, interval_us, stop_ms)
    assert made == len(pulse_times(world, first))
    assert not world.stepper.busy(world.now_us())
