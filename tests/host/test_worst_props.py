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
from test_worst import DAY, HOUR, _brute  # noqa: E402

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
@given(plans(), st.sampled_from([HOUR, DAY]))
def test_worst_equals_the_brute_force(pp, w):
    plan, path = pp
    assert wm.worst(plan, w, path)[0] == _brute(plan, w, path)


@settings(max_examples=60, deadline=None)
@given(plans(), st.integers(-2, 2), st.integers(-2, 2))
def test_a_plan_is_refused_exactly_above_a_cap(pp, d1, d24):
    plan, path = pp
    conc = plan["conc_ng_ml"]
    w1 = wm.worst(plan, HOUR, path)
    w24 = wm.worst(plan, DAY, path)
    # caps a few ng around the exact figures (to_ng rounds up: the exact worst is in
    # (ng - 1, ng]), so both sides of each boundary are drawn
    cap1 = max(0, wm.to_ng(w1[0], conc) + d1)
    cap24 = max(0, wm.to_ng(w24[0], conc) + d24)
    raw = dict(plan, caps={"ng_1h": cap1, "ng_24h": cap24})
    over1 = w1[0] * conc > cap1 * 1_000_000 * DAY
    over24 = w24[0] * conc > cap24 * 1_000_000 * DAY
    try:
        out = pm.validate(raw, {"pump_path_nl": path})
    except pm.PlanError as e:
        assert over1 or over24
        assert e.cap == ("caps.ng_1h" if over1 else "caps.ng_24h")
        assert e.worst_ng == wm.to_ng((w1 if over1 else w24)[0], conc)
        assert e.field in wm.SOURCES and e.parts[e.field] == max(e.parts.values())
        assert sum(e.parts.values()) >= e.worst_ng - 4  # each part rounded up, at most 4 ng
    else:
        assert not over1 and not over24
        assert out["caps"] == {"ng_1h": cap1, "ng_24h": cap24}
