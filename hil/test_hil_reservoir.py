"""Reservoir alarms: LOW and EMPTY at the right volumes (measured by counted steps), the LOW
date the pump predicts, and the refill-by date."""

import pytest
from pumprig_hil.plans import dye_plan, example, start
from pumprig_hil.plugin import for_target
from pumprig_hil.rig import EPOCH0

pytestmark = pytest.mark.needs_steps

# A level alarm sounds at the step that crosses its threshold: the measured volume left when
# it is first seen is at most the threshold and more than the threshold minus one step
# (+1 step on a bench: one may pulse between the status read and the count).
LEVEL_TOLERANCE_STEPS = {"sim": 0, "bench": 1}
# Dates: LOW within one step period (108 s at P1) of the date predicted at programming;
# refill-by to the second on a virtual rig, 2 s on a bench (host clock vs pump clock).
DATE_TOLERANCE_S = {"sim": {"low": 108, "refill_by": 1}, "bench": {"low": None, "refill_by": 2}}


def _alarm(rig, kind):
    for a in rig.client.alarms():
        if a["kind"] == kind:
            return a
    return None


def _active(rig):
    """Kinds whose condition is present now (latched, cleared ones are listed until ack)."""
    return {a["kind"] for a in rig.client.alarms() if a["active"]}


@pytest.mark.fresh_rig  # a stop just before would delay delivery by up to a segment (40 s)
@pytest.mark.parametrize("woken_first", [False, True], ids=["refill-wakes", "other-byte-wakes"])
def test_low_and_empty_at_their_volumes(rig, woken_first):
    extra = for_target(rig, LEVEL_TOLERANCE_STEPS)
    step_nl = rig.client.calib_get()["step_pl"] // 1000
    low_nl, empty_nl, fill_nl = 20 * step_nl, 10 * step_nl, 40 * step_nl
    plan = dye_plan(21_600_000, reservoir={"low_nl": low_nl, "empty_nl": empty_nl,
                                           "on_empty": "stop"})          # 1 step/s
    _, s0 = start(rig, plan, fill_nl=fill_nl)
    seen = {}
    for _ in range(200):
        rig.inst.advance_s(0.5)
        active = _active(rig)
        left = fill_nl - (rig.steps() - s0).fwd * step_nl
        for kind in ("LOW", "EMPTY"):
            if kind in active and kind not in seen:
                seen[kind] = left
                rig.sample(kind)
        if "EMPTY" in seen:
            break
    assert set(seen) == {"LOW", "EMPTY"}, "alarms seen: %s" % seen
    for kind, thr in (("LOW", low_nl), ("EMPTY", empty_nl)):
        assert thr - (1 + extra) * step_nl < seen[kind] <= thr + extra * step_nl, \
            "%s first seen with %d nL left (threshold %d nL)" % (kind, seen[kind], thr)
    assert _alarm(rig, "EMPTY")["critical"] is True
    assert _alarm(rig, "LOW")["critical"] is False
    # on_empty = stop: nothing more leaves the pump
    before = rig.steps()
    rig.run_for(30, samples=3)
    assert rig.steps() == before
    # a refill clears both and delivery resumes at the plan's rate, whatever wakes the
    # firmware first: nothing that came due during the stop is made up (through a labgrid
    # place an other byte came first now and then: the delivery then waited a segment's time,
    # and without it the firmware pulsed what the plan had asked since its last wake-up)
    if woken_first:
        rig.raw(b"\n", wait_s=0.1)
    rig.client.refill(fill_nl)
    active = _active(rig)
    assert "LOW" not in active and "EMPTY" not in active
    rig.run_for(5, samples=5)
    assert 4 <= (rig.steps() - before).fwd <= 6       # 1 step/s for 5 s


@pytest.mark.fresh_rig  # see test_hil_delivery: a stop before this would shift the date
@pytest.mark.needs_time_warp("P1 takes 2 days to reach LOW from a 2.4 mL fill")
def test_low_date_is_the_predicted_one(rig):
    tol = for_target(rig, DATE_TOLERANCE_S)["low"]
    if tol is None:
        pytest.skip("no LOW-date tolerance for this target")
    plan = example("p1")[0]                             # 0.2 mL/day, LOW at 2.0 mL
    start(rig, plan, fill_nl=2_400_000)
    predicted = rig.client.status()["low_epoch_s"]
    assert predicted == pytest.approx(EPOCH0 + 2 * 86_400, abs=tol)
    rig.run_for(2 * 86_400 - 600, samples=8)
    assert _alarm(rig, "LOW") is None
    rig.run_for(1200, samples=4)
    low = _alarm(rig, "LOW")
    assert low is not None and low["since_epoch_s"] == pytest.approx(predicted, abs=tol)


REFILL_BY_AFTER_S = {"sim": 3 * 86_400 + 1234, "bench": 30}


def test_refill_by_date(rig):
    tol = for_target(rig, DATE_TOLERANCE_S)["refill_by"]
    after = for_target(rig, REFILL_BY_AFTER_S)
    start(rig, dye_plan(86_400))                        # 1 µL/day: far from LOW
    due = rig.epoch_now() + after
    rig.client.refill(10_000_000, refill_by_epoch_s=due)
    rig.inst.advance_s(after - 5)
    assert _alarm(rig, "REFILL_BY") is None, "REFILL_BY before its date"
    rig.inst.advance_s(5 + tol + 1)
    a = _alarm(rig, "REFILL_BY")
    assert a is not None and a["active"] and not a["critical"]
    assert a["since_epoch_s"] == pytest.approx(due, abs=tol)
    assert rig.client.status()["therapy"] == "running"  # a date alarm never stops therapy
    rig.client.refill(10_000_000, refill_by_epoch_s=rig.epoch_now() + after)
    assert "REFILL_BY" not in _active(rig)
