"""Motor stall: STALL after 3 stalled segments in a row, or once DIAG still reads stalled
STALL_CONFIRM_MS after it was first read so; the motor stops. Runs under CPython and
MicroPython, on the fake board (its `stall` is the DIAG line).

At P1's rate (0.2 mL/day) a 10 µL segment lasts 72 min, longer than a stall the clinician must
hear about: the segment rule alone took 3.6 h.
"""

from _util import rmtree, tmpdir
from fakeboard import FakeBoard, run_until
from pumpcore import evlog
from pumpcore.app import STALL_CONFIRM_MS, STALL_RETRIES, App

MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR
SEG_P1 = 72 * MIN  # 10 µL at 0.2 mL/day
P1 = {"drug": "baclofen", "conc_ng_ml": 2_000_000,
      "basal": {"kind": "continuous", "ng_day": 400_000}}
FAST = {"drug": "hil-dye", "custom_drug": True, "conc_ng_ml": 1_000_000,  # 1 step/s:
        "basal": {"kind": "continuous", "ng_day": 21_600_000},  # 40-s segments
        "caps": {"ng_24h": 10 ** 10, "ng_1h": 10 ** 10}}


def _app(plan):
    root = tmpdir()
    b = FakeBoard(root=root + "/")
    app = App(b, keys={})
    for cmd, args in (("clock.set", {"epoch_s": 1_767_225_600, "offset_s": 0}),
                      ("refill", {"volume_nl": 20_000_000}), ("plan.set", {"plan": plan})):
        app.call(cmd, args, "clinician", cmd, b.t_ms)
    return app, b, root


def _raised(app, kind="STALL"):
    return [e["ms"] for e in evlog.events(app.events)
            if e["kind"] == "alarm.raised" and e["data"]["kind"] == kind]


def _stalls(app):
    return [e for e in evlog.events(app.events) if e["kind"] == "stall"]


def _run_in_steps(app, b, t_end, step_ms=MIN):
    """run_until in short hops: the first time STALL is active (None: never), board ms."""
    t = b.t_ms
    while t < t_end:
        t = t + step_ms if t + step_ms < t_end else t_end
        run_until(app, b, t)
        if app.alarms.condition_active("STALL"):
            return t
    return None


def test_rule_constants():
    assert STALL_RETRIES == 3
    assert STALL_CONFIRM_MS == 15 * MIN


def test_a_2h_stall_at_p1_rate_raises_stall_and_stops_the_motor():
    """The README's `--fault stall@30d:2h` case on the fake board, at every phase of the
    segment: the stall starts 0, 20, 40 and 70 min into a 72-min segment."""
    for phase in (0, 20 * MIN, 40 * MIN, 70 * MIN):
        app, b, root = _app(P1)
        try:
            t0 = 2 * DAY + phase
            run_until(app, b, t0)
            b.stall = True
            at = _run_in_steps(app, b, t0 + 2 * HOUR)
            assert at is not None, "no STALL within the 2 h stall (phase %d min)" % (phase // MIN)
            # seen at the first segment end or battery sample (hourly), confirmed 15 min later
            assert at - t0 <= HOUR + STALL_CONFIRM_MS + MIN, (phase, at - t0)
            assert at - t0 >= STALL_CONFIRM_MS, (phase, at - t0)
            assert len(_raised(app)) == 1
            assert app.seg is None and not b.motor_busy(), "the motor stops with the alarm"
            held = b.pulses_at(b.t_ms)
            st = app.call("status", {}, "clinician", "s", b.t_ms)
            assert st["rate_nl_day"] == 0 and "STALL" in st["alarms"]
            b.stall = False  # the motor could turn again: it stays stopped until ack
            run_until(app, b, b.t_ms + 6 * HOUR)
            assert b.pulses_at(b.t_ms) == held, "no pulse while STALL is active"
            assert app.alarms.condition_active("STALL")
        finally:
            rmtree(root)


def test_at_a_slow_rate_the_hourly_read_bounds_the_alarm():
    """0.02 mL/day: a 10 µL segment lasts 12 h. The hourly battery wake reads DIAG."""
    slow = {"drug": "baclofen", "conc_ng_ml": 2_000_000,
            "basal": {"kind": "continuous", "ng_day": 40_000}}
    app, b, root = _app(slow)
    try:
        run_until(app, b, DAY + 5 * HOUR)
        assert app.seg is not None and app.seg[4] - b.t_ms > 2 * HOUR, "a long segment runs"
        t0 = b.t_ms
        b.stall = True
        at = _run_in_steps(app, b, t0 + 3 * HOUR)
        assert at is not None and STALL_CONFIRM_MS <= at - t0 <= HOUR + STALL_CONFIRM_MS + MIN
        assert not _stalls(app), "no segment ended: the time rule alone raised it"
    finally:
        rmtree(root)


def test_a_stall_shorter_than_the_confirm_time_raises_nothing():
    """DIAG stalled at one segment end, clear 10 min later: one stall event, no alarm, and
    the next stall is timed afresh."""
    app, b, root = _app(P1)
    try:
        run_until(app, b, DAY)
        end = app.seg[4]
        run_until(app, b, end - MIN)
        b.stall = True
        run_until(app, b, end + 10 * MIN)
        assert app.stall_ms == end and len(_stalls(app)) == 1
        b.stall = False
        run_until(app, b, end + 4 * HOUR)
        assert app.stall_ms is None and app.stall_count == 0
        assert not _raised(app)
        moved = b.pulses_at(b.t_ms)
        run_until(app, b, b.t_ms + 3 * HOUR)
        assert b.pulses_at(b.t_ms) > moved, "delivery goes on"
    finally:
        rmtree(root)


def test_three_stalled_segments_raise_stall_before_the_confirm_time():
    """At 1 step/s a segment lasts 40 s: the third stalled segment raises STALL, 2 min in."""
    app, b, root = _app(FAST)
    try:
        run_until(app, b, 10 * MIN)
        t0 = b.t_ms
        b.stall = True
        at = _run_in_steps(app, b, t0 + STALL_CONFIRM_MS, step_ms=1000)
        assert at is not None and at - t0 <= 3 * 40_000 + 1000, at
        assert [e["data"]["episode"] for e in _stalls(app)] == [1, 2, 3]
    finally:
        rmtree(root)


def test_ack_retries_and_a_persisting_stall_raises_it_again():
    app, b, root = _app(P1)
    try:
        run_until(app, b, DAY)
        b.stall = True
        assert _run_in_steps(app, b, DAY + 3 * HOUR) is not None
        got = app.call("ack", {}, "clinician", "a1", b.t_ms)
        assert "STALL" in got["acked"]
        assert app.stall_ms is None and not app.alarms.condition_active("STALL")
        run_until(app, b, b.t_ms + 1)
        t1 = b.t_ms
        assert app.seg is not None, "the motor runs again after the ack"
        again = _run_in_steps(app, b, t1 + 3 * HOUR)
        assert again is not None and again - t1 <= HOUR + STALL_CONFIRM_MS + MIN
        assert len(_raised(app)) == 2
    finally:
        rmtree(root)
