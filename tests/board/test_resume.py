"""Delivery that stopped because nothing drove it (reservoir EMPTY with on_empty = stop, EOS)
goes on at the plan's rate when the cause ends, and never makes up the drug that came due
meanwhile.

Found on the labgrid farm (docs/farm.md): after the refill that ended an EMPTY stop, the
firmware pulsed, at the pull-in rate, everything the plan had asked for since its last wake-up
before the refill (18 steps in the HIL test, up to a battery period's drug), unless some other
byte had woken it first. Nothing is integrated while no source drives delivery, whenever the
change that lets it go on comes (a command, or a battery sample at a wake-up).

Runs under CPython and MicroPython; pulses are counted by the fake board.
"""

from _util import rmtree, tmpdir
from fakeboard import FakeBoard, run_until
from pumpcore.app import App

DAY = 86_400_000
# 21.6 mL/day at 250 nL a step: one step a second (the HIL suite's dye plan)
PLAN = {"drug": "hil-dye", "custom_drug": True, "conc_ng_ml": 1_000_000,
        "basal": {"kind": "continuous", "ng_day": 21_600_000},
        "caps": {"ng_24h": 10 ** 10, "ng_1h": 10 ** 10},
        "reservoir": {"low_nl": 5_000, "empty_nl": 2_500, "on_empty": "stop"}}
STEP_MS = 1_000


def _app():
    root = tmpdir()
    b = FakeBoard(root=root + "/")
    app = App(b, keys={})
    app.call("clock.set", {"epoch_s": 1_767_225_600, "offset_s": 0}, "clinician", "c", 0)
    app.call("refill", {"volume_nl": 10_000}, "clinician", "r0", 0)  # EMPTY after 30 steps
    app.call("plan.set", {"plan": PLAN}, "clinician", "p", 0)
    return app, b, root


def _until_empty(app, b):
    t = 0
    while "EMPTY" not in app.alarms.active():
        t += 1_000
        assert t < 3_600_000, "no EMPTY"
        run_until(app, b, t)
    return t


def _before_a_quiet_wake(app, b, gap_ms=5_000):
    """Wake-ups as the firmware makes them (alarm tones, battery samples) until one comes at
    least gap_ms after the one before; returns the instant just before it."""
    for _ in range(10_000):
        nxt = app.deadline_ms
        if nxt - b.t_ms >= gap_ms:
            return nxt - 1
        b.t_ms = nxt
        app.step(nxt)
    raise AssertionError("no quiet %d ms between wake-ups" % gap_ms)


def test_a_refill_after_an_empty_stop_gives_nothing_that_came_due_during_it():
    app, b, root = _app()
    try:
        _until_empty(app, b)
        stopped = b.pulses_at(b.t_ms)
        # the firmware sleeps until its next wake-up; the refill comes just before it
        run_until(app, b, b.t_ms + 3 * 3_600_000)
        assert b.pulses_at(b.t_ms) == stopped            # on_empty = stop: nothing moved
        t = _before_a_quiet_wake(app, b)
        b.t_ms = t
        app.call("refill", {"volume_nl": 5_000_000}, "clinician", "r1", t)
        app.step(t)
        run_until(app, b, t + 10 * STEP_MS)
        # the plan's rate from the refill on: 10 steps in 10 step times (a rush would add the
        # 5 s or more since the last wake-up)
        got = b.pulses_at(t + 10 * STEP_MS) - stopped
        assert 9 <= got <= 11, "%d steps in 10 step times after the refill" % got
    finally:
        rmtree(root)


def test_a_refill_after_an_empty_stop_woken_first_by_something_else_gives_the_same():
    """The other order (a wake-up just before the refill) already gave the plan's rate: the
    two now agree, whichever byte wakes the firmware first."""
    app, b, root = _app()
    try:
        _until_empty(app, b)
        stopped = b.pulses_at(b.t_ms)
        run_until(app, b, b.t_ms + 3 * 3_600_000)
        t = _before_a_quiet_wake(app, b)
        b.t_ms = t
        app.step(t)                                      # woken by another byte
        app.call("refill", {"volume_nl": 5_000_000}, "clinician", "r1", t)
        app.step(t)
        run_until(app, b, t + 10 * STEP_MS)
        got = b.pulses_at(t + 10 * STEP_MS) - stopped
        assert 9 <= got <= 11, got
    finally:
        rmtree(root)


def test_delivery_after_eos_clears_gives_nothing_that_came_due_during_it():
    """EOS stops delivery; a battery back above EOS (a bench supply restored) lets it go on at
    the plan's rate from the sample that saw it, not with the hour before that sample."""
    app, b, root = _app()
    try:
        app.call("refill", {"volume_nl": 20_000_000}, "clinician", "r2", 0)
        run_until(app, b, 60_000)
        b.mv = 2_900                                      # below EOS (3000 mV)
        while not app.battery.eos:
            assert b.t_ms < DAY, "no EOS"
            run_until(app, b, app.deadline_ms)
        stopped = b.pulses_at(b.t_ms)
        run_until(app, b, b.t_ms + 5 * 3_600_000)
        assert b.pulses_at(b.t_ms) == stopped
        b.mv = 3_700
        gap_ms = 0
        while app.battery.eos:
            assert b.t_ms < 3 * DAY, "EOS never cleared"
            gap_ms = app.deadline_ms - b.t_ms
            run_until(app, b, app.deadline_ms)
        back = b.t_ms
        assert gap_ms >= 3_000, gap_ms                    # a rush would be seen
        run_until(app, b, back + 10 * STEP_MS)
        got = b.pulses_at(back + 10 * STEP_MS) - stopped
        assert 9 <= got <= 11, "%d steps in 10 step times after EOS cleared" % got
    finally:
        rmtree(root)
