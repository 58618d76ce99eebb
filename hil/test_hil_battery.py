"""Battery: ERI then EOS as the cell voltage (forced by the instrument) falls, and the
brown-out fallback to the plan's minimum rate.

The firmware samples the battery every `sample_ms` and needs `debounce` qualifying samples in
a row for a state change (board json `battery`: 1 h and 8), after an exponential average that
takes about 6 samples to cross a threshold: each transition takes many hours of pump time, so
these tests need a virtual rig's time warp. Waits are scaled from the board json."""

import pytest
from pumprig_hil.plans import example, start
from pumprig_hil.plugin import for_target

H = 3600
pytestmark = [
    pytest.mark.needs_steps, pytest.mark.needs_battery_dac, pytest.mark.fresh_rig,
    pytest.mark.needs_time_warp("the battery is sampled hourly and debounced over 8 samples "
                                "(about 14 h per transition)"),
]

# Steps over a stretch of constant rate vs its ideal (the ±1-step delivery bound).
TOLERANCE = {"sim": 1.0, "bench": 2.0}


def _active(rig):
    return {a["kind"] for a in rig.client.alarms() if a["active"]}


def _sample_s(rig):
    b = rig.board_config()["battery"]
    return b["sample_ms"] / 1000, b["debounce"]


def test_eri_then_eos(rig):
    tol = for_target(rig, TOLERANCE)
    every_s, debounce = _sample_s(rig)
    transition_s = (debounce + 8) * every_s                 # smoothing + debounce, with margin
    ideal, s0 = start(rig, example("p1")[0])                 # 800 steps a day
    rig.run_for(H, samples=2)
    assert rig.client.status()["battery_state"] == "ok"
    rig.inst.set_battery_mv(3200)                            # below ERI (3300), above EOS
    rig.run_for(transition_s, samples=8)
    st = rig.client.status()
    assert st["battery_state"] == "eri" and "ERI" in _active(rig)
    assert "EOS" not in _active(rig)
    assert (rig.steps() - s0).fwd == pytest.approx(ideal.steps(rig.now_ms()), abs=tol), \
        "ERI is a warning: delivery goes on at the plan's rate"
    rig.inst.set_battery_mv(2950)                            # below EOS (3000), above brown-out
    rig.run_for(transition_s, samples=8)
    st = rig.client.status()
    assert st["battery_state"] == "eos" and "EOS" in _active(rig)
    assert "BATTERY_FAULT" not in _active(rig)
    held = rig.steps()
    rig.run_for(6 * H, samples=6)
    assert rig.steps() == held, "no pulse after end of service"
    assert rig.client.status()["rate_nl_day"] == 0


# Under half the firmware's sampling interval while a reading settles (pumpcore.app
# BATTERY_SETTLE_MS, 5 min): a wake-up half an interval early takes the next sample.
POLL_S = 60


def _brownout_dip(rig, mv, every_s, then_mv=None):
    """The cell at `mv` for exactly one battery sample: held there until the firmware has
    latched the brown-out, polled every POLL_S of pump time, then at `then_mv` (None: the
    virtual cell's own voltage).

    Holding it for a whole sample period is not one sample: after the first low one the
    average is settling and the firmware samples every 5 min, so about 12 samples fall in
    1.1 periods, ERI and EOS follow and EOS stops the motor (rate 0). Whether EOS came before
    the next status read depended on the cell's voltage before the dip (the virtual cell
    drains with pump time and steps): a farm's long-running rigs were below it (3646 mV and
    less), fresh local rigs just above (3650 mV) (issue 15)."""
    rig.inst.set_battery_mv(mv)
    try:
        for _ in range(int(every_s * 1.1 // POLL_S) + 1):
            rig.inst.advance_s(POLL_S)
            if rig.client.status()["fallback"]:
                return
        raise AssertionError("no brown-out latched within 1.1 sample periods at %d mV" % mv)
    finally:
        rig.inst.set_battery_mv(then_mv)


# the cell before the dip: the rig's own, and a drained one (above ERI and its hysteresis)
@pytest.mark.parametrize("cell_mv", [None, 3400], ids=["cell-as-found", "cell-3400mV"])
def test_brownout_falls_back_to_the_minimum_rate(rig, cell_mv):
    tol = for_target(rig, TOLERANCE)
    every_s, _ = _sample_s(rig)
    plan = dict(example("p1")[0], min_nl_day=50_000)         # a quarter of the 200 µL/day
    rig.inst.set_battery_mv(cell_mv)
    start(rig, plan)
    rig.run_for(H, samples=2)
    _brownout_dip(rig, 2700, every_s, then_mv=cell_mv)       # one sample under 2800 mV
    st = rig.client.status()
    assert "BATTERY_FAULT" in _active(rig) and st["fallback"] is True
    assert st["battery_state"] == "ok" and not _active(rig) & {"ERI", "EOS"}, \
        "one sample under the brown-out level moves no ERI/EOS debounce"
    assert st["rate_nl_day"] == 50_000
    step_nl = st["step_pl"] / 1000
    # the rate, measured after the segment the fault aborted (the firmware loses that
    # segment's pulses from its account at any abort: see test_hil_delivery's xfail)
    rig.run_for(12 * H, samples=6)
    s1 = rig.sample("fallback")
    rig.run_for(12 * H, samples=6)
    assert (rig.steps() - s1).fwd == pytest.approx(50_000 / 2 / step_nl, abs=tol + 1)
    assert rig.client.status()["fallback"] is True, "the fallback latches until acknowledged"
    rig.client.ack("BATTERY_FAULT")                           # the cell is fine again
    st = rig.client.status()
    assert st["fallback"] is False and st["rate_nl_day"] == 200_000
    rig.run_for(6 * H, samples=3)        # the fallback segment in flight ends, catch-up done
    s2 = rig.sample("ack")
    rig.run_for(12 * H, samples=6)
    assert (rig.steps() - s2).fwd == pytest.approx(200_000 / 2 / step_nl, abs=tol + 1)
