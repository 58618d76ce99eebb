"""The plan check's worst windows, by property-based tests (hypothesis; CPython only).

Plans drawn on a 15-minute grid (every rate change on it, no rounding of a bolus window), as in
tests/board/test_worst.py, whose brute force (the firmware's Schedule integrated over the grid
from every programming time) they are compared with; and the refusal decision of
pumpcore.plan.validate: a plan is refused exactly when its worst hour or 24 h is above a cap,
naming the cap and the figures. Issue 11, findings 1 and 2.
"""

import os
import sys

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "board"))
from pumpcore import plan as pm  # noqa: E402
from pumpcore import worst as wm  # noqa: E402
from test_worst import DAY, HOUR, _brute, _brute_hour  # noqa: E402

CELL_MIN = 15


@st.composite
def plans(draw):
    conc = draw(st.sampled_from([1_000_000, 2_000_000, 10_000_000]))
    kind = draw(st.sampled_from(["continuous", "flex", "step", "stopped"]))
    plan = {"drug": "tracer", "custom_drug": True, "conc_ng_ml": conc,
            "caps": {"ng_24h": 10**11, "ng_1h": 10**11}}
    rate = st.integers(0, 3000).map(lambda k: 1000 * k)
    if kind == "continuous":
        plan["basal"] = {"kind": kind, "ng_day": draw(rate)}
    elif kind == "flex":
        starts = sorted(draw(st.sets(st.integers(1, 95), max_size=4)))
        plan["basal"] = {"kind": kind, "segments": [[CELL_MIN * m, draw(rate)]
                                                    for m in [0] + starts]}
    elif kind == "step":
        plan["basal"] = {"kind": kind, "ng_day": draw(rate) + 1000,
                         "pct": draw(st.integers(1, 60)), "every_days": 1,
                         "steps": draw(st.integers(1, 2))}
    else:
        plan["basal"] = {"kind": kind}
        plan["min_nl_day"] = draw(st.integers(0, 100)) * 1000
    if draw(st.booleans()):
        half = draw(st.booleans())
        step = 2 if half else 1
        slots = sorted(draw(st.sets(st.integers(0, 96 // step - 1), min_size=1, max_size=3)))
        plan["periodic"] = {"times_min": [CELL_MIN * step * s for s in slots],
                            "ng": draw(st.integers(1, 200)) * 1000,
                            "dur_s": 900 * step}
    start = draw(st.sampled_from([None, "bolus", "prime"]))
    if start == "bolus":
        plan["start"] = {"kind": "bolus", "ng": draw(st.integers(1, 3000)) * 1000,
                         "dur_s": 900 * draw(st.sampled_from([1, 2, 3, 4, 6, 8, 12]))}
    elif start == "prime":
        plan["start"] = {"kind": "prime", "pump_nl": 15_000 * draw(st.integers(0, 3)),
                         "catheter_nl": 15_000 * draw(st.integers(1, 3)), "nl_min": 1000}
        plan["catheter_nl"] = 15_000 * draw(st.integers(0, 2))
    if draw(st.booleans()):
        plan["patient"] = {"ng": draw(st.integers(1, 200)) * 1000, "dur_s": 900,
                           "lockout_s": 900 * draw(st.integers(1, 16)),
                           "max_24h": draw(st.integers(1, 8))}
    return pm.validate(plan), 15_000 * draw(st.integers(0, 3))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plans(), st.sampled_from([HOUR, DAY, wm.LIM_DAY_MS]))
def test_worst_equals_the_brute_force(pp, w):
    plan, path = pp
    exact = wm.worst(plan, w, path)[0]
    if w > DAY and plan["basal"]["kind"] == "step" and plan["start"] is not None:
        assert exact >= _brute(plan, w, path)  # the documented upper bound
    else:
        assert exact == _brute(plan, w, path)


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plans())
def test_worst_62_min_equals_the_brute_force(pp):
    """The limiter's hour (62 min, off the 15-minute grid) on 1-minute cells."""
    plan, path = pp
    assert wm.worst(plan, wm.LIM_HOUR_MS, path)[0] == _brute_hour(plan, path)


@settings(max_examples=60, deadline=None)
@given(plans(), st.integers(-2, 2), st.integers(-2, 2))
def test_a_plan_is_refused_exactly_above_a_cap(pp, d1, d24):
    """Refused exactly when the worst 62 min or 24 h 30 min, as the dose limiter counts them
    (whole steps, one ahead, ng rounded up per step), is above a cap."""
    plan, path = pp
    conc = plan["conc_ng_ml"]
    step = wm.DEFAULT_STEP_PL  # no step_pl given: the sim board's
    w1 = wm.worst(plan, wm.LIM_HOUR_MS, path)
    w24 = wm.worst(plan, wm.LIM_DAY_MS, path)
    n1 = wm.limiter_ng(w1[0], conc, step)
    n24 = wm.limiter_ng(w24[0], conc, step)
    # the counted figure never understates the exact one
    assert n1 >= wm.to_ng(w1[0], conc) and n24 >= wm.to_ng(w24[0], conc)
    cap1 = max(0, n1 + d1)
    cap24 = max(0, n24 + d24)
    raw = dict(plan, caps={"ng_1h": cap1, "ng_24h": cap24})
    over1 = n1 > cap1
    over24 = n24 > cap24
    try:
        out = pm.validate(raw, {"pump_path_nl": path})
    except pm.PlanError as e:
        assert over1 or over24
        assert e.cap == ("caps.ng_1h" if over1 else "caps.ng_24h")
        assert e.worst_ng == (n1 if over1 else n24)
        assert e.field in wm.SOURCES and e.parts[e.field] == max(e.parts.values())
        assert sum(e.parts.values()) - 4 <= e.worst_ng  # each exact part rounded up
        assert ("62 min" if over1 else "24 h 30 min") in e.reason
    else:
        assert not over1 and not over24
        assert out["caps"] == {"ng_1h": cap1, "ng_24h": cap24}
