"""Delivery accounting: steps never drift more than one from the plan's ideal, in integers.

Runs under CPython (pytest) and MicroPython (tests/mpy_runner.py). The check is exact: at each
pulse instant the ideal volume (the schedule integrated independently here, piece by piece)
is compared with the pulse count in units of nL/day x µs.
"""

from pumpcore import plan as planmod
from pumpcore.delivery import Delivery
from pumpcore.schedule import DAY_MS, Clock, Schedule

STEP_PL = 250_000  # 0.25 µL per step


def _plan(basal, **kw):
    p = {"drug": "baclofen", "conc_ng_ml": 2_000_000, "basal": basal}
    p.update(kw)
    return planmod.validate(p, {"max_nl_day": 4_320_000_000})


def _ideal_acc(sched, t_us):
    """nL/day x µs delivered ideally from 0 to t_us, integrating piece by piece."""
    acc = 0
    t = 0
    t_ms_end = t_us // 1000
    while t < t_ms_end:
        nxt = sched.next_change_ms(t)
        end = t_ms_end if nxt is None or nxt > t_ms_end else nxt
        acc += sched.rate_nl_day(t) * (end - t) * 1000
        t = end
    acc += sched.rate_nl_day(t_ms_end) * (t_us - t_ms_end * 1000)
    return acc


def _run(sched, days, max_steps=40, check_every=1):
    """Drive the engine like the firmware does; return (steps, worst lag, worst lead) in steps*1e6."""
    eng = Delivery(STEP_PL, 0, 0)
    q = eng.q
    now = 0
    end = days * DAY_MS
    steps = 0
    worst_lag = 0
    worst_lead = 0
    n_seg = 0
    while now < end:
        eng.advance(now, sched)
        seg, wake = eng.plan_segment(now, sched, max_steps, 5000)
        if seg is None:
            now = wake if wake is not None and wake < end else end
            continue
        count, first_us, interval_us = seg
        eng.commit(count)
        start_us = now * 1000
        for k in range(count):
            t_us = start_us + first_us + k * interval_us
            if t_us > end * 1000:
                break
            if n_seg % check_every == 0:
                acc = _ideal_acc(sched, t_us)
                lag = acc - steps * q  # just before the pulse
                lead = (steps + 1) * q - acc  # just after it
                if lag > worst_lag:
                    worst_lag = lag
                if lead > worst_lead:
                    worst_lead = lead
            steps += 1
        n_seg += 1
        last_us = start_us + first_us + (count - 1) * interval_us
        now = (last_us + 999) // 1000
    return steps, worst_lag * 1_000_000 // q, worst_lead * 1_000_000 // q


def test_continuous_90_days_within_one_step():
    # P1: baclofen 400 mcg/day at 2000 mcg/mL = 200,000 nL/day = 800 steps/day of 0.25 µL.
    p = _plan({"kind": "continuous", "ng_day": 400_000})
    sched = Schedule(p, Clock(valid=True), 0)
    steps, lag, lead = _run(sched, 90, check_every=7)
    assert steps == 72_000, steps  # 18 mL: 20 mL fill reaches 2.0 mL LOW at day 90
    assert lag <= 1_000_000, lag  # never a whole step behind
    assert lead <= 1_000, lead  # ahead by at most a thousandth of a step


def test_flex_13_segments_daily_total():
    segs = [[i * 110, 300_000 + 10_000 * i] for i in range(13)]
    p = _plan({"kind": "flex", "segments": segs})
    sched = Schedule(p, Clock(valid=True), 0)
    total_ng = planmod.flex_total_ng(p["basal"])
    steps, lag, lead = _run(sched, 3)
    ideal_steps = _ideal_acc(sched, 3 * DAY_MS * 1000) // (86_400_000 * STEP_PL)
    assert abs(steps - ideal_steps) <= 1
    # the 24 h volume is the weighted dose converted at 2000 mcg/mL
    day_nl = _ideal_acc(sched, DAY_MS * 1000) // 86_400_000_000
    assert abs(day_nl - planmod.ng_to_nl(total_ng, 2_000_000)) <= 20
    assert lag <= 1_000_000 and lead <= 1_000


def test_periodic_boluses_on_basal():
    p = _plan({"kind": "continuous", "ng_day": 300_000},
              periodic={"times_min": [360, 840, 1320], "ng": 50_000, "dur_s": 900})
    clock = Clock(valid=True)
    sched = Schedule(p, clock, 0)
    assert sched.rate_nl_day(6 * 3_600_000 + 1000) > sched.rate_nl_day(5 * 3_600_000)
    steps, lag, lead = _run(sched, 2)
    # 2 days: 2 x (150 µL basal + 3 x 25 µL boluses) = 450 µL = 1800 steps
    assert abs(steps - 1800) <= 1, steps
    assert lag <= 1_000_000 and lead <= 1_000


def test_step_dosing_titration():
    p = _plan({"kind": "step", "ng_day": 100_000, "pct": 20, "every_days": 1, "steps": 5},
              conc_ng_ml=500_000)
    assert planmod.step_dose_ng_day(p["basal"], 0) == 100_000
    assert planmod.step_dose_ng_day(p["basal"], 1) == 120_000
    assert planmod.step_dose_ng_day(p["basal"], 5) == 248_832
    assert planmod.step_dose_ng_day(p["basal"], 9) == 248_832  # held after the last step
    sched = Schedule(p, Clock(valid=True), 0)
    assert sched.rate_nl_day(DAY_MS + 5) == 240_000  # 120 mcg/day at 500 mcg/mL
    steps, lag, lead = _run(sched, 7)
    assert lag <= 1_000_000 and lead <= 1_000


def test_fast_prime_ramps_and_stays_within_a_step():
    p = _plan({"kind": "continuous", "ng_day": 400_000},
              start={"kind": "prime", "pump_nl": 400_000, "catheter_nl": 100_000,
                     "nl_min": 1_000_000})
    pullin = 50 * 86_400 * STEP_PL // 1000  # 50 steps/s
    sched = Schedule(p, Clock(valid=True), 0, pullin)
    rates = [w[2] for w in sched.start_windows]
    assert rates[0] == pullin and rates[-1] == 1_440_000_000
    assert rates == sorted(rates)  # accelerates, never jumps down
    steps, lag, lead = _run(sched, 1)
    assert lag <= 1_000_000, lag
    assert lead <= 200_000, lead


def test_calibration_change_keeps_owed_volume():
    eng = Delivery(250_000)
    eng.owed = eng.q // 2  # half a step of 0.25 µL = 125 nL owed
    eng.set_step_pl(125_000)
    assert eng.due() == 1  # the same 125 nL is now one whole step of 0.125 µL
