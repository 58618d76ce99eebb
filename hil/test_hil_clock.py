"""Clock and daylight-saving changes during a flex plan: the rate follows local time.

A two-segment flex plan (slow before 12:00 local, fast after) starts W before noon. Half-way,
the local clock jumps one hour forward (a daylight-saving change announced with clock.set's
next_change_epoch_s / next_offset_s, or the clinician setting the clock): the fast segment
must start then, not at W. Without a change the whole window stays slow (the control case)."""

import pytest
from pumprig_hil.plans import dye_plan, start
from pumprig_hil.plugin import for_target
from pumprig_hil.rig import EPOCH0

pytestmark = [pytest.mark.needs_steps, pytest.mark.fresh_rig]

SLOW, FAST = 10_800_000, 43_200_000          # ng/day at 1 mg/mL: 0.5 and 2 steps/s
# Steps per half window vs rate x time: ±1 step of delivery at each end, + the host's view of
# the change instant on a bench.
TOLERANCE = {"sim": 2.0, "bench": 4.0}
WINDOW_S = {"sim": 3600, "bench": 120}


@pytest.mark.parametrize("change", ["dst", "clock_set", "none"])
def test_flex_follows_a_clock_change(rig, change):
    tol = for_target(rig, TOLERANCE)
    w = for_target(rig, WINDOW_S)
    plan = dye_plan(0, basal={"kind": "flex", "segments": [[0, SLOW], [720, FAST]]})
    ep0 = EPOCH0 + 12 * 3600 - w                 # local 12:00 - W, UTC offset 0
    dst = {}
    if change == "dst":
        dst = {"next_change_epoch_s": ep0 + w // 2, "next_offset_s": 3600}
    start(rig, plan, epoch_s=ep0, offset_s=0, **dst)
    s0 = rig.steps()
    rig.run_for(w / 2, samples=6)
    s1 = rig.sample("change")
    if change == "clock_set":
        rig.set_clock(rig.epoch_now(), 3600)
    rig.run_for(w / 2, samples=6)
    s2 = rig.steps()
    step_per_s = {r: r / 1_000_000 * 1_000_000 / 86_400 / 250 for r in (SLOW, FAST)}
    first, second = (s1 - s0).fwd, (s2 - s1).fwd
    assert first == pytest.approx(step_per_s[SLOW] * w / 2, abs=tol)
    rate2 = FAST if change != "none" else SLOW
    assert second == pytest.approx(step_per_s[rate2] * w / 2, abs=tol), (
        "after the %s change: %d steps in the second half" % (change, second))
    if change == "clock_set":
        assert rig.client.clock_get()["offset_s"] == 3600


def test_clock_get_reports_the_offset_in_force(rig):
    ep0 = EPOCH0 + 12 * 3600
    rig.set_clock(ep0, 0, ep0 + 60, 3600)
    rig.inst.advance_s(120)
    got = rig.client.clock_get()
    assert got["offset_s"] == 3600, got
