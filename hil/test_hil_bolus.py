"""Patient boluses: the volume of one bolus, and the lockout and daily maximum (P5-like)."""

import pytest
from pumprig.errors import DeviceError
from pumprig_hil.plans import dye_plan, example, start
from pumprig_hil.plugin import for_target

pytestmark = [pytest.mark.needs_steps, pytest.mark.fresh_rig]

H = 3600
# Extra steps over the basal ideal for one bolus: sim: the ±1-step bound of delivery;
# bench: + 1 step for the host's view of when the bolus started.
TOLERANCE = {"sim": 1.0, "bench": 2.0}


def _p5_like(target):
    """sim: examples/p5 (0.1 mg over 10 min, lockout 2 h, 6 a day). bench: the same shape in
    minutes (50 µL over 20 s, lockout 60 s, 2 a day) so that it runs in real time."""
    if target == "sim":
        return example("p5")[0]
    return dye_plan(21_600_000, patient={"ng": 50_000, "dur_s": 20, "lockout_s": 60,
                                         "max_24h": 2})


def _bolus(rig):
    with rig.as_role("patient") as patient:
        return patient.bolus()


def test_patient_bolus_volume(rig):
    tol = for_target(rig, TOLERANCE)
    plan = _p5_like(rig.target)
    ideal, s0 = start(rig, plan)
    p = plan["patient"]
    rig.run_for(p["lockout_s"] + 1, samples=4)        # plan.set starts a lockout
    t_ms = rig.now_ms()
    res = _bolus(rig)
    want_nl = p["ng"] * 1_000_000 // plan["conc_ng_ml"]
    assert res["volume_nl"] == want_nl and res["dur_s"] == p["dur_s"]
    ideal.add_bolus(t_ms, res["volume_nl"], res["dur_s"])
    rig.run_for(p["dur_s"] * 3, samples=12)
    got = (rig.steps() - s0).fwd
    assert got == pytest.approx(ideal.steps(rig.now_ms()), abs=tol)
    step_nl = rig.client.calib_get()["step_pl"] / 1000
    basal_only = ideal.steps(rig.now_ms()) - want_nl / step_nl
    assert got - basal_only == pytest.approx(want_nl / step_nl, abs=tol)


def test_lockout_and_daily_maximum(rig):
    tol = for_target(rig, TOLERANCE)
    plan = _p5_like(rig.target)
    p = plan["patient"]
    lock = p["lockout_s"]
    ideal, s0 = start(rig, plan)

    def press(expect):
        t_ms = rig.now_ms()
        try:
            r = _bolus(rig)
        except DeviceError as e:
            assert e.code == expect, "bolus at %.0f s: %s" % (rig.inst.now_s(), e)
            rig.sample("refused")
            return
        assert expect == "ok", "bolus at %.0f s was given, %s expected" % (rig.inst.now_s(),
                                                                          expect)
        ideal.add_bolus(t_ms, r["volume_nl"], r["dur_s"])
        rig.sample("bolus")

    press("LOCKOUT")                          # plan.set starts the lockout
    given_at = []
    rig.inst.advance_s(lock + 1)
    for _i in range(p["max_24h"]):
        press("ok")
        given_at.append(rig.inst.now_s())
        rig.inst.advance_s(lock / 2)
        press("LOCKOUT")
        rig.inst.advance_s(lock / 2 + 1)
    press("MAX_24H")
    st = rig.client.status()
    assert st["boluses_24h"] == p["max_24h"]
    refused = rig.events_of("bolus.refused")
    assert [e["data"]["reason"] for e in refused] == (
        ["lockout"] * (p["max_24h"] + 1) + ["max per 24 h"])
    assert len(rig.events_of("bolus.started")) == p["max_24h"]
    if rig.target == "sim":                   # the first bolus leaves the 24 h window
        rig.inst.advance_s(given_at[0] + 24 * H - rig.inst.now_s() + 1)
        press("ok")
    rig.run_for(2 * p["dur_s"], samples=4)
    got = (rig.steps() - s0).fwd
    assert got == pytest.approx(ideal.steps(rig.now_ms()), abs=tol), \
        "refused boluses must not deliver anything, given ones exactly their volume"
