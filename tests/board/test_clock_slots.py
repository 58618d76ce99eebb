"""Issue 11, finding 3: clock changes never repeat a periodic bolus.

A periodic bolus is started at most once per slot and local day, whatever the clock does: the
autumn change (a slot in the repeated hour), `clock.set` backwards (twice), a reset in between.
A slot the clock jumps over (spring change, `clock.set` forwards) is given late, whole, when it
was jumped over by at most one hour (`bolus.late`), else skipped (`bolus.skipped`).

Runs under CPython and MicroPython. What was delivered is counted from the fake board's motor
pulses, never from the app's account. Plan: baclofen 2000 mcg/mL, 300 mcg/day continuous (600
steps of 0.25 uL a day) and 50 mcg over 15 min (100 steps) at 02:30 and 14:00.
"""

from _util import rmtree, tmpdir
from fakeboard import FakeBoard, run_until
from pumpcore import evlog
from pumpcore.app import App

DAY = 86_400_000
MIN = 60_000
BOLUS = 100  # steps of one periodic bolus
SEGMENT = 40  # steps of the longest segment (10 uL): what a power cut may count but not pulse

PLAN = {"drug": "baclofen", "conc_ng_ml": 2_000_000,
        "basal": {"kind": "continuous", "ng_day": 300_000},
        "periodic": {"times_min": [150, 840], "ng": 50_000, "dur_s": 900},
        "caps": {"ng_24h": 500_000}}

JAN10_0200 = 1_799_546_400  # 2027-01-10 02:00 UTC (offset 0 in these tests)
OCT30_1300 = 1_824_901_200  # 2027-10-30 13:00 UTC = 15:00 in Paris (summer time)
OCT31_0100 = 1_824_944_400  # Paris falls back: 03:00 CEST -> 02:00 CET
MAR28_0100 = 1_806_195_600  # Paris springs forward: 02:00 CET -> 03:00 CEST


def _basal(ms):
    return 600 * ms / DAY


def _start(epoch_s, offset_s=0, change=0, next_offset=0, plan=None, root=None):
    root = root or tmpdir()
    b = FakeBoard(root=root + "/")
    app = App(b, keys={})
    args = {"epoch_s": epoch_s, "offset_s": offset_s}
    if change:
        args["next_change_epoch_s"] = change
        args["next_offset_s"] = next_offset
    _call(app, "clock.set", args)
    _call(app, "refill", {"volume_nl": 20_000_000})
    _call(app, "plan.set", {"plan": plan or PLAN})
    return app, b, root


def _call(app, cmd, args=None):
    """A command, then the loop step that follows it on a board (main.py: step after input)."""
    now = app.board.t_ms
    res = app.call(cmd, args or {}, "clinician", "r", now)
    app.step(now)
    return res


def _set_clock(app, epoch_s, offset_s=0):
    _call(app, "clock.set", {"epoch_s": epoch_s, "offset_s": offset_s})


def _slot_events(app):
    return [(e["kind"], e["data"]) for e in evlog.events(app.events) if e["kind"] in
            ("bolus.late", "bolus.skipped")]


def test_autumn_change_slot_in_the_repeated_hour_is_given_once():
    """02:30 happens twice on 2027-10-31 in Paris: the bolus is given at the first one only
    (finding 3: it was given twice, 450 mcg in a day). Also with the clock set again at the
    change, as `pumprig clock sync` or simulate do."""
    for resync in (False, True):
        app, b, root = _start(OCT30_1300, 7200, OCT31_0100, 3600)
        try:
            t_change = (OCT31_0100 - OCT30_1300) * 1000  # board ms (12 h)
            if resync:
                run_until(app, b, t_change)
                _set_clock(app, OCT31_0100, 3600)
            # 02:30 CEST at 11.5 h, 02:30 CET at 12.5 h, 14:00 CET at 24 h
            run_until(app, b, 26 * 3_600_000)
            ideal = _basal(26 * 3_600_000) + 2 * BOLUS
            got = b.pulses_at(b.t_ms)
            assert abs(got - ideal) <= 1, (resync, got, ideal)
            assert _slot_events(app) == [("bolus.skipped", {"slot": "02:30", "reason": "given"})]
        finally:
            rmtree(root)


def test_autumn_change_does_not_shorten_a_bolus_in_progress():
    """A bolus at 02:50 CEST runs through 03:00 CEST = 02:00 CET: it runs whole, once (it was
    cut at the change, then given again at 02:50 CET)."""
    plan = dict(PLAN, periodic={"times_min": [170], "ng": 50_000, "dur_s": 900})
    app, b, root = _start(OCT30_1300, 7200, OCT31_0100, 3600, plan=plan)
    try:
        t_change = (OCT31_0100 - OCT30_1300) * 1000
        run_until(app, b, t_change + 2 * 3_600_000)
        ideal = _basal(b.t_ms) + BOLUS
        got = b.pulses_at(b.t_ms)
        assert abs(got - ideal) <= 1, (got, ideal)
    finally:
        rmtree(root)


def test_clock_set_back_twice_over_a_slot_gives_it_once():
    """Finding 3 on a running pump: clock.set backwards twice over 02:30 re-delivered the
    bolus each time. The first set comes while the bolus runs: it is neither cut nor
    started again."""
    app, b, root = _start(JAN10_0200)
    try:
        run_until(app, b, 40 * MIN)  # 02:40: the 02:30 bolus is two thirds through
        _set_clock(app, JAN10_0200 + 20 * 60)  # back to 02:20
        run_until(app, b, 70 * MIN)  # 02:50 again
        _set_clock(app, JAN10_0200 + 20 * 60)  # back to 02:20 once more
        run_until(app, b, 120 * MIN)
        ideal = _basal(120 * MIN) + BOLUS
        got = b.pulses_at(b.t_ms)
        assert abs(got - ideal) <= 1, (got, ideal)
        rep = ("bolus.skipped", {"slot": "02:30", "reason": "given"})
        assert _slot_events(app) == [rep, rep]
        # the clock is 50 min behind board time now: the next local day's 02:30 comes at
        # board 24 h 80 min, and is given (14:00 of the first day too)
        run_until(app, b, DAY + 100 * MIN)
        ideal = _basal(b.t_ms) + 3 * BOLUS
        assert abs(b.pulses_at(b.t_ms) - ideal) <= 1
    finally:
        rmtree(root)


def test_clock_set_forward_past_a_slot_gives_it_late_within_an_hour():
    """Documented rule (docs/plans.md): a slot the clock jumped over by at most 1 h is given
    late, whole, from the jump, with `bolus.late`; it is not given again that day."""
    app, b, root = _start(JAN10_0200)
    try:
        run_until(app, b, 10 * MIN)
        _set_clock(app, JAN10_0200 + 60 * 60)  # 02:10 -> 03:00: 02:30 jumped over by 30 min
        assert _slot_events(app) == [("bolus.late", {"slot": "02:30", "late_s": 1800})]
        run_until(app, b, 60 * MIN)
        ideal = _basal(60 * MIN) + BOLUS
        got = b.pulses_at(b.t_ms)
        assert abs(got - ideal) <= 1, (got, ideal)
        _set_clock(app, JAN10_0200 + 20 * 60)  # and back over it: given already
        run_until(app, b, 120 * MIN)
        assert abs(b.pulses_at(b.t_ms) - (_basal(120 * MIN) + BOLUS)) <= 1
    finally:
        rmtree(root)


def test_clock_set_forward_past_a_slot_by_more_than_an_hour_skips_it():
    """Jumped over by more than 1 h: not given (`bolus.skipped`, reason "clock"); the next
    slots are given as usual."""
    app, b, root = _start(JAN10_0200)
    try:
        run_until(app, b, 10 * MIN)
        _set_clock(app, JAN10_0200 + 120 * 60)  # 02:10 -> 04:00: 90 min past 02:30
        assert _slot_events(app) == [("bolus.skipped", {"slot": "02:30", "late_s": 5400,
                                                         "reason": "clock"})]
        run_until(app, b, 60 * MIN)
        got = b.pulses_at(b.t_ms)
        assert abs(got - _basal(60 * MIN)) <= 1, got
        # 14:00 (board 10 h 10 min) and the next day's 02:30 (board 22 h 40 min) are given
        run_until(app, b, 26 * 3_600_000)
        assert abs(b.pulses_at(b.t_ms) - (_basal(b.t_ms) + 2 * BOLUS)) <= 1
    finally:
        rmtree(root)


def test_spring_change_slot_in_the_skipped_hour_is_given_late():
    """02:30 does not exist on 2027-03-28 in Paris: the bolus is given at 03:00 CEST, 30 min
    late on the clock (`bolus.late`), once."""
    # programmed at 2027-03-27 14:00:01 CET, just after the 14:00 slot
    app, b, root = _start(MAR28_0100 - 12 * 3600 + 1, 3600, MAR28_0100, 7200)
    try:
        run_until(app, b, 14 * 3_600_000)
        ideal = _basal(b.t_ms) + BOLUS  # 02:30 only: 14:00 came just before programming
        got = b.pulses_at(b.t_ms)
        assert abs(got - ideal) <= 1, (got, ideal)
        assert _slot_events(app) == [("bolus.late", {"slot": "02:30", "late_s": 1800})]
    finally:
        rmtree(root)


def _restart(root, rtc=None):
    """A power cut: a new board (time from 0) and app on the same files."""
    b2 = FakeBoard(root=root + "/")
    b2.rtc = rtc
    return App(b2, keys={}), b2


def test_reset_between_clock_sets_still_gives_the_slot_once():
    """A power cut while the 02:30 bolus runs, the app recreated from its records, then the
    clock set back over 02:30: the bolus is finished and not given again. The slot's day is in
    the schedule's persisted state. (A cut loses at most the segment in flight: the pulses may
    fall short of the ideal by that much, never exceed it.)"""
    app, b, root = _start(JAN10_0200)
    try:
        run_until(app, b, 35 * MIN)  # 02:35: 5 of the 15 min given
        days = getattr(app.sched, "slot_day", None)
        p1 = b.pulses_at(b.t_ms)
        app2, b2 = _restart(root)
        restored = getattr(app2.sched, "slot_day", None)
        run_until(app2, b2, 5 * MIN)
        _set_clock(app2, JAN10_0200 + 20 * 60)
        run_until(app2, b2, 60 * MIN)
        got = p1 + b2.pulses_at(b2.t_ms)
        ideal = _basal(95 * MIN) + BOLUS
        assert ideal - SEGMENT - 1 <= got <= ideal + 1, (got, ideal)
        assert _slot_events(app2) == [("bolus.skipped", {"slot": "02:30", "reason": "given"})]
        assert restored == days and days is not None
    finally:
        rmtree(root)


def test_power_off_over_a_slot_with_an_rtc_gives_it_late_once():
    """With a battery-backed RTC the clock runs on while the power is off: a slot passed in
    the outage counts as jumped over (given late, whole, within 1 h); setting the clock back
    over it afterwards gives nothing more."""
    app, b, root = _start(JAN10_0200)
    try:
        run_until(app, b, 20 * MIN)
        p1 = b.pulses_at(b.t_ms)
        app2, b2 = _restart(root, rtc=JAN10_0200 + 40 * 60)  # back on at 02:40
        run_until(app2, b2, 1)
        assert _slot_events(app2) == [("bolus.late", {"slot": "02:30", "late_s": 600})]
        run_until(app2, b2, 20 * MIN)
        _set_clock(app2, JAN10_0200 + 25 * 60)  # 02:25
        run_until(app2, b2, 60 * MIN)
        got = p1 + b2.pulses_at(b2.t_ms)
        ideal = _basal(80 * MIN) + BOLUS
        assert ideal - SEGMENT - 1 <= got <= ideal + 1, (got, ideal)
        # a third boot, right away: the late bolus is not given a second time either
        app3, b3 = _restart(root)
        run_until(app3, b3, 60 * MIN)
        got += b3.pulses_at(b3.t_ms)
        assert got <= _basal(140 * MIN) + BOLUS + 1, got
    finally:
        rmtree(root)
